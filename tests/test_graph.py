import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given

from sparsegt import Graph

from .strategies import patterns


def small_graph():
    # keys (sources) in row 0, queries (targets) in row 1
    edge_index = torch.tensor([[1, 0, 2, 2, 0], [0, 1, 1, 0, 2]])
    edge_attr = torch.arange(5, dtype=torch.float32)[:, None]
    return Graph.from_edge_index(edge_index, 4, edge_attr, x=torch.randn(4, 3), y=torch.tensor([0, 1, 1, 0]))


def test_from_edge_index_sorts_into_csr_and_carries_edge_features():
    g = small_graph()
    assert g.indptr.tolist() == [0, 2, 4, 5, 5]
    assert g.indices.tolist() == [1, 2, 0, 2, 0]
    # edge (key 2 -> query 0) was edge 3, (key 0 -> query 1) edge 1: features moved with them
    assert g.edge_attr.flatten().tolist() == [0.0, 3.0, 1.0, 2.0, 4.0]
    assert g.degree().tolist() == [2, 2, 1, 0]
    assert g.degree("col").tolist() == [2, 1, 2, 0]
    assert g.node_data["y"].shape == (4,)


def test_self_loops_and_duplicates():
    edge_index = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0]])
    g = Graph.from_edge_index(edge_index, 3, torch.ones(4, 2), add_self_loops=True, remove_duplicates=True)
    assert g.to_edge_index().t().tolist() == [[0, 0], [1, 0], [0, 1], [1, 1], [2, 2]]
    # the missing loops get zero features, the existing loop (1,1) keeps its own
    assert g.edge_attr[:, 0].tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("edge_index, num_nodes, message", [
    (torch.tensor([[0, 1], [1, 300]]), 250, r"edge_index\[1, 1\] = 300 but the graph has 250 nodes"),
    (torch.tensor([[0, -2], [1, 0]]), 3, r"edge_index\[0, 1\] = -2 is negative"),
    (torch.tensor([0, 1, 2]), 3, r"shape \[2, E\]"),
    (torch.tensor([[0.0, 1.0], [1.0, 0.0]]), 3, "must hold integers"),
])
def test_bad_edge_index_is_a_clear_error(edge_index, num_nodes, message):
    with pytest.raises(ValueError, match=message):
        Graph.from_edge_index(edge_index, num_nodes)


def test_bad_features_and_csr_are_clear_errors():
    ei = torch.tensor([[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"x\[1, 2\] = nan"):
        x = torch.zeros(2, 3)
        x[1, 2] = float("nan")
        Graph.from_edge_index(ei, 2, x=x)
    with pytest.raises(ValueError, match=r"edge_attr\[0, 0\] = inf"):
        Graph.from_edge_index(ei, 2, torch.tensor([[float("inf")], [0.0]]))
    with pytest.raises(ValueError, match="edge_attr has 3 rows but edge_index has 2 edges"):
        Graph.from_edge_index(ei, 2, torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"x has shape \(3, 1\) but the graph has 2 nodes"):
        Graph.from_edge_index(ei, 2, x=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="indptr must be int64"):
        Graph(torch.tensor([0, 1], dtype=torch.int32), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"indices\[1\] = 5 but the pattern has 2 columns"):
        Graph(torch.tensor([0, 1, 2]), torch.tensor([0, 5]))
    with pytest.raises(ValueError, match=r"indptr\[-1\] = 3 but indices has 2 entries"):
        Graph(torch.tensor([0, 1, 3]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="non-decreasing"):
        Graph(torch.tensor([0, 2, 1, 2]), torch.tensor([0, 1]))


def test_empty_graphs_are_legal():
    for g in (Graph.empty(0), Graph.empty(5), Graph.from_edge_index(torch.zeros(2, 0, dtype=torch.long), 3)):
        assert g.num_edges == 0
        assert g.to_scipy().nnz == 0
        assert Graph.batch([g, g]).num_nodes == 2 * g.num_nodes


@given(patterns())
def test_round_trips(g):
    e = Graph.from_edge_index(g.to_edge_index(), g.num_nodes, num_cols=g.num_cols)
    assert torch.equal(e.indptr, g.indptr) and torch.equal(e.indices, g.indices)
    s = Graph.from_scipy(g.to_scipy())
    assert torch.equal(s.indptr, g.indptr)
    # scipy keeps duplicates only as separate entries; compare multisets of (row, col)
    assert sorted(zip(s.row_index().tolist(), s.indices.tolist())) == sorted(
        zip(g.row_index().tolist(), g.indices.tolist()))
    t = g.transpose().transpose()
    assert torch.equal(t.indptr, g.indptr) and torch.equal(t.indices, g.indices)


def test_scipy_and_networkx_round_trip_with_values():
    m = sp.random(6, 4, density=0.5, random_state=0, format="csr")
    g = Graph.from_scipy(m)
    assert g.num_cols == 4
    np.testing.assert_allclose(g.to_scipy(g.edge_data["edge_weight"]).toarray(), m.toarray())
    nxg = nx.karate_club_graph()
    g = Graph.from_networkx(nxg, edge_attrs=["weight"])
    assert g.num_edges == 2 * nxg.number_of_edges()
    back = g.to_networkx()
    assert back.number_of_edges() == g.num_edges
    assert nx.is_isomorphic(nx.Graph(back), nxg)


def test_pyg_round_trip():
    pyg = pytest.importorskip("torch_geometric")
    from torch_geometric.data import Batch, Data

    g = small_graph()
    data = g.to_pyg()
    assert isinstance(data, Data)
    back = Graph.from_pyg(data)
    assert torch.equal(back.indptr, g.indptr) and torch.equal(back.edge_attr, g.edge_attr)
    assert torch.equal(back.x, g.x) and torch.equal(back.y, g.y)
    batch = Batch.from_data_list([data, data])
    gb = Graph.from_pyg(batch)
    assert gb.num_graphs == 2 and gb.num_nodes == 8
    assert pyg.__version__


def test_batch_unbatch_and_transpose():
    a = small_graph()
    b = Graph.from_edge_index(torch.tensor([[0], [1]]), 2, torch.ones(1, 1), x=torch.randn(2, 3),
                              y=torch.tensor([1, 1]))
    batch = Graph.batch([a, b, Graph.empty(0, x=torch.zeros(0, 3), edge_attr=torch.zeros(0, 1),
                                            y=torch.zeros(0, dtype=torch.long), y_level="node")])
    assert batch.num_graphs == 3 and batch.num_nodes == 6 and batch.num_edges == 6
    assert batch.batch_index.tolist() == [0, 0, 0, 0, 1, 1]
    assert batch.indices[-1].item() == 4  # b's key 0 moved behind a's 4 nodes
    parts = batch.unbatch()
    for original, part in zip([a, b], parts):
        assert torch.equal(part.indptr, original.indptr) and torch.equal(part.indices, original.indices)
        assert torch.equal(part.x, original.x) and torch.equal(part.edge_attr, original.edge_attr)
    t = a.transpose()
    assert t.num_nodes == a.num_cols
    assert sorted(zip(t.indices.tolist(), t.row_index().tolist())) == sorted(
        zip(a.row_index().tolist(), a.indices.tolist()))
    bt = batch.transpose()
    assert bt.ptr.tolist() == batch.col_ptr.tolist()


def test_graph_level_labels_batch():
    gs = [Graph.from_edge_index(torch.tensor([[0], [1]]), 2, y=torch.tensor([[0.5]]), y_level="graph")
          for _ in range(3)]
    batch = Graph.batch(gs)
    assert batch.graph_data["y"].shape == (3, 1)
    assert [p.graph_data["y"].item() for p in batch.unbatch()] == [0.5, 0.5, 0.5]


def test_hostile_sizes_and_counts_are_named_errors():
    """An index of 2**40 without num_nodes would allocate 8.8 TB for indptr (issue #14.8); counts that are not
    non-negative integers were TypeErrors or torch errors from deep inside (issue #14.9)."""
    with pytest.raises(ValueError, match="1,099,511,627,777 nodes would be allocated for 1 edges.*pass num_nodes"):
        Graph.from_edge_index(torch.tensor([[0], [2**40]]))
    assert Graph.from_edge_index(torch.tensor([[0], [5000]])).num_nodes == 5001  # isolated nodes below the limit
    zero = torch.zeros(2, 0, dtype=torch.long)
    for bad, message in ((-1, "num_nodes must be >= 0, got -1"), (2.5, r"num_nodes must be an integer >= 0, got 2.5"),
                         (True, "num_nodes must be an integer")):
        with pytest.raises(ValueError, match=message):
            Graph.from_edge_index(zero, bad)
        with pytest.raises(ValueError, match=message):
            Graph.empty(bad)
    with pytest.raises(ValueError, match="num_cols must be an integer >= 0, got 1.5"):
        Graph(torch.tensor([0, 0]), torch.zeros(0, dtype=torch.long), 1.5)
    assert Graph.empty(np.int64(3), torch.tensor(4)).num_cols == 4
