"""Composing patterns: `union`, `intersect`, `add_self_loops`, `causal`, `subsample`.

Patterns are values: compose them, then run `sparse_attention` once on the result (the
FlexAttention model: building a pattern and running attention are two steps).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from ._csr import csr_from_pairs, filter_edges, finish, graph_offsets

__all__ = ["union", "intersect", "add_self_loops", "causal", "subsample"]


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


def union(*patterns: Graph, return_sources: bool = False,
          return_positions: bool = False) -> Graph | tuple[Graph, list[Tensor]] | tuple[Graph, list, list]:
    """The entries present in any pattern: sorted CSR, duplicates removed, edge tensors dropped.

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
    key = torch.cat([_keys(p) for p in patterns])
    unique_key, inverse = torch.unique(key, return_inverse=True)
    width = max(first.num_cols, 1)
    row = torch.div(unique_key, width, rounding_mode="floor")
    ptr, col_ptr = _shared_batch(patterns)
    indptr = torch.zeros(first.num_nodes + 1, dtype=torch.long, device=first.device)
    if row.numel():
        indptr[1:] = torch.cumsum(torch.bincount(row, minlength=first.num_nodes), 0)
    out = finish(indptr, (unique_key - row * width).contiguous(), first.num_cols, ptr, col_ptr)
    if not (return_sources or return_positions):
        return out
    offsets = [0]
    for p in patterns:
        offsets.append(offsets[-1] + p.num_edges)
    positions = [inverse[offsets[i]:offsets[i + 1]] for i in range(len(patterns))]
    sources = []
    for pos in positions:
        mask = torch.zeros(unique_key.numel(), dtype=torch.bool, device=first.device)
        mask[pos] = True
        sources.append(mask)
    extra = ([sources] if return_sources else []) + ([positions] if return_positions else [])
    return (out, *extra)


def intersect(*patterns: Graph) -> Graph:
    """The entries present in every pattern (sorted, no duplicates, edge tensors dropped)."""
    _check_same_shape(patterns, "intersect")
    first = patterns[0]
    keys = [torch.unique(_keys(p)) for p in patterns]
    common = keys[0]
    for other in keys[1:]:
        common = common[torch.isin(common, other)]
    width = max(first.num_cols, 1)
    row = torch.div(common, width, rounding_mode="floor")
    ptr, col_ptr = _shared_batch(patterns)
    return csr_from_pairs(row, common - row * width, first.num_nodes, first.num_cols, ptr=ptr,
                          col_ptr=col_ptr, device=first.device)


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
        from .static import causal_sequence

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
