"""Combiner's pattern: each query attends to the keys of its own region directly and to every other region of
its graph (or sequence) through one summary column.

Ren et al., "Combiner: Full Attention Transformer with Sparse Computation Cost", NeurIPS 2021
(arXiv:2107.05768). The keys of each graph are partitioned into regions (contiguous blocks of a sequence, or
clusters / partitions of a graph). The pattern is rectangular: rows are the N queries, columns are the N keys
followed by the R region summaries (column ``N + r`` is region r)::

    row i:  { j : region(j) = region(i) }  ∪  { N + r : r a region of i's graph, r != region(i) }

Every key of i's graph is reached exactly once (directly or inside one summary), so attention over this
pattern is full attention in the sense of Combiner (every position can attend to every position) at cost
``sum_i (|region(i)| + R_g - 1)`` entries: O(N sqrt N) with regions of size sqrt n.
`sparsegt.nn.CombinerAttention` computes the summaries and runs the kernel on this pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..graph import Graph
from ._csr import check_int, csr_from_pairs, segment_arange

__all__ = ["CombinerPattern", "combiner_pattern", "block_regions"]


@dataclass
class CombinerPattern:
    """A Combiner pattern and its regions.

    Attributes:
        pattern: `Graph` [N, N + R] (module docstring).
        region: [N] region of every node, regions numbered graph by graph (0 .. R-1).
        region_size: [R] nodes per region.
        num_nodes: N.
    """

    pattern: Graph
    region: Tensor
    region_size: Tensor
    num_nodes: int

    @property
    def num_regions(self) -> int:
        return int(self.region_size.numel())


def block_regions(batch: Graph | Tensor, block: int) -> Tensor:
    """[N] contiguous blocks of ``block`` nodes inside each graph (or sequence) as region labels.

    ``batch``: a `Graph` (its ``ptr`` splits the graphs; none: one graph) or ``ptr`` [B+1] of a batch of
    sequences. The last block of a graph may be shorter."""
    block = check_int("block", block, 1)
    if isinstance(batch, Graph):
        ptr = batch.ptr if batch.ptr is not None else torch.tensor([0, batch.num_nodes], device=batch.device)
    else:
        ptr = torch.as_tensor(batch, dtype=torch.long)
    sizes = ptr.diff()
    position = segment_arange(sizes)
    blocks_per_graph = (sizes + block - 1) // block
    first_block = torch.cumsum(blocks_per_graph, 0) - blocks_per_graph
    return torch.repeat_interleave(first_block, sizes) + torch.div(position, block, rounding_mode="floor")


def combiner_pattern(batch: Graph | Tensor, region: Tensor) -> CombinerPattern:
    """The Combiner pattern of a batch partitioned into regions.

    Args:
        batch: a `Graph` (its ``ptr`` splits graphs; none: one graph) or ``ptr`` [B+1] of a batch of sequences.
        region: [N] integer label of each node's region (any labels; a label used in two graphs is a
            ValueError: regions never cross graphs). `block_regions` gives contiguous blocks.
    Returns:
        `CombinerPattern` with regions renumbered graph by graph.
    """
    if isinstance(batch, Graph):
        num_nodes, device = batch.num_nodes, batch.device
        ptr = batch.ptr if batch.ptr is not None else torch.tensor([0, num_nodes], device=device)
    else:
        ptr = torch.as_tensor(batch, dtype=torch.long)
        num_nodes, device = int(ptr[-1]), ptr.device
    region = torch.as_tensor(region, device=device)
    if region.shape != (num_nodes,) or region.is_floating_point():
        raise ValueError(f"region must be an integer tensor [N] = [{num_nodes}], got {region.dtype} "
                         f"{tuple(region.shape)}")
    graph_of_node = torch.repeat_interleave(torch.arange(len(ptr) - 1, device=device), ptr.diff())
    labels, region = torch.unique(region.to(torch.long), return_inverse=True)
    graph_of_region = torch.full((len(labels),), -1, dtype=torch.long, device=device)
    graph_of_region.scatter_(0, region, graph_of_node)
    if num_nodes and bool((graph_of_region[region] != graph_of_node).any()):
        node = int((graph_of_region[region] != graph_of_node).nonzero()[0, 0])
        raise ValueError(f"region label {int(labels[region[node]])} is used in more than one graph (node {node} of "
                         f"graph {int(graph_of_node[node])}): regions must stay inside their graph")
    # renumber regions graph by graph, so the regions of graph g are region_ptr[g] .. region_ptr[g+1] - 1
    order = torch.argsort(graph_of_region * max(len(labels), 1) + torch.arange(len(labels), device=device))
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=device)
    region, graph_of_region = rank[region], graph_of_region[order]
    region_size = torch.bincount(region, minlength=len(labels))
    regions_per_graph = torch.bincount(graph_of_region, minlength=len(ptr) - 1)
    region_ptr = torch.cumsum(regions_per_graph, 0) - regions_per_graph

    nodes = torch.arange(num_nodes, device=device)
    by_region = torch.argsort(region, stable=True)
    region_start = torch.cumsum(region_size, 0) - region_size
    local_count = region_size[region]
    local_rows = torch.repeat_interleave(nodes, local_count)
    local_cols = by_region[torch.repeat_interleave(region_start[region], local_count) + segment_arange(local_count)]
    summary_count = regions_per_graph[graph_of_node]
    summary_rows = torch.repeat_interleave(nodes, summary_count)
    summary_region = torch.repeat_interleave(region_ptr[graph_of_node], summary_count) + segment_arange(summary_count)
    other = summary_region != region[summary_rows]
    rows = torch.cat([local_rows, summary_rows[other]])
    cols = torch.cat([local_cols, num_nodes + summary_region[other]])
    pattern = csr_from_pairs(rows, cols, num_nodes, num_nodes + len(labels), device=device)
    return CombinerPattern(pattern, region, region_size, num_nodes)
