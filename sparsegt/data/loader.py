"""`DataLoader`: seeded, resumable, shardable batching of graphs into one `Graph` per step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..graph import Graph

__all__ = ["DataLoader"]


def rank_share(n: int, world_size: int, drop_last: bool) -> int:
    """Items one of ``world_size`` ranks visits per epoch: an equal share of ``n``, padded up (or, with
    ``drop_last``, cut down) so that every rank takes the same number of steps."""
    if world_size == 1:
        return n
    return n // world_size if drop_last else math.ceil(n / world_size)


def batch_count(num_samples: int, batch_size: int, drop_last: bool) -> int:
    """Batches per epoch of ``num_samples`` items (the last one partial unless ``drop_last``)."""
    return num_samples // batch_size if drop_last else math.ceil(num_samples / batch_size)


def rank_order(n: int, seed: int, epoch: int, shuffle: bool, rank: int, world_size: int,
               num_samples: int) -> np.ndarray:
    """[num_samples] positions 0..n-1 rank ``rank`` visits in ``epoch``: every ``world_size``-th entry of one
    permutation shared by the ranks (seeded by (seed, epoch); the identity without ``shuffle``), padded by
    repeating from its start (wrapping when the padding exceeds n)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    total = num_samples * world_size
    if total > n:
        order = np.concatenate([order, np.resize(order, total - n)])
    return order[:total][rank::world_size]


class DataLoader:
    """Batches of ``Graph.batch(...)`` whose order is a pure function of (seed, epoch, rank, world_size).

    Args:
        graphs: the graphs of one split.
        batch_size: graphs per batch (per rank).
        shuffle: permute the graphs each epoch with ``numpy.random.default_rng([seed, epoch])``.
        seed: the shuffling seed.
        drop_last: drop the last incomplete batch; with ``world_size > 1`` also drop the tail of the
            permutation that does not divide evenly among ranks (else it is padded, below).
        rank, world_size: this process's shard. As torch's ``DistributedSampler``: the epoch's
            permutation is padded by repeating its first graphs until its length divides by
            ``world_size`` (unless ``drop_last``), and rank ``r`` takes positions ``r, r + W, ...``.
            Every rank thus sees disjoint positions and the same number of batches.
        transform: optional ``Graph -> Graph`` applied to each graph before batching (e.g. attach
            positional encodings read from the encodings' cache).

    ``len(loader)`` is the number of batches per epoch on this rank. ``batches(epoch, start)`` yields the
    batches of ``epoch`` from batch number ``start`` on, so a trainer can resume mid-epoch.
    """

    def __init__(self, graphs: Sequence[Graph], batch_size: int, *, shuffle: bool = False, seed: int = 0,
                 drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 transform: Callable[[Graph], Graph] | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if len(graphs) == 0:
            raise ValueError("DataLoader needs at least one graph")
        self.graphs = graphs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch ``iter(loader)`` uses (as ``DistributedSampler.set_epoch``)."""
        self.epoch = epoch

    @property
    def num_samples(self) -> int:
        """Graphs this rank sees per epoch (padded or dropped to an equal share)."""
        return rank_share(len(self.graphs), self.world_size, self.drop_last)

    def __len__(self) -> int:
        return batch_count(self.num_samples, self.batch_size, self.drop_last)

    def indices(self, epoch: int) -> np.ndarray:
        """[num_samples] the graph indices this rank visits in ``epoch``, in order."""
        return rank_order(len(self.graphs), self.seed, epoch, self.shuffle, self.rank, self.world_size,
                          self.num_samples)

    def batches(self, epoch: int, start: int = 0) -> Iterator[Graph]:
        """Yield the batches of ``epoch`` from batch number ``start`` (0-based) on."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        order = self.indices(epoch)
        for b in range(start, len(self)):
            chosen = order[b * self.batch_size:(b + 1) * self.batch_size]
            graphs = [self.graphs[int(i)] for i in chosen]
            if self.transform is not None:
                graphs = [self.transform(g) for g in graphs]
            yield Graph.batch(graphs)

    def __iter__(self) -> Iterator[Graph]:
        return self.batches(self.epoch)
