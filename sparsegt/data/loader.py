"""`DataLoader`: seeded, resumable, shardable batching of graphs into one `Graph` per step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from ..graph import Graph

__all__ = ["DataLoader"]


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
        n = len(self.graphs)
        if self.world_size == 1:
            return n
        return n // self.world_size if self.drop_last else math.ceil(n / self.world_size)

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def indices(self, epoch: int) -> np.ndarray:
        """[num_samples] the graph indices this rank visits in ``epoch``, in order."""
        n = len(self.graphs)
        order = (np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        total = self.num_samples * self.world_size
        if total > n:  # pad by repeating from the start (wrapping if the padding exceeds n)
            order = np.concatenate([order, np.resize(order, total - n)])
        return order[:total][self.rank::self.world_size]

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
