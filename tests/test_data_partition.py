"""Partitioned seeds for distributed sampling: METIS parts (pymetis) or contiguous runs, and the loader's use."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsegt.data.neighbor_loader import NeighborLoader
from sparsegt.data.node_splits import split_views
from sparsegt.data.partition import partition_seeds
from sparsegt.graph import Graph


def two_cliques(size: int = 10) -> Graph:
    """Two cliques joined by one edge; ids interleaved so that an id split cuts both cliques."""
    left, right = np.arange(0, 2 * size, 2), np.arange(1, 2 * size, 2)
    pairs = [(a, b) for group in (left, right) for a in group for b in group if a != b]
    pairs += [(int(left[0]), int(right[0])), (int(right[0]), int(left[0]))]
    return Graph.from_edge_index(torch.tensor(pairs).T, 2 * size)


def test_contiguous_parts_cover_the_seeds_once():
    graph = two_cliques()
    seeds = np.array([7, 3, 11, 0, 19, 4, 8])
    parts = partition_seeds(graph, seeds, 3, "contiguous")
    assert [p.tolist() for p in parts] == [[0, 3, 4], [7, 8], [11, 19]]
    with pytest.raises(ValueError, match="cannot split 2 seed nodes into 3 parts"):
        partition_seeds(graph, np.array([1, 2]), 3, "contiguous")
    with pytest.raises(ValueError, match="partition method"):
        partition_seeds(graph, seeds, 2, "spectral")


def test_metis_parts_follow_the_graph():
    pytest.importorskip("pymetis")
    graph = two_cliques()
    parts = partition_seeds(graph, np.arange(20), 2, "metis")
    assert sorted(np.concatenate(parts).tolist()) == list(range(20))
    # each part is one clique (all even or all odd ids), which an id split would cut in halves
    assert sorted(np.unique(p % 2).tolist() for p in parts) == [[0], [1]]


def test_metis_without_pymetis_falls_back_with_a_notice(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pymetis(name, *args, **kwargs):
        if name == "pymetis":
            raise ImportError("No module named 'pymetis'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pymetis)
    with pytest.warns(UserWarning, match="needs pymetis"):
        parts = partition_seeds(two_cliques(), np.arange(20), 2, "metis")
    assert [p.tolist() for p in parts] == [list(range(10)), list(range(10, 20))]


@pytest.mark.parametrize("method", ["metis", "contiguous"])
def test_loader_ranks_draw_from_disjoint_parts(method):
    if method == "metis":
        pytest.importorskip("pymetis")
    graph = two_cliques(size=12)
    split = np.zeros(24, dtype=np.int8)
    split[[5, 6]] = 1  # two validation nodes; the other 22 train
    train, _, _ = split_views(graph, split)
    loaders = [NeighborLoader([train], 4, fanouts=[3], shuffle=True, rank=r, world_size=2, partition=method)
               for r in range(2)]
    parts = [set(p.tolist()) for p in loaders[0].parts]
    assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == set(np.flatnonzero(split == 0).tolist())
    assert len(loaders[0]) == len(loaders[1])  # the same number of steps on every rank
    for rank, loader in enumerate(loaders):
        for epoch in range(2):
            seen = loader.indices(epoch)
            assert len(seen) == loader.num_samples and set(seen.tolist()) == parts[rank]
        assert sum(batch.num_nodes > 0 for batch in loader.batches(0)) == len(loader)
    assert not np.array_equal(loaders[0].indices(0), loaders[0].indices(1))  # reshuffled per epoch
