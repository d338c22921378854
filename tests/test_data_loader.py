"""DataLoader: seeded order, resumable epochs, disjoint equal shards, correct collation."""

import pytest
import torch

from sparsegt import Graph
from sparsegt.data import DataLoader


def make_graphs(count):
    graphs = []
    for i in range(count):
        n = 2 + i % 3
        src = torch.arange(n - 1)
        edge_index = torch.stack([torch.cat([src, src + 1]), torch.cat([src + 1, src])])
        graphs.append(Graph.from_edge_index(edge_index, n, x=torch.full((n, 1), i),
                                            graph_data={"y": torch.tensor([i])}))
    return graphs


def ids(batch):
    return batch.graph_data["y"].tolist()


def test_epoch_covers_every_graph_once_and_collates():
    graphs = make_graphs(10)
    loader = DataLoader(graphs, 4, shuffle=True, seed=1)
    assert len(loader) == 3
    batches = list(loader)
    assert [b.num_graphs for b in batches] == [4, 4, 2]
    assert sorted(i for b in batches for i in ids(b)) == list(range(10))
    for b in batches:
        b.validate()
        expected = Graph.batch([graphs[i] for i in ids(b)])
        assert torch.equal(b.indptr, expected.indptr) and torch.equal(b.indices, expected.indices)
        assert torch.equal(b.x, expected.x)
    assert ids(batches[0]) != [0, 1, 2, 3] or ids(batches[1]) != [4, 5, 6, 7]


def test_order_is_a_pure_function_of_seed_and_epoch():
    graphs = make_graphs(12)
    a = DataLoader(graphs, 3, shuffle=True, seed=7)
    b = DataLoader(graphs, 3, shuffle=True, seed=7)
    assert [ids(x) for x in a.batches(2)] == [ids(x) for x in b.batches(2)]
    assert [ids(x) for x in a.batches(0)] != [ids(x) for x in a.batches(1)]
    assert [ids(x) for x in a.batches(0)] != [ids(x) for x in DataLoader(graphs, 3, shuffle=True, seed=8)]
    assert [ids(x) for x in DataLoader(graphs, 5)] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    a.set_epoch(3)
    assert [ids(x) for x in a] == [ids(x) for x in b.batches(3)]


def test_resume_mid_epoch():
    loader = DataLoader(make_graphs(11), 2, shuffle=True, seed=0)
    full = [ids(x) for x in loader.batches(4)]
    assert [ids(x) for x in loader.batches(4, start=3)] == full[3:]
    assert list(loader.batches(4, start=len(loader))) == []
    with pytest.raises(ValueError):
        list(loader.batches(0, start=-1))


@pytest.mark.parametrize("count,world_size,drop_last",
                         [(10, 3, False), (10, 3, True), (9, 3, False), (2, 4, False)])
def test_shards_are_disjoint_and_equal(count, world_size, drop_last):
    graphs = make_graphs(count)
    loaders = [DataLoader(graphs, 2, shuffle=True, seed=5, rank=r, world_size=world_size, drop_last=drop_last)
               for r in range(world_size)]
    assert len({len(l) for l in loaders}) == 1
    positions = [l.indices(epoch=1) for l in loaders]
    assert len({len(p) for p in positions}) == 1
    seen = [i for l in loaders for b in l.batches(1) for i in ids(b)]
    if drop_last:
        assert len(set(seen)) == len(seen)  # the tail is dropped, nothing repeats
        assert len(seen) == (count // world_size) // 2 * 2 * world_size
    else:
        assert set(seen) == set(range(count))  # padded by repeating: every graph is seen
        assert len(seen) == -(-count // world_size) * world_size


def test_drop_last_and_transform():
    graphs = make_graphs(7)
    assert len(DataLoader(graphs, 3, drop_last=True)) == 2
    assert [b.num_graphs for b in DataLoader(graphs, 3, drop_last=True)] == [3, 3]
    doubled = DataLoader(graphs, 7, transform=lambda g: g.with_data(node_data={"x": g.x * 2}))
    assert torch.equal(next(iter(doubled)).x, torch.cat([g.x for g in graphs]) * 2)


def test_bad_arguments():
    graphs = make_graphs(3)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(graphs, 0)
    with pytest.raises(ValueError, match="rank"):
        DataLoader(graphs, 1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="at least one graph"):
        DataLoader([], 1)
