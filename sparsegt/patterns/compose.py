"""Composing patterns: `union`, `intersect`, `add_self_loops`, `causal`, `subsample`, and `bigbird` (a union).

Patterns are values: compose them, then run `sparse_attention` once on the result (the
FlexAttention model: building a pattern and running attention are two steps).
"""

from __future__ import annotations

import torch
from numba import njit
from torch import Tensor

from ..graph import Graph
from ._csr import csr_from_pairs, filter_edges, finish, graph_offsets
from .static import Lengths, causal_sequence, global_tokens, random, window

__all__ = ["union", "intersect", "add_self_loops", "causal", "subsample", "bigbird"]

MERGE_MIN_ENTRIES = 1 << 14   # CPU inputs with at least this many entries in all take the O(E) merge


def _check_same_shape(patterns: tuple[Graph, ...], name: str) -> None:
    if not patterns:
        raise ValueError(f"{name} needs at least one pattern")
    for i, p in enumerate(patterns):
        if not isinstance(p, Graph):
            raise ValueError(f"{name}: argument {i} is a {type(p).__name__}, not a sparsegt.Graph")
        if (p.num_nodes, p.num_cols) != (patterns[0].num_nodes, patterns[0].num_cols):
            raise ValueError(f"{name}: pattern {i} is {p.num_nodes}x{p.num_cols} but pattern 0 is "
                             f"{patterns[0].num_nodes}x{patterns[0].num_cols}; all must have the same shape")
        if p.device != patterns[0].device:
            raise ValueError(f"{name}: pattern {i} is on {p.device} but pattern 0 on {patterns[0].device}")


def _shared_batch(patterns: tuple[Graph, ...]) -> tuple[Tensor | None, Tensor | None]:
    """The batch offsets every input agrees on, else None (the result is then one graph)."""
    first = patterns[0]
    if first.ptr is None:
        return None, None
    for p in patterns[1:]:
        if p.ptr is None or not torch.equal(p.ptr, first.ptr) or not torch.equal(graph_offsets(p)[1],
                                                                                 graph_offsets(first)[1]):
            return None, None
    return first.ptr, graph_offsets(first)[1]


def _keys(p: Graph) -> Tensor:
    return p.row_index() * max(p.num_cols, 1) + p.indices


@njit(cache=True)
def _rows_strictly_sorted_numba(indptr, cols):
    for r in range(indptr.shape[0] - 1):
        for e in range(indptr[r] + 1, indptr[r + 1]):
            if cols[e] <= cols[e - 1]:
                return False
    return True


def _rows_strictly_sorted(p: Graph) -> bool:
    """True when keys rise strictly inside every row (sorted, no duplicates): one O(E) pass (CPU)."""
    return p.num_edges < 2 or bool(_rows_strictly_sorted_numba(p.indptr.contiguous().numpy(),
                                                               p.indices.contiguous().numpy()))


@njit(cache=True)
def _merge_two_numba(indptr_a, cols_a, indptr_b, cols_b, out_indptr, out_cols, position_a, position_b, write):
    """Merge the rows of two row-sorted, duplicate-free CSRs in one sequential O(E) sweep. Called
    twice: ``write`` False stores each merged row's length in ``out_indptr[r + 1]``; then, with
    ``out_indptr`` cumulative, ``write`` True stores the merged keys and the union position of
    every input entry. The inner loop has no data-dependent branch."""
    for r in range(indptr_a.shape[0] - 1):
        i, i_end, j, j_end = indptr_a[r], indptr_a[r + 1], indptr_b[r], indptr_b[r + 1]
        out = out_indptr[r] if write else 0
        while i < i_end and j < j_end:
            x, y = cols_a[i], cols_b[j]
            if write:       # written whether taken or not: a later step overwrites an untaken slot
                out_cols[out] = min(x, y)
                position_a[i] = out
                position_b[j] = out
            i += x <= y
            j += y <= x
            out += 1
        if write:
            for t in range(i, i_end):
                out_cols[out + t - i] = cols_a[t]
                position_a[t] = out + t - i
            for t in range(j, j_end):
                out_cols[out + t - j] = cols_b[t]
                position_b[t] = out + t - j
        else:
            out_indptr[r + 1] = out + (i_end - i) + (j_end - j)


def _merge_two_cpu(a_indptr: Tensor, a_cols: Tensor, b_indptr: Tensor, b_cols: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(indptr, cols, position of a's entries, position of b's entries) of the merged rows."""
    out_indptr = torch.zeros(a_indptr.numel(), dtype=torch.long)
    position_a = torch.empty(a_cols.numel(), dtype=torch.long)
    position_b = torch.empty(b_cols.numel(), dtype=torch.long)
    arrays = [t.contiguous().numpy() for t in (a_indptr, a_cols, b_indptr, b_cols)]
    _merge_two_numba(*arrays, out_indptr.numpy(), a_cols.new_empty(0).numpy(), position_a.numpy(),
                     position_b.numpy(), False)
    torch.cumsum(out_indptr, 0, out=out_indptr)
    out_cols = torch.empty(int(out_indptr[-1]), dtype=torch.long)
    _merge_two_numba(*arrays, out_indptr.numpy(), out_cols.numpy(), position_a.numpy(), position_b.numpy(), True)
    return out_indptr, out_cols, position_a, position_b


def _merge_sorted_cpu(patterns: list[Graph]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Linear-time merge of row-sorted, duplicate-free CPU patterns, folded pairwise: O(E * P)."""
    indptr, cols = patterns[0].indptr, patterns[0].indices
    positions: list[Tensor] | None = None
    for p in patterns[1:]:
        indptr, cols, moved, position = _merge_two_cpu(indptr, cols, p.indptr, p.indices)
        positions = [moved] if positions is None else [moved[pos] for pos in positions]
        positions.append(position)
    return indptr, cols, [torch.arange(cols.numel())] if positions is None else positions


def _merge(patterns: tuple[Graph, ...]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """The union of the entries as sorted CSR ``(indptr, cols)`` and, per input, the union position of
    each of its entries (in its CSR order).

    CPU inputs whose rows are sorted without duplicates (every builder's output) merge in O(E * P)
    with no sort; an input that is not is first sorted on its own. Other devices, and small inputs
    (below ``MERGE_MIN_ENTRIES``, where one sort is as fast and no compiled kernel is needed), sort
    the E concatenated keys once (radix sort on GPU, linear in E)."""
    first = patterns[0]
    if first.device.type == "cpu" and sum(p.num_edges for p in patterns) >= MERGE_MIN_ENTRIES:
        normal, inverses = [], []
        for p in patterns:
            if _rows_strictly_sorted(p):
                normal.append(p)
                inverses.append(None)
            else:       # user-built rows: sort this input alone (O(E_p log E_p)), map its entries back
                indptr, cols, (inverse,) = _merge_by_sort((p,))
                normal.append(Graph(indptr, cols, p.num_cols, validate=False))
                inverses.append(inverse)
        indptr, cols, positions = _merge_sorted_cpu(normal)
        positions = [pos if inv is None else pos[inv] for pos, inv in zip(positions, inverses, strict=True)]
        return indptr, cols, positions
    return _merge_by_sort(patterns)


def _merge_by_sort(patterns: tuple[Graph, ...]) -> tuple[Tensor, Tensor, list[Tensor]]:
    """`_merge` by one sort of all E keys (any device, any input order)."""
    first = patterns[0]
    sizes = [p.num_edges for p in patterns]
    key = torch.cat([_keys(p) for p in patterns])
    unique_key, inverse = torch.unique(key, return_inverse=True)
    width = max(first.num_cols, 1)
    row = torch.div(unique_key, width, rounding_mode="floor")
    indptr = torch.zeros(first.num_nodes + 1, dtype=torch.long, device=first.device)
    if row.numel():
        indptr[1:] = torch.cumsum(torch.bincount(row, minlength=first.num_nodes), 0)
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    positions = [inverse[offsets[i]:offsets[i + 1]] for i in range(len(patterns))]
    return indptr, (unique_key - row * width).contiguous(), positions


def _sources(positions: list[Tensor], num_entries: int, device: torch.device) -> list[Tensor]:
    sources = []
    for pos in positions:
        mask = torch.zeros(num_entries, dtype=torch.bool, device=device)
        mask[pos] = True
        sources.append(mask)
    return sources


def union(*patterns: Graph, return_sources: bool = False,
          return_positions: bool = False) -> Graph | tuple[Graph, list[Tensor]] | tuple[Graph, list, list]:
    """The entries present in any pattern: sorted CSR, duplicates removed, edge tensors dropped.

    Cost: O(E) for inputs whose rows are sorted without duplicates (what every builder returns): a
    P-way merge of the rows, no global sort (see `_merge`).

    Args:
        *patterns: `Graph` s of one shape [Nq, Nk].
        return_sources: also return, for each input p, a BoolTensor [E_union] that is True where the
            union entry is present in p. Entries shared by several inputs are True in each of them.
            A layer turns these into edge types (Exphormer: graph edge / expander / virtual), e.g.
            ``edge_type = torch.stack(sources, 1).float() @ type_embedding`` (sums the embeddings of
            every source) or ``torch.stack(sources, 1).int().argmax(1)`` (first source wins).
        return_positions: also return, for each input p, a LongTensor [E_p]: the union position of
            each of p's entries (in p's CSR order). Carries edge features over:
            ``feat = torch.zeros(E_union, F).index_add(0, positions[0], graph.edge_attr)``.
    Returns:
        the union `Graph` (keeping ``ptr``/``col_ptr`` only if every input has the same ones), then
        ``sources`` if asked, then ``positions`` if asked, each a list in the order of the inputs.
    """
    _check_same_shape(patterns, "union")
    first = patterns[0]
    indptr, cols, positions = _merge(patterns)
    ptr, col_ptr = _shared_batch(patterns)
    out = finish(indptr, cols, first.num_cols, ptr, col_ptr)
    if not (return_sources or return_positions):
        return out
    sources = _sources(positions, cols.numel(), first.device) if return_sources else []
    extra = ([sources] if return_sources else []) + ([positions] if return_positions else [])
    return (out, *extra)


def intersect(*patterns: Graph) -> Graph:
    """The entries present in every pattern (sorted, no duplicates, edge tensors dropped).

    The same O(E) merge as `union`, keeping the union entries that every input contributed to."""
    _check_same_shape(patterns, "intersect")
    first = patterns[0]
    indptr, cols, positions = _merge(patterns)
    keep = torch.ones(cols.numel(), dtype=torch.bool, device=first.device)
    for present in _sources(positions, cols.numel(), first.device):
        keep &= present
    merged = finish(indptr, cols, first.num_cols, None, None)
    ptr, col_ptr = _shared_batch(patterns)
    out = filter_edges(merged, keep, keep_batch=False)
    return finish(out.indptr, out.indices, first.num_cols, ptr, col_ptr)


def add_self_loops(pattern: Graph) -> Graph:
    """The pattern plus (i, i) for every i < min(Nq, Nk) (sorted, no duplicates, edge tensors dropped)."""
    _check_same_shape((pattern,), "add_self_loops")
    m = min(pattern.num_nodes, pattern.num_cols)
    loops = torch.arange(m, device=pattern.device)
    loop_pattern = csr_from_pairs(loops, loops, pattern.num_nodes, pattern.num_cols, device=pattern.device)
    both = union(pattern, loop_pattern)
    return finish(both.indptr, both.indices, both.num_cols, pattern.ptr, pattern.col_ptr)


def causal(pattern: Graph | int | list[int] | Tensor) -> Graph:
    """Keep the entries whose key is not in the future of its query, within its own graph/sequence.

    For a batch (``ptr``/``col_ptr``) an entry (i, j) of graph b survives when j belongs to graph b
    and ``j - col_ptr[b] <= i - ptr[b]``; without ``ptr`` when ``j <= i``. Edge tensors follow
    their entries.

    Given sequence lengths instead of a pattern (``causal(n)``: an int, or a list / 1-D tensor of
    lengths), returns the full causal triangle `static.causal_sequence(n)`, built directly in O(E).
    For causal windows use ``window(n, w, causal=True)``.
    """
    if isinstance(pattern, int | list | tuple) or (isinstance(pattern, Tensor) and pattern.dim() <= 1):
        return causal_sequence(pattern)
    if not isinstance(pattern, Graph):
        raise ValueError(f"causal: expected a sparsegt.Graph, got {type(pattern).__name__}")
    ptr, col_ptr = graph_offsets(pattern)
    row, col = pattern.row_index(), pattern.indices
    g = pattern.batch_index[row] if pattern.ptr is not None else torch.zeros_like(row)
    local_key = col - col_ptr[g]
    keep = (local_key >= 0) & (col < col_ptr[g + 1]) & (local_key <= row - ptr[g])
    return filter_edges(pattern, keep)


def subsample(pattern: Graph, p: float, seed: int | None = None, generator: torch.Generator | None = None,
              keep_self_loops: bool = True) -> Graph:
    """Stochastic subsampled attention (SSA): keep each entry independently with probability ``p``.

    Used in training: a fresh ``seed`` per step gives a fresh subsample; at evaluation use the full
    pattern (the SSA paper's train-sparse / test-dense scheme). With ``keep_self_loops`` every
    self-loop survives, so a row that has one never becomes empty. Edge tensors follow their entries.

    Args:
        pattern: any `Graph`. p: keep probability in (0, 1]. seed / generator: the random stream
            (``seed`` wins; neither: torch's global generator).
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"subsample: p = {p} must be in (0, 1]")
    if seed is not None:
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
    draw = torch.rand(pattern.num_edges, generator=generator).to(pattern.device)
    keep = draw < p
    if keep_self_loops:
        keep |= pattern.row_index() == pattern.indices
    return filter_edges(pattern, keep)


def bigbird(n: Lengths, w: int, g: int, r: int, seed: int = 0, *, device=None) -> Graph:
    """BigBird at token granularity: ``union(window(n, w), global_tokens(n, g), random(n, r, seed))``.

    (BigBird proper works on blocks of 64 tokens; `block_diagonal` + this per-token version cover
    the same idea on a kernel that does not need blocks.)"""
    return union(window(n, w, device=device), global_tokens(n, g, device=device),
                 random(n, r, seed, device=device))
