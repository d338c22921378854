"""Cover a CSR pattern with dense tiles: the plan of the `tiles` backend.

Rows are cut into *row tiles* of ``tile_rows`` consecutive queries, columns into *column blocks* of
``block_cols`` consecutive keys. A row tile's key set is the list of column blocks that any of its
edges touches; its dense tile is ``tile_rows x (blocks * block_cols)`` scores, of which the pattern's
edges are the ones computed for real (the rest are masked). A window, a causal window, a block
diagonal (full attention per graph of a batch), dilated or strided bands: all are covered by tiles
that are mostly filled, and then dense matrix products beat a per-edge gather by a wide margin.

``fill = E / (entries of all tiles)`` measures it; `TilePlan.fill` lets the caller decide. Tiles are
ordered by their number of column blocks, so tiles of one width sit next to each other and are
computed as one batched product (``groups``).

Built by two numba passes over the edges (count the blocks of each tile; then list them and place
every edge), in O(E + tiles * blocks) time and memory, never O(Nq * Nk).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from ..graph import Graph

TILE_ROWS = 128
BLOCK_COLS = 64
CHUNK_ENTRIES = 1 << 22  # scores per chunk (times H): 16 MiB of float32 per score buffer


class TileChunk:
    """Tiles of one width computed together: which row tiles, which column blocks, and the edge map.

    ``tiles`` [c] (row tile ids), ``blocks`` [c, n] (their column blocks) and ``edge_map`` [c, R, W]
    int32 (edge id, or -1 where the entry is not an edge), W = n * C.
    """

    def __init__(self, tiles: Tensor, blocks: Tensor, edge_map: Tensor) -> None:
        self.tiles, self.blocks, self.edge_map = tiles, blocks.reshape(-1), edge_map
        self.shape = tuple(edge_map.shape)
        self._masks: dict = {}  # masks derived from edge_map, made on first use (per dtype)

    def has_edge(self) -> Tensor:
        """[c, R] bool: the row has at least one edge in this tile."""
        return self._cached("rows", lambda: (self.edge_map >= 0).any(-1))

    def no_edge_mask(self, dtype: torch.dtype) -> Tensor:
        """[c, R, W]: 0 at edges, -inf elsewhere (added to scores)."""
        return self._cached(("add", dtype), lambda: torch.zeros(self.shape, dtype=dtype, device=self.edge_map.device)
                            .masked_fill_(self.edge_map < 0, -torch.inf))

    def edge_weight(self, dtype: torch.dtype) -> Tensor:
        """[c, R, W]: 1 at edges, 0 elsewhere (multiplied into weights)."""
        return self._cached(("mul", dtype), lambda: (self.edge_map >= 0).to(dtype))

    def _cached(self, key, make):
        if key not in self._masks:
            self._masks[key] = make()
        return self._masks[key]


@dataclass(frozen=True)
class TilePlan:
    """Dense tiles covering a pattern.

    ``tile_order`` [T]: row tiles sorted by their number of column blocks (stable).
    ``groups``: (start, stop, blocks) — the tiles ``tile_order[start:stop]`` all have ``blocks`` column blocks.
    ``block_ptr`` [T+1] (in sorted order), ``tile_blocks`` [sum blocks]: each tile's column blocks, ascending.
    ``edge_map`` [sum blocks * tile_rows * block_cols] int32: per tile a ``tile_rows x width`` matrix with
    the edge id computed at each entry, or -1 (tile ``s`` of the sorted order starts at
    ``block_ptr[s] * tile_rows * block_cols``).
    ``duplicates``: number of edges that share (row, column) with another (a dense tile cannot hold both).
    """

    tile_rows: int
    block_cols: int
    tile_order: Tensor
    groups: tuple[tuple[int, int, int], ...]
    block_ptr: Tensor
    tile_blocks: Tensor
    edge_map: Tensor
    duplicates: int
    fill: float
    _chunks: dict = field(default_factory=dict, repr=False, compare=False)

    def chunks(self, num_heads: int) -> list[TileChunk]:
        """Chunks of tiles of one width, at most ``CHUNK_ENTRIES`` scores each (at least one tile). Cached."""
        if num_heads not in self._chunks:
            rows, cols = self.tile_rows, self.block_cols
            chunks = []
            for start, stop, blocks in self.groups:
                if blocks == 0:
                    continue
                step = max(1, CHUNK_ENTRIES // (num_heads * rows * blocks * cols))
                for a in range(start, stop, step):
                    b = min(stop, a + step)
                    lo, hi = int(self.block_ptr[a]), int(self.block_ptr[b])
                    chunks.append(TileChunk(
                        self.tile_order[a:b], self.tile_blocks[lo:hi],
                        self.edge_map[lo * rows * cols:hi * rows * cols].view(b - a, rows, blocks * cols)))
            self._chunks[num_heads] = chunks
        return self._chunks[num_heads]


@njit(parallel=True, cache=True)
def _count_blocks(indptr, indices, tile_rows, block_cols, num_blocks, tiles_per_task):
    num_rows = indptr.shape[0] - 1
    num_tiles = (num_rows + tile_rows - 1) // tile_rows
    counts = np.zeros(num_tiles, np.int64)
    num_tasks = (num_tiles + tiles_per_task - 1) // tiles_per_task
    for task in prange(num_tasks):
        stamp = np.full(num_blocks, -1, np.int64)
        for t in range(task * tiles_per_task, min(num_tiles, (task + 1) * tiles_per_task)):
            n = 0
            for e in range(indptr[t * tile_rows], indptr[min(num_rows, (t + 1) * tile_rows)]):
                b = indices[e] // block_cols
                if stamp[b] != t:
                    stamp[b] = t
                    n += 1
            counts[t] = n
    return counts


@njit(parallel=True, cache=True)
def _place_edges(indptr, indices, tile_rows, block_cols, num_blocks, order, block_ptr, tiles_per_task,
                 tile_blocks, edge_map):
    """Fill ``tile_blocks`` and ``edge_map`` (pre-set to -1); returns the number of duplicate edges."""
    num_rows = indptr.shape[0] - 1
    num_tiles = order.shape[0]
    num_tasks = (num_tiles + tiles_per_task - 1) // tiles_per_task
    duplicates = np.zeros(num_tasks, np.int64)
    for task in prange(num_tasks):
        slot = np.full(num_blocks, -1, np.int64)
        for s in range(task * tiles_per_task, min(num_tiles, (task + 1) * tiles_per_task)):
            t = order[s]
            first, count = block_ptr[s], block_ptr[s + 1] - block_ptr[s]
            if count == 0:
                continue
            row0, row1 = t * tile_rows, min(num_rows, (t + 1) * tile_rows)
            n = 0
            for e in range(indptr[row0], indptr[row1]):
                b = indices[e] // block_cols
                if slot[b] < 0:
                    slot[b] = 0
                    tile_blocks[first + n] = b
                    n += 1
            blocks = tile_blocks[first:first + count]
            blocks.sort()
            for x in range(count):
                slot[blocks[x]] = x
            width = count * block_cols
            base = first * tile_rows * block_cols
            for r in range(row0, row1):
                for e in range(indptr[r], indptr[r + 1]):
                    j = indices[e]
                    at = base + (r - row0) * width + slot[j // block_cols] * block_cols + j % block_cols
                    if edge_map[at] >= 0:
                        duplicates[task] += 1
                    edge_map[at] = e
            for x in range(count):
                slot[blocks[x]] = -1
    return duplicates.sum()


def _tiles_per_task(num_tiles: int) -> int:
    return max(1, -(-num_tiles // (8 * numba.get_num_threads())))


def _tile_counts(pattern: Graph, tile_rows: int, block_cols: int) -> np.ndarray:
    """[T] column blocks of each row tile: the pattern's plan ``"tile_counts"``."""
    def build() -> np.ndarray:
        num_tiles = -(-pattern.num_nodes // tile_rows)
        num_blocks = max(1, -(-pattern.num_cols // block_cols))
        return _count_blocks(pattern.indptr.cpu().numpy(), pattern.indices.cpu().numpy(), tile_rows, block_cols,
                             num_blocks, _tiles_per_task(num_tiles))

    return pattern.plan("tile_counts", build, key=(tile_rows, block_cols))


def tile_fill(pattern: Graph, tile_rows: int = TILE_ROWS, block_cols: int = BLOCK_COLS) -> float:
    """Fraction of the covering tiles' entries that are edges (1.0 for an empty pattern). Counted once per
    pattern (its plan ``"tile_counts"``)."""
    counts = _tile_counts(pattern, tile_rows, block_cols)
    entries = int(counts.sum()) * tile_rows * block_cols
    return pattern.num_edges / entries if entries else 1.0


def tile_plan(pattern: Graph, tile_rows: int = TILE_ROWS, block_cols: int = BLOCK_COLS) -> TilePlan:
    """The dense tiles covering ``pattern``, built once per pattern (its plan ``"tile_plan"``, which lives as
    long as the pattern: `Graph.plan`). Tensors live on the pattern's device."""
    return pattern.plan("tile_plan", lambda: _build_tile_plan(pattern, tile_rows, block_cols),
                        key=(tile_rows, block_cols))


def _build_tile_plan(pattern: Graph, tile_rows: int, block_cols: int) -> TilePlan:
    fill = tile_fill(pattern, tile_rows, block_cols)
    counts = _tile_counts(pattern, tile_rows, block_cols)
    if pattern.num_edges >= 2**31:
        raise ValueError(f"the tiles backend addresses edges with int32; this pattern has {pattern.num_edges}")
    order = np.argsort(counts, kind="stable")
    sorted_counts = counts[order]
    block_ptr = np.zeros(order.shape[0] + 1, np.int64)
    np.cumsum(sorted_counts, out=block_ptr[1:])
    tile_blocks = np.empty(int(block_ptr[-1]), np.int64)
    edge_map = np.full(int(block_ptr[-1]) * tile_rows * block_cols, -1, np.int32)
    duplicates = _place_edges(pattern.indptr.cpu().numpy(), pattern.indices.cpu().numpy(), tile_rows, block_cols,
                              max(1, -(-pattern.num_cols // block_cols)), order, block_ptr,
                              _tiles_per_task(order.shape[0]), tile_blocks, edge_map)
    starts = np.flatnonzero(np.diff(sorted_counts, prepend=-1))
    stops = np.append(starts[1:], order.shape[0])[:starts.shape[0]]
    groups = tuple((int(a), int(b), int(sorted_counts[a])) for a, b in zip(starts, stops, strict=True))
    device = pattern.device
    plan = TilePlan(tile_rows, block_cols, torch.from_numpy(order).to(device), groups,
                    torch.from_numpy(block_ptr).to(device), torch.from_numpy(tile_blocks).to(device),
                    torch.from_numpy(edge_map).to(device), int(duplicates), fill)
    return plan
