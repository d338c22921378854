"""`Graph.from_pyg` on a whole PyG batch (one vectorised pass) equals the per-graph conversion + `Graph.batch`."""

import pytest
import torch

from sparsegt import Graph
from sparsegt.graph import ptr_from_batch

pytest.importorskip("torch_geometric")
from torch_geometric.data import Batch, Data  # noqa: E402


def random_data(generator: torch.Generator, num_nodes: int, num_edges: int, node_label: bool) -> Data:
    """A PyG graph with shuffled (unsorted) edges, duplicates possible, isolated nodes likely."""
    if num_nodes == 0:
        num_edges = 0
    edge_index = torch.randint(0, max(num_nodes, 1), (2, num_edges), generator=generator)
    y = (torch.randint(0, 3, (num_nodes,), generator=generator) if node_label
         else torch.randn(1, 2, generator=generator, dtype=torch.float64))
    return Data(x=torch.randn(num_nodes, 3, generator=generator, dtype=torch.float64), edge_index=edge_index,
                edge_attr=torch.randn(num_edges, 4, generator=generator, dtype=torch.float64),
                edge_weight=torch.rand(num_edges, generator=generator, dtype=torch.float64),
                pos=torch.randn(num_nodes, 2, generator=generator), y=y, num_nodes=num_nodes)


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert (a.num_nodes, a.num_cols, a.num_graphs) == (b.num_nodes, b.num_cols, b.num_graphs)
    for name in ("indptr", "indices", "ptr", "col_ptr", "edge_ptr"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for store in ("node_data", "edge_data", "graph_data"):
        sa, sb = getattr(a, store), getattr(b, store)
        assert sorted(sa) == sorted(sb), store
        for name in sa:
            assert sa[name].dtype == sb[name].dtype and torch.equal(sa[name], sb[name]), (store, name)


def per_graph(batch: Batch) -> Graph:
    return Graph.batch([Graph.from_pyg(d) for d in batch.to_data_list()])


@pytest.mark.parametrize("seed", range(6))
def test_batch_conversion_equals_per_graph_conversion(seed):
    generator = torch.Generator().manual_seed(seed)
    sizes = [int(n) for n in torch.randint(0, 9, (12,), generator=generator)]
    sizes[seed % len(sizes)] = 1            # a single-node graph
    sizes[(seed + 3) % len(sizes)] = 5      # a graph with nodes and no edges
    graphs = [random_data(generator, n, 0 if i == (seed + 3) % len(sizes) else 2 * n, node_label=False)
              for i, n in enumerate(sizes)]
    batch = Batch.from_data_list(graphs)
    converted = Graph.from_pyg(batch)
    assert_same_graph(converted, per_graph(batch))
    assert converted.graph_data["y"].shape == (len(sizes), 2)


def test_node_labels_and_edge_features_stay_with_their_edges():
    generator = torch.Generator().manual_seed(7)
    graphs = [random_data(generator, n, 3 * n, node_label=True) for n in (4, 0, 6, 3, 2)]
    batch = Batch.from_data_list(graphs)
    # mark each edge's features with its own (key, query, position) to check the permutation
    batch.edge_attr = torch.cat([batch.edge_index.t().double(), torch.arange(batch.num_edges)[:, None].double()], 1)
    converted = Graph.from_pyg(batch)
    assert_same_graph(converted, per_graph(batch))
    assert torch.equal(converted.edge_attr[:, 0].long(), converted.indices)
    assert torch.equal(converted.edge_attr[:, 1].long(), converted.row_index())
    assert torch.equal(converted.edge_data["edge_weight"], batch.edge_weight[converted.edge_attr[:, 2].long()])
    assert torch.equal(converted.node_data["y"], batch.y)


def test_node_labels_with_a_single_node_graph_stay_node_labels():
    # all graphs but one have one node: the batch's slices say y is per node (graph by graph the
    # single-node graphs would look graph-level, and the per-graph path cannot batch them)
    generator = torch.Generator().manual_seed(3)
    batch = Batch.from_data_list([random_data(generator, n, n, node_label=True) for n in (1, 3, 1)])
    converted = Graph.from_pyg(batch)
    assert torch.equal(converted.node_data["y"], batch.y) and "y" not in converted.graph_data
    single = Batch.from_data_list([random_data(generator, 1, 1, node_label=True) for _ in range(3)])
    assert "y" in Graph.from_pyg(single).graph_data  # one node per graph: as the per-graph rule, graph-level


def test_scalar_graph_labels_and_a_batch_vector_without_ptr():
    data = [Data(x=torch.ones(n, 1), edge_index=torch.tensor([[0], [n - 1]]), y=torch.tensor(n)) for n in (2, 3)]
    batch = Batch.from_data_list(data)
    converted = Graph.from_pyg(batch)
    assert converted.graph_data["y"].tolist() == [2, 3]
    assert Graph.from_pyg(data[0]).graph_data["y"].tolist() == [2]
    plain = Data(x=batch.x, edge_index=batch.edge_index, batch=batch.batch, y=batch.y)  # no ptr, no slices
    assert_same_graph(Graph.from_pyg(plain), converted)


@pytest.mark.parametrize("change, message", [
    (lambda b: setattr(b, "edge_index", torch.tensor([[0, 9], [1, 1]])), r"edge_index\[0, 1\] = 9 is out of range"),
    (lambda b: setattr(b, "edge_index", torch.tensor([[0, 3], [1, 0]])), r"edge_index\[:, 1\] = \(3, 0\) joins graph 1 "
                                                                        r"and graph 0"),
    (lambda b: setattr(b, "edge_attr", torch.ones(5, 2)), r"edge_attr has shape \(5, 2\) but edge_index has 2 edges"),
    (lambda b: b.edge_attr.__setitem__((1, 0), float("nan")), r"edge_attr\[1\] is not finite \(edge 1 \(graph 1\)\)"),
    (lambda b: setattr(b, "x", torch.ones(4, 1)), r"x has shape \(4, 1\) but the graph has 5 nodes"),
    (lambda b: setattr(b, "y", torch.ones(4)), r"y has shape \(4,\)"),
    (lambda b: setattr(b, "edge_index", torch.ones(2, 2)), r"edge_index must hold integers"),
])
def test_batch_conversion_names_the_problem(change, message):
    data = [Data(x=torch.ones(n, 1), edge_index=torch.tensor([[0], [1]]), edge_attr=torch.ones(1, 2),
                 y=torch.tensor([0.0])) for n in (2, 3)]
    batch = Batch.from_data_list(data)
    change(batch)
    with pytest.raises(ValueError, match=message):
        Graph.from_pyg(batch)


def test_ptr_from_batch():
    assert ptr_from_batch(torch.tensor([0, 0, 2, 2, 2])).tolist() == [0, 2, 2, 5]
    assert ptr_from_batch(torch.tensor([0]), num_graphs=3).tolist() == [0, 1, 1, 1]
    assert ptr_from_batch(torch.zeros(0, dtype=torch.long)).tolist() == [0]
    with pytest.raises(ValueError, match=r"batch must be sorted .*batch\[2\] = 0 < batch\[1\] = 1"):
        ptr_from_batch(torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match="num_graphs = 1 but batch names graph 2"):
        ptr_from_batch(torch.tensor([0, 2]), num_graphs=1)
