"""`NeighborLoader`: mini-batches of seed nodes of one graph with their sampled k-hop neighbourhoods.

It has the trainer's loader interface (`sparsegt.data.DataLoader`: ``len``, ``batches(epoch, start)``,
``set_epoch``) plus ``evaluation_batches``, which the trainer uses, when a loader has it, to score a split in
memory-bounded chunks instead of whole graphs.

Seeds are the nodes of ``node_data[TARGET_MASK]`` (all nodes without one). An epoch's order is a pure function
of (seed, epoch, rank, world_size), and batch b's neighbourhood sample is keyed by (seed, epoch, b, rank)
(`hash_random`): the loader holds no random state, so a run resumed at batch b sees exactly the batches it
would have seen. Each batch is the sampled subgraph (`NeighborSampler`, seeds first) with ``TARGET_MASK``
marking its seeds, so the loss and metrics count each seed once and the other nodes only feed them.

With ``partition="metis"`` (or ``"contiguous"``) and more than one rank, rank r draws its seeds from part r of
the seed nodes (`sparsegt.data.partition`) instead of every W-th position of a shared permutation: its epoch is
a permutation of its own part (keyed by (seed, epoch, rank)), padded by repetition to the largest part's size
so that all ranks take the same number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from ..graph import Graph
from .hash_random import derive_key
from .loader import batch_count, rank_order, rank_share
from .neighbor_sampler import NeighborSampler, check_fanouts
from .partition import PARTITIONS, partition_seeds
from .spec import TARGET_MASK

__all__ = ["NeighborLoader"]

_TRAIN_STREAM, _EVAL_STREAM = 1, 2  # distinct key streams for training batches and evaluation chunks


def _targets(graph: Graph) -> np.ndarray:
    """[T] the node ids scored in ``graph`` (its ``TARGET_MASK``, or every node)."""
    mask = graph.node_data.get(TARGET_MASK)
    return np.arange(graph.num_nodes) if mask is None else torch.nonzero(mask).reshape(-1).numpy()


def _with_seed_mask(graph: Graph, num_seeds: int) -> Graph:
    mask = torch.zeros(graph.num_nodes, dtype=torch.bool)
    mask[:num_seeds] = True
    return graph.with_data(node_data={TARGET_MASK: mask}, validate=False)


class NeighborLoader:
    """Batches of ``batch_size`` seed nodes of one graph, each with its sampled neighbourhood.

    Args:
        graphs: a sequence holding one graph (a split of a `one_graph_dataset`); its ``TARGET_MASK`` nodes are
            the seeds.
        batch_size: seed nodes per batch (per rank).
        fanouts: neighbours sampled per node at each hop (``[10, 5]``: 10 at hop 1, 5 at hop 2; -1 all).
        eval_fanouts: the fan-outs of `evaluation_batches` (default: ``fanouts``).
        shuffle, seed, drop_last, rank, world_size: as `sparsegt.data.DataLoader`, over seed nodes instead of
            graphs (the epoch's permutation is padded by repetition to divide among ranks unless ``drop_last``).
        partition: ``"none"`` (ranks share one permutation), ``"metis"`` or ``"contiguous"``: each rank samples
            from its own part of the seed nodes (`sparsegt.data.partition`); ``parts`` holds them.
    """

    def __init__(self, graphs: Sequence[Graph], batch_size: int, *, fanouts: Sequence[int],
                 eval_fanouts: Sequence[int] | None = None, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1, partition: str = "none") -> None:
        if len(graphs) != 1:
            raise ValueError(f"NeighborLoader samples seed nodes of one graph; got {len(graphs)} graphs (sampling "
                             "is for a dataset of one large graph: drop data.fanouts to batch whole graphs)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 seed node, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.fanouts = check_fanouts(fanouts, "fanouts").tolist()
        self.eval_fanouts = check_fanouts(eval_fanouts, "eval_fanouts").tolist() if eval_fanouts else self.fanouts
        self.graph = graphs[0]
        self.seeds = _targets(self.graph)
        if self.seeds.size == 0:
            raise ValueError("NeighborLoader: the graph has no target node to sample (its target mask is empty)")
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        if partition not in PARTITIONS:
            raise ValueError(f"partition must be one of {PARTITIONS}, got {partition!r}")
        self.sampler = NeighborSampler(self.graph)
        self.partition = partition
        # [world_size] sorted seed ids of each rank's part, or None (one shared permutation)
        self.parts = (partition_seeds(self.graph, self.seeds, world_size, partition)
                      if partition != "none" and world_size > 1 else None)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Seed nodes this rank visits per epoch (padded or dropped to an equal share)."""
        if self.parts is not None:
            sizes = [p.shape[0] for p in self.parts]
            return min(sizes) if self.drop_last else max(sizes)
        return rank_share(self.seeds.shape[0], self.world_size, self.drop_last)

    def __len__(self) -> int:
        return batch_count(self.num_samples, self.batch_size, self.drop_last)

    def indices(self, epoch: int) -> np.ndarray:
        """[num_samples] the seed node ids this rank visits in ``epoch``, in order."""
        if self.parts is not None:
            mine = self.parts[self.rank]
            order = (np.random.default_rng([self.seed, epoch, self.rank]).permutation(mine.shape[0]) if self.shuffle
                     else np.arange(mine.shape[0]))
            return mine[np.resize(order, self.num_samples)]
        return self.seeds[rank_order(self.seeds.shape[0], self.seed, epoch, self.shuffle, self.rank, self.world_size,
                                     self.num_samples)]

    def batches(self, epoch: int, start: int = 0) -> Iterator[Graph]:
        """Yield the batches of ``epoch`` from batch number ``start`` (0-based) on."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        order = self.indices(epoch)
        for b in range(start, len(self)):
            seeds = order[b * self.batch_size:(b + 1) * self.batch_size]
            # padding may repeat a seed inside one batch (more ranks than seeds): keep each once
            seeds = seeds[np.sort(np.unique(seeds, return_index=True)[1])]
            key = derive_key(self.seed, _TRAIN_STREAM, epoch, b, self.rank)
            sample = self.sampler.sample(seeds, self.fanouts, key)
            yield _with_seed_mask(sample.graph, sample.num_seeds)

    def __iter__(self) -> Iterator[Graph]:
        return self.batches(self.epoch)

    def evaluation_batches(self, graphs: Sequence[Graph], batch_size: int, rank: int = 0,
                           world_size: int = 1) -> Iterator[Graph]:
        """Every target node of ``graphs`` once, in chunks of ``batch_size`` seeds with their neighbourhoods
        sampled with ``eval_fanouts`` (memory bounded by the chunk, not the graph). Rank ``r`` takes the target
        positions ``r, r + W, ...`` (no padding: gathered over ranks, each node is scored once). The samples
        are keyed by (seed, graph, rank, chunk), so an evaluation is the same every time it runs."""
        for g, graph in enumerate(graphs):
            sampler = self.sampler if self.sampler.shares_pattern(graph) else NeighborSampler(graph)
            mine = _targets(graph)[rank::world_size]
            for c, first in enumerate(range(0, mine.shape[0], batch_size)):
                key = derive_key(self.seed, _EVAL_STREAM, g, rank, c)
                sample = sampler.sample(mine[first:first + batch_size], self.eval_fanouts, key, data_from=graph)
                yield _with_seed_mask(sample.graph, sample.num_seeds)
