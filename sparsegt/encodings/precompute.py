"""`add_encodings`: LapPE and RWSE for a whole dataset, batched, threaded and cached on disk.

Small graphs (the usual dataset of molecules or SBM graphs) are grouped by size into chunks of dense
[b, n, n] arrays (~48 MiB each; the dataset's edges are never copied all at once). Per chunk: LAPACK
eigenpairs (`laplacian_pe_dense`: only the k smallest when RWSE is not wanted, the full spectrum when it
is), and RWSE read off that spectrum when the graph is undirected without self-loops
(`rwse_from_eigen`), else by dense powers. Chunks run on worker threads with BLAS held to one thread
each (small matrices gain nothing from threaded BLAS; on a busy machine its threads spin). Graphs above
``dense_max_nodes`` go one by one through the sparse paths (Lanczos, numba).
"""

from __future__ import annotations

import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..graph import Graph
from .adjacency import adjacency, check_square, edge_weights, one_blas_thread
from .cache import cache_path, load_arrays, save_arrays
from .laplacian import NORMALIZATIONS, component_labels_dense, laplacian_pe_dense, laplacian_pe_sparse
from .random_walk import auto_method, rwse_dense, rwse_estimate, rwse_exact, rwse_from_eigen

__all__ = ["add_encodings"]

_FORMAT_VERSION = 1
_CHUNK_BYTES = 48 << 20  # dense work arrays per chunk of same-size graphs


def _check_graphs(graphs: list[Graph]) -> None:
    for i, g in enumerate(graphs):
        check_square(g, f"add_encodings (graph {i})")
        if g.num_graphs != 1:
            raise ValueError(f"add_encodings: graph {i} is a batch of {g.num_graphs} graphs; pass "
                             "batch.unbatch() so each graph gets its own encodings")


def _fingerprint(graphs: list[Graph]) -> np.ndarray:
    """A digest of all sizes and of a few graphs' edges: catches a cache_key reused for other data."""
    h = hashlib.sha256()
    h.update(np.array([(g.num_nodes, g.num_edges) for g in graphs], dtype=np.int64).tobytes())
    for g in {id(g): g for g in (graphs[0], graphs[len(graphs) // 2], graphs[-1])}.values():
        h.update(g.indices.cpu().numpy().tobytes())
        h.update(edge_weights(g).tobytes())
    return np.frombuffer(h.digest(), dtype=np.uint8).copy()


class _FlatGraphs:
    """Node offsets of many graphs, and their adjacency matrices on demand, chunk by chunk (a dataset's
    edges are never copied all at once: PATTERN holds 81M of them)."""

    def __init__(self, graphs: list[Graph]) -> None:
        self.graphs = graphs
        self.sizes = np.array([g.num_nodes for g in graphs], dtype=np.int64)
        self.node_ptr = np.concatenate([[0], np.cumsum(self.sizes)])

    def dense(self, members: np.ndarray, n: int) -> np.ndarray:
        """[b, n, n] float64 adjacency of the member graphs (all of size n)."""
        flat_parts, weight_parts = [], []
        for slot, g in enumerate(members):
            graph = self.graphs[int(g)]
            rows = np.repeat(np.arange(n), np.diff(graph.indptr.cpu().numpy()))  # not row_index(): it caches
            flat_parts.append((slot * n + rows) * n + graph.indices.cpu().numpy())
            weight_parts.append(edge_weights(graph))
        flat = np.concatenate(flat_parts) if flat_parts else np.zeros(0, dtype=np.int64)
        weights = np.concatenate(weight_parts) if weight_parts else np.zeros(0)
        dense = np.bincount(flat, weights=weights, minlength=len(members) * n * n)
        # float64 even without edges (numpy returns int64 counts for an empty input, weights or not)
        return dense.astype(np.float64, copy=False).reshape(len(members), n, n)

    def sparse(self, g: int) -> sp.csr_array:
        return adjacency(self.graphs[g])


def _chunks(sizes: np.ndarray, dense_max_nodes: int, steps: int) -> list[tuple[int, np.ndarray]]:
    out = []
    for n in np.unique(sizes[sizes <= dense_max_nodes]):
        members = np.nonzero(sizes == n)[0]
        per_graph = 8 * max(int(n), 1) ** 2 * (8 + (steps + 1) // 2)
        step = max(1, _CHUNK_BYTES // per_graph)
        out += [(int(n), members[i:i + step]) for i in range(0, len(members), step)]
    return out


def add_encodings(graphs: list[Graph], *, lap_pe: int = 0, rwse: int = 0, cache_key: str | None = None,
                  cache_dir: str | Path | None = None, progress: bool = False, lap_skip_trivial: bool = False,
                  lap_normalization: str = "sym", dense_max_nodes: int = 1024,
                  num_workers: int | None = None) -> list[Graph]:
    """The graphs with LapPE and/or RWSE added as node tensors (via ``Graph.with_data``).

    Adds, for ``lap_pe = k > 0`` (see `sparsegt.encodings.laplacian` for the exact definition):
    ``node_data["lap_vec"]`` [N, k] float32 eigenvectors, ``"lap_val"`` [N, k] float32 eigenvalues
    repeated on every node, ``"lap_mask"`` [N, k] bool (False on zero-padded columns); and for
    ``rwse = K > 0``: ``"rwse"`` [N, K] float32 ``diag(P^t)``, t = 1..K (`sparsegt.encodings.random_walk`).

    Args:
        graphs: square, unbatched graphs (weights from ``edge_data["edge_weight"]``).
        cache_key: names the dataset (include everything that changes its graphs: split, seed, version);
            with it, results are stored in ``cache_dir`` (default ``$SPARSEGT_CACHE`` or
            ``~/.cache/sparsegt``) under the key and the parameters, and a later call loads them.
        progress: print a progress bar over the groups of graphs.
        lap_skip_trivial: drop the eigenvalue-0 eigenpairs (one per component) instead of keeping them.
        lap_normalization: ``"sym"`` (``I - D^-1/2 A D^-1/2``) or ``"none"`` (``D - A``, GraphGPS).
        dense_max_nodes: graphs up to this size use the batched dense path.
        num_workers: threads for the dense groups (default ``torch.get_num_threads()``).
    """
    if lap_pe < 0 or rwse < 0:
        raise ValueError(f"lap_pe = {lap_pe} and rwse = {rwse} must be >= 0 (0 = not wanted)")
    graphs = list(graphs)
    if not graphs or (lap_pe == 0 and rwse == 0):
        return graphs
    _check_graphs(graphs)
    fingerprint = _fingerprint(graphs)
    if lap_normalization not in NORMALIZATIONS:
        raise ValueError(f"lap_normalization must be one of {NORMALIZATIONS}, got {lap_normalization!r}")
    params = {"lap_pe": lap_pe, "rwse": rwse, "lap_skip_trivial": lap_skip_trivial,
              "version": _FORMAT_VERSION}
    if lap_normalization != "sym":  # the key of caches written before the option existed stays valid
        params["lap_normalization"] = lap_normalization
    path = cache_path(cache_dir, cache_key, params) if cache_key is not None else None
    arrays = load_arrays(path) if path is not None else None
    if arrays is not None and not np.array_equal(arrays.get("fingerprint"), fingerprint):
        warnings.warn(f"encoding cache {path} was written for different graphs (same cache_key "
                      f"{cache_key!r}); recomputing and overwriting it", stacklevel=2)
        arrays = None
    if arrays is None:
        arrays = _compute(_FlatGraphs(graphs), lap_pe, rwse, lap_skip_trivial, lap_normalization, dense_max_nodes,
                          num_workers, progress)
        arrays["fingerprint"] = fingerprint
        if path is not None:
            save_arrays(path, arrays)
    return _attach(graphs, arrays, lap_pe, rwse)


def _compute(flat: _FlatGraphs, k: int, steps: int, skip_trivial: bool, normalization: str,
             dense_max_nodes: int, num_workers: int | None, progress: bool) -> dict[str, np.ndarray]:
    total = int(flat.node_ptr[-1])
    num_graphs = len(flat.sizes)
    lap_vec = np.zeros((total, k), dtype=np.float32)
    lap_val = np.zeros((num_graphs, k), dtype=np.float32)
    lap_count = np.zeros(num_graphs, dtype=np.int64)
    rw = np.zeros((total, steps), dtype=np.float32)

    def run_chunk(n: int, members: np.ndarray) -> None:
        adj = flat.dense(members, n)
        node_index = flat.node_ptr[members][:, None] + np.arange(n)[None, :]
        rw_done = False
        if k:
            labels = component_labels_dense(adj)
            # RWSE is read off the full spectrum of the normalised Laplacian when the graph allows it
            # (symmetric, no self-loops)
            from_spectrum = bool(steps and n and normalization == "sym"
                                 and np.array_equal(adj, adj.transpose(0, 2, 1))
                                 and not np.diagonal(adj, axis1=1, axis2=2).any())
            vec, val, count, values, vectors = laplacian_pe_dense(adj, labels, k, skip_trivial=skip_trivial,
                                                                  full_spectrum=from_spectrum,
                                                                  normalization=normalization)
            lap_vec[node_index.ravel()] = vec.reshape(-1, k)
            lap_val[members] = val
            lap_count[members] = count
            if from_spectrum:
                from_eigen = rwse_from_eigen(values, vectors, adj.sum(axis=2), steps)
                rw[node_index.ravel()] = from_eigen.reshape(-1, steps)
                rw_done = True
        if steps and not rw_done and n:
            rw[node_index.ravel()] = rwse_dense(adj, steps).reshape(-1, steps)

    chunks = _chunks(flat.sizes, dense_max_nodes, steps)
    workers = num_workers or torch.get_num_threads()
    with one_blas_thread(), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(run_chunk, n, members) for n, members in chunks]
        iterator = futures
        if progress:
            from rich.progress import track

            iterator = track(futures, description="encodings")
        for future in iterator:
            future.result()
    for g in np.nonzero(flat.sizes > dense_max_nodes)[0]:  # large graphs one by one, sparse methods
        adj = flat.sparse(int(g))
        nodes = slice(flat.node_ptr[g], flat.node_ptr[g + 1])
        if k:
            vec, val, count = laplacian_pe_sparse(adj, k, skip_trivial=skip_trivial,
                                                  dense_max_nodes=dense_max_nodes, normalization=normalization)
            lap_vec[nodes], lap_val[g], lap_count[g] = vec, val, count
        if steps:  # exact while affordable, else the documented estimator (random_walk module)
            if auto_method(adj.shape[0], adj.nnz, steps) == "estimate":
                rw[nodes] = rwse_estimate(adj, steps)[0]
            else:
                rw[nodes] = rwse_exact(adj, steps)
    return {"sizes": flat.sizes, "lap_vec": lap_vec, "lap_val": lap_val, "lap_count": lap_count, "rwse": rw}


def _attach(graphs: list[Graph], arrays: dict[str, np.ndarray], k: int, steps: int) -> list[Graph]:
    sizes_np = np.array([g.num_nodes for g in graphs], dtype=np.int64)
    if not np.array_equal(arrays["sizes"], sizes_np):
        raise ValueError("add_encodings: cached node counts do not match the graphs; delete the cache file")
    sizes = sizes_np.tolist()
    node_data: dict[str, tuple[torch.Tensor, ...]] = {}
    if k:
        count_per_node = np.repeat(arrays["lap_count"], sizes_np)
        node_data["lap_vec"] = torch.from_numpy(arrays["lap_vec"]).split(sizes)
        node_data["lap_val"] = torch.from_numpy(np.repeat(arrays["lap_val"], sizes_np, axis=0)).split(sizes)
        node_data["lap_mask"] = torch.from_numpy(np.arange(k)[None, :] < count_per_node[:, None]).split(sizes)
    if steps:
        node_data["rwse"] = torch.from_numpy(arrays["rwse"]).split(sizes)
    out = []
    for i, g in enumerate(graphs):
        # without re-validating: the graph was validated when built, and the new tensors are finite with N
        # rows by construction (validation costs ~0.5 ms a graph: seconds on a dataset)
        out.append(g.with_data(node_data={name: parts[i] for name, parts in node_data.items()}, validate=False))
    return out
