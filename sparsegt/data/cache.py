"""On-disk cache of generated or featurised datasets: one ``.npz`` of concatenated arrays + offsets.

Never pickle: every array is a plain numeric array (``allow_pickle=False`` on load), metadata is a
JSON string. Layout, for each split ``s`` (``train``, ``val``, ``test``):

- ``s.node_counts`` [G], ``s.edge_counts`` [G];
- ``s.indptr``: the per-graph CSR row offsets concatenated ([sum(N_g + 1)], each starting at 0);
- ``s.indices``: per-graph (local) column indices concatenated, in the smallest integer dtype that fits;
- ``s.node.NAME`` / ``s.edge.NAME`` / ``s.graph.NAME``: the named tensors concatenated along dim 0.

The default cache folder is ``$SPARSEGT_CACHE`` or ``~/.cache/sparsegt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from ..graph import Graph

__all__ = ["cache_dir", "cached_splits", "save_graph_splits", "load_graph_splits", "LazyGraphs"]

FORMAT_VERSION = 1


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """The folder datasets are cached in: ``root``, else ``$SPARSEGT_CACHE``, else ``~/.cache/sparsegt``."""
    if root is None:
        root = os.environ.get("SPARSEGT_CACHE") or Path.home() / ".cache" / "sparsegt"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _smallest_index_dtype(values: np.ndarray) -> np.dtype:
    top = int(values.max()) if values.size else 0
    for dtype in (np.uint8, np.int16, np.int32):
        if top <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def save_graph_splits(path: str | os.PathLike, splits: dict[str, list[Graph]],
                      meta: dict | None = None) -> None:
    """Write ``splits`` (name -> list of square, unbatched graphs) to ``path`` atomically."""
    arrays: dict[str, np.ndarray] = {}
    for split, graphs in splits.items():
        for i, g in enumerate(graphs):
            if g.num_cols != g.num_nodes or g.num_graphs != 1:
                raise ValueError(f"{split}[{i}]: the cache stores square, unbatched graphs only")
        node_counts = np.array([g.num_nodes for g in graphs], dtype=np.int64)
        edge_counts = np.array([g.num_edges for g in graphs], dtype=np.int64)
        arrays[f"{split}.node_counts"] = node_counts
        arrays[f"{split}.edge_counts"] = edge_counts
        arrays[f"{split}.indptr"] = (np.concatenate([g.indptr.numpy() for g in graphs])
                                     if graphs else np.zeros(0, np.int64))
        indices = np.concatenate([g.indices.numpy() for g in graphs]) if graphs else np.zeros(0, np.int64)
        arrays[f"{split}.indices"] = indices.astype(_smallest_index_dtype(indices))
        if graphs:
            for store in ("node", "edge", "graph"):
                for name in getattr(graphs[0], f"{store}_data"):
                    parts = [getattr(g, f"{store}_data")[name].detach().cpu().numpy() for g in graphs]
                    arrays[f"{split}.{store}.{name}"] = np.concatenate(parts)
    meta = {"format_version": FORMAT_VERSION, "splits": list(splits), **(meta or {})}
    arrays["meta"] = np.array(json.dumps(meta))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; a cache is as readable as any other
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class LazyGraphs(Sequence):
    """The graphs of one cached split, each built on first access (then kept), as a read-only sequence.

    Loading 130k molecules eagerly means 130k `Graph` objects before the first step; this holds the
    concatenated tensors and builds ``self[i]`` (views into them) when asked, so a cached dataset opens
    in about the time it takes to read the file. Indexing, slicing (a list), iteration, ``len`` and
    ``+`` (a list) behave like a list's.
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, node_counts: np.ndarray,
                 edge_counts: np.ndarray, node_data: dict[str, torch.Tensor],
                 edge_data: dict[str, torch.Tensor], graph_data: dict[str, torch.Tensor]) -> None:
        self._indptr, self._indices = indptr, indices
        self._node_off = np.concatenate([[0], np.cumsum(node_counts)]).astype(np.int64)
        self._edge_off = np.concatenate([[0], np.cumsum(edge_counts)]).astype(np.int64)
        self._node_data, self._edge_data, self._graph_data = node_data, edge_data, graph_data
        self._built: list[Graph | None] = [None] * len(node_counts)

    def __len__(self) -> int:
        return len(self._built)

    def _build(self, g: int) -> Graph:
        n0, n1 = int(self._node_off[g]), int(self._node_off[g + 1])
        e0, e1 = int(self._edge_off[g]), int(self._edge_off[g + 1])
        # indices stay in their compact on-disk dtype until a graph is built (8x less memory and no
        # upfront int64 conversion of every edge of the dataset)
        return Graph(self._indptr[n0 + g:n1 + g + 1], self._indices[e0:e1].long(),
                     node_data={k: t[n0:n1] for k, t in self._node_data.items()},
                     edge_data={k: t[e0:e1] for k, t in self._edge_data.items()},
                     graph_data={k: t[g:g + 1] for k, t in self._graph_data.items()}, validate=False)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        g = int(index)
        if g < 0:
            g += len(self)
        if not 0 <= g < len(self):
            raise IndexError(f"graph index {index} out of range for {len(self)} graphs")
        graph = self._built[g]
        if graph is None:
            graph = self._built[g] = self._build(g)
        return graph

    def __iter__(self) -> Iterator[Graph]:
        return (self[g] for g in range(len(self)))

    def __add__(self, other: Sequence[Graph]) -> list[Graph]:
        return list(self) + list(other)

    def __radd__(self, other: Sequence[Graph]) -> list[Graph]:
        return list(other) + list(self)

    def node_counts(self) -> np.ndarray:
        """[G] nodes per graph, without building any graph."""
        return np.diff(self._node_off)

    def edge_counts(self) -> np.ndarray:
        """[G] edges per graph, without building any graph."""
        return np.diff(self._edge_off)

    def node_tensor(self, name: str) -> torch.Tensor:
        """The node-level tensor ``name`` of every graph, concatenated ([sum N, ...])."""
        return self._node_data[name]

    def graph_tensor(self, name: str) -> torch.Tensor:
        """The graph-level tensor ``name`` of every graph, concatenated ([G, ...])."""
        return self._graph_data[name]

    def with_graph_data(self, **tensors: torch.Tensor) -> LazyGraphs:
        """A copy whose graph-level tensors ``name`` are replaced (each [G, ...]); nothing is built."""
        for name, t in tensors.items():
            if t.shape[0] != len(self):
                raise ValueError(f"{name} has {t.shape[0]} rows for {len(self)} graphs")
        return LazyGraphs(self._indptr, self._indices, self.node_counts(), self.edge_counts(),
                          self._node_data, self._edge_data, {**self._graph_data, **tensors})

    def __repr__(self) -> str:
        return f"LazyGraphs({len(self)} graphs)"


def load_graph_splits(path: str | os.PathLike) -> tuple[dict[str, LazyGraphs], dict]:
    """Read what `save_graph_splits` wrote; each split is a `LazyGraphs` over shared tensors (fast)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: not a readable sparsegt cache file ({err}); delete it to regenerate"
                         ) from err
    meta = json.loads(str(arrays.pop("meta")))
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: cache format {meta.get('format_version')} != {FORMAT_VERSION}; delete it")
    splits: dict[str, LazyGraphs] = {}
    for split in meta["splits"]:
        stores: dict[str, dict[str, torch.Tensor]] = {"node": {}, "edge": {}, "graph": {}}
        for key, value in arrays.items():
            head, _, rest = key.partition(".")
            store, _, name = rest.partition(".")
            if head == split and store in stores and name:
                stores[store][name] = torch.from_numpy(value)
        splits[split] = LazyGraphs(torch.from_numpy(arrays[f"{split}.indptr"].astype(np.int64, copy=False)),
                                   torch.from_numpy(arrays[f"{split}.indices"]),
                                   arrays[f"{split}.node_counts"], arrays[f"{split}.edge_counts"],
                                   stores["node"], stores["edge"], stores["graph"])
    return splits, meta


def cached_splits(key: str, params: dict, build, root: str | os.PathLike | None = None,
                  progress: bool = False) -> tuple[dict[str, LazyGraphs], Path, dict]:
    """Load ``key``'s splits from the cache, or ``build()`` them and cache them.

    ``build()`` returns the splits, or ``(splits, info)`` with a JSON-able ``info`` dict that is
    stored with them (e.g. how many molecules were skipped). Returns ``(splits, path, info)``.
    The file name carries ``key`` and a hash of ``params`` (everything the content depends on:
    seed, sizes, generator version), so changing a parameter never reads a stale file.
    """
    digest = hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:10]
    path = cache_dir(root) / f"{key}-{digest}.npz"
    if path.exists():
        if progress:
            print(f"{key}: loading cached {path}", flush=True)
        splits, meta = load_graph_splits(path)
        return splits, path, meta.get("info", {})
    built = build()
    splits, info = built if isinstance(built, tuple) else (built, {})
    save_graph_splits(path, splits, {"key": key, "params": params, "info": info})
    if progress:
        print(f"{key}: cached to {path}", flush=True)
    del splits, built  # read back, so a fresh build and a cached load give the same (lazy) splits
    return load_graph_splits(path)[0], path, info
