"""User data: folder formats (npz, CSV), PyG and networkx inputs, errors naming file, graph and field."""

import json

import networkx as nx
import numpy as np
import pytest
import torch

from sparsegt import Graph
from sparsegt.data import from_graphs, from_networkx, from_pyg, load_dataset, load_folder, save_folder


def same_graph(a, b):
    """Same pattern, features and labels (the folder format carries x, edge_attr and y only)."""
    return (torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x)
            and torch.equal(a.edge_attr, b.edge_attr) and torch.equal(a.y, b.y))


@pytest.mark.parametrize("name,options", [
    ("relay", {"num_train": 6, "num_val": 2, "num_test": 2, "num_nodes": 9}),
    ("reachability", {"num_train": 6, "num_val": 2, "num_test": 2}),
])
def test_npz_folder_roundtrip(tmp_path, name, options):
    original = load_dataset(name, root=tmp_path / "cache", **options)
    folder = save_folder(original, tmp_path / "data")
    with np.load(folder / "graphs.npz", allow_pickle=False) as npz:
        assert {"num_nodes", "num_edges", "edge_index", "split"} <= set(npz.files)
    loaded = load_folder(folder)
    for a, b in zip(original.train + original.val + original.test, loaded.train + loaded.val + loaded.test,
                    strict=True):
        assert same_graph(a, b)
    assert loaded.task.level == original.task.level and loaded.task.metric == original.task.metric
    assert loaded.node_features.kind == "categorical"


def write_csv(folder, graphs, edges, nodes=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "graphs.csv").write_text(graphs)
    (folder / "edges.csv").write_text(edges)
    if nodes is not None:
        (folder / "nodes.csv").write_text(nodes)
    return folder


GRAPHS = "graph,split,y\n0,train,1\n1,val,0\n2,test,1\n"
EDGES = "graph,source,target,bond\n0,0,1,1\n0,1,0,1\n1,0,2,2\n1,2,0,2\n2,1,0,3\n"
NODES = "graph,node,f0,f1\n0,0,1,0.5\n0,1,2,1.5\n1,0,0,0\n1,1,1,0\n1,2,0,1\n2,0,1,1\n2,1,1,1\n"


def test_csv_folder(tmp_path):
    d = load_folder(write_csv(tmp_path / "csv", GRAPHS, EDGES, NODES))
    assert (len(d.train), len(d.val), len(d.test)) == (1, 1, 1)
    g = d.val[0]
    assert g.num_nodes == 3 and g.num_edges == 2
    assert g.x.dtype == torch.float32 and g.x.shape == (3, 2)  # a float column makes features continuous
    assert int(g.y) == 0 and g.edge_attr.tolist() == [[2], [2]]
    assert d.task.kind == "binary" and d.task.level == "graph"
    (tmp_path / "csv" / "meta.json").write_text(json.dumps({"metric": "roc_auc", "name": "toy"}))
    d = load_folder(tmp_path / "csv")
    assert d.name == "toy" and d.task.metric == "roc_auc"
    no_nodes = load_folder(write_csv(tmp_path / "bare", GRAPHS, EDGES))
    assert [g.num_nodes for g in no_nodes.train + no_nodes.val + no_nodes.test] == [2, 3, 2]


@pytest.mark.parametrize("edges,nodes,graphs,words", [
    ("graph,source,target\n0,0,1\n1,0,7\n", NODES, GRAPHS, ["edges.csv", "graph 1", "'target'"]),
    ("graph,source,target\n0,0,1\n", NODES, "graph,split,y\n0,train,1\n1,holdout,0\n2,test,1\n",
     ["graphs.csv", "graph 1", "'split'"]),
    ("graph,source,target\n0,0,1\n", NODES.replace("1,2,0,1", "1,2,nan,1"), GRAPHS,
     ["nodes.csv", "graph 1", "'x'"]),
    ("graph,source,target\n0,0,1\n", NODES.replace("1,2,0,1", "1,4,0,1"), GRAPHS,
     ["nodes.csv", "graph 1", "'node'"]),
    ("graph,src,target\n0,0,1\n", NODES, GRAPHS, ["edges.csv", "'source'"]),
    ("graph,source,target\n0,0,x\n", NODES, GRAPHS, ["edges.csv", "not a number"]),
])
def test_malformed_csv_names_file_graph_and_field(tmp_path, edges, nodes, graphs, words):
    folder = write_csv(tmp_path / "bad", graphs, edges, nodes)
    with pytest.raises(ValueError) as info:
        load_folder(folder)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_malformed_npz_names_file_graph_and_field(tmp_path):
    good = {"num_nodes": np.array([2, 3]), "num_edges": np.array([2, 1]),
            "edge_index": np.array([[0, 1, 2], [1, 0, 0]]), "split": np.array([0, 2]),
            "graph_y": np.array([0.5, 1.5]), "x": np.zeros((5, 1), np.float32)}
    folder = tmp_path / "npz"
    folder.mkdir()
    np.savez(folder / "graphs.npz", **good)
    d = load_folder(folder)
    assert d.task.kind == "regression" and d.train[0].y.shape == (1, 1)
    cases = [({"edge_index": np.array([[0, 1, 5], [1, 0, 0]])}, ["graphs.npz", "graph 1", "edge_index[0]"]),
             ({"x": np.array([[0.0], [1.0], [np.nan], [0.0], [0.0]], np.float32)},
              ["graphs.npz", "graph 1", "'x'"]),
             ({"x": np.zeros((4, 1))}, ["graphs.npz", "'x'", "5 nodes"]),
             ({"split": np.array([0, 5])}, ["graphs.npz", "'split'"])]
    for change, words in cases:
        np.savez(folder / "graphs.npz", **{**good, **change})
        with pytest.raises(ValueError) as info:
            load_folder(folder)
        for word in words:
            assert word in str(info.value), (word, str(info.value))
    np.savez(folder / "graphs.npz", **{k: v for k, v in good.items() if k != "num_edges"})
    with pytest.raises(ValueError, match="num_edges"):
        load_folder(folder)
    with pytest.raises(ValueError, match="neither"):
        load_folder(tmp_path)


def test_from_pyg_list_and_in_memory_dataset():
    pyg = pytest.importorskip("torch_geometric")
    from torch_geometric.data import Data
    from torch_geometric.datasets import FakeDataset

    data = [Data(x=torch.randn(3, 4), edge_index=torch.tensor([[0, 1], [1, 2]]), y=torch.tensor([i % 2]))
            for i in range(10)]
    d = from_pyg(data, splits=[list(range(6)), [6, 7], [8, 9]])
    assert (len(d.train), len(d.val), len(d.test)) == (6, 2, 2)
    assert d.node_features.kind == "continuous" and d.node_features.dim == 4
    assert d.task.kind == "binary"
    fake = FakeDataset(num_graphs=12, avg_num_nodes=8, num_channels=3, edge_dim=2, num_classes=3)
    assert isinstance(fake, pyg.data.InMemoryDataset)
    d = from_pyg(fake, seed=1)
    assert len(d) == 12 and d.task.level == "graph"
    first = fake[int(np.random.default_rng(1).permutation(12)[0])]
    assert d.train[0].num_edges == first.num_edges


def test_from_networkx():
    graphs = [nx.path_graph(n) for n in (3, 4, 5, 6)]
    for g in graphs:
        nx.set_node_attributes(g, {v: v % 2 for v in g.nodes}, "parity")
        nx.set_node_attributes(g, {v: float(v) for v in g.nodes}, "position")
    d = from_networkx(graphs, node_label="parity", node_attrs=["position"], splits=[0, 0, 1, 2])
    assert d.task.level == "node" and len(d.train) == 2
    assert d.train[1].y.tolist() == [0, 1, 0, 1] and d.train[1].num_edges == 6
    d = from_networkx(graphs, labels=[0.5, 1.0, 1.5, 2.0], splits=[0, 0, 1, 2])
    assert d.task.kind == "regression" and d.train[0].y.shape == (1, 1)
    with pytest.raises(ValueError, match="exactly one"):
        from_networkx(graphs)
    with pytest.raises(ValueError, match="graph 0"):
        from_networkx(graphs, node_label="colour")


ATOMS = "graph,node,atom\n0,0,1\n0,1,2\n1,0,0\n1,1,1\n1,2,0\n2,0,1\n2,1,1\n"


@pytest.mark.parametrize("graphs,edges,nodes,words", [
    # issue #14.8: sizes that would exhaust memory are named errors before anything is allocated
    (GRAPHS, "graph,source,target\n0,0,68719476736\n1,0,1\n2,0,1\n", None,
     ["edges.csv", "line 2", "graph 0", "68,719,476,736", "nodes.csv"]),
    ("graph,split,y\n0,train,1000000000\n1,val,0\n2,test,1\n", EDGES, None,
     ["graphs.csv", "line 2", "'y'", "class id 1,000,000,000", "number them"]),
    (GRAPHS, EDGES, ATOMS.replace("2,1,1\n", "2,1,1000000000\n"),
     ["nodes.csv", "line 8", "'atom'", "category id 1,000,000,000"]),
    # issue #14.11: careless data
    (GRAPHS, EDGES.replace("1,2,0,2", "1,2.5,0,2"), None, ["edges.csv", "line 5", "'source'", "'2.5'", "integer"]),
    ("graph,split,y\n0,train,1\n1.0,val,0\n2.7,test,1\n", EDGES, None, ["graphs.csv", "line 4", "'graph'", "'2.7'"]),
    ("graph,split,y\n0,train,1\n1,val,-1\n2,test,1\n", EDGES, None, ["graphs.csv", "line 3", "'y'", "negative"]),
    (GRAPHS, EDGES, "graph,node,y\n0,0,1\n0,1,0\n1,0,0\n1,1,1\n1,2,0\n2,0,1\n2,1,1\n",
     ["graphs.csv and nodes.csv", "'y'", "one level"]),
    (GRAPHS + "3,train,0\n", EDGES, None, ["graphs.csv", "line 5", "graph 3", "no nodes", "nodes.csv"]),
    (GRAPHS + "3,train,0\n", EDGES, ATOMS, ["graphs.csv", "line 5", "graph 3", "no nodes", "no row in nodes.csv"]),
    (GRAPHS, "graph,source,target\n0,0,1\n9,0,1\n", None, ["edges.csv", "line 3", "'graph'", "graph id 9"]),
    (GRAPHS, EDGES, ATOMS.replace("1,2,0\n", "-1,2,0\n"), ["nodes.csv", "line 6", "'graph'", "graph id -1"]),
    (GRAPHS, "graph,source,target\n0,0,1\n\n1,0,1,5\n", None, ["edges.csv", "line 4", "4 values"]),
], ids=["node-id-2^36", "class-1e9", "category-1e9", "float-node-id", "float-graph-id", "class-minus-1",
        "graph-and-node-y", "zero-nodes", "zero-nodes-with-nodes-csv", "edge-graph-id", "node-graph-id", "row-length"])
def test_hostile_or_careless_csv_is_a_named_error(tmp_path, graphs, edges, nodes, words):
    folder = write_csv(tmp_path / "bad", graphs, edges, nodes)
    with pytest.raises(ValueError) as info:
        load_folder(folder)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_csv_with_byte_order_marks_and_whole_float_ids(tmp_path):
    """Spreadsheet exports: a UTF-8 BOM before the header, ids written as 1.0 (issue #14.11)."""
    folder = tmp_path / "bom"
    folder.mkdir()
    for name, text in (("graphs.csv", GRAPHS), ("edges.csv", EDGES.replace("1,0,2,2", "1.0,0,2.0,2")),
                       ("nodes.csv", NODES)):
        (folder / name).write_text(text, encoding="utf-8-sig")
    assert (folder / "graphs.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    d = load_folder(folder)
    plain = load_folder(write_csv(tmp_path / "plain", GRAPHS, EDGES, NODES))
    for a, b in zip(d.train + d.val + d.test, plain.train + plain.val + plain.test, strict=True):
        assert same_graph(a, b)


def test_hostile_or_careless_npz_is_a_named_error(tmp_path):
    good = {"num_nodes": np.array([2, 3]), "num_edges": np.array([2, 1]),
            "edge_index": np.array([[0, 1, 2], [1, 0, 0]]), "split": np.array([0, 2]),
            "graph_y": np.array([0, 1])}
    folder = tmp_path / "npz"
    folder.mkdir()
    cases = [  # issue #14.8 then #14.11
        ({"num_nodes": np.array([2, 2**36])}, ["graphs.npz", "graph 1", "'num_nodes'", "68,719,476,736"]),
        ({"graph_y": np.array([0, 10**9])}, ["graphs.npz", "row 1", "'graph_y'", "class id 1,000,000,000"]),
        ({"x": np.array([[0], [1], [2], [10**9], [0]])}, ["graphs.npz", "row 3", "'x'", "category id"]),
        ({"edge_index": np.array([[0, 1, 2], [1, 0.5, 0]])}, ["graphs.npz", "'edge_index'", "0.5", "whole number"]),
        ({"graph_y": np.array([0, -1])}, ["graphs.npz", "row 1", "'graph_y'", "negative"]),
        ({"node_y": np.zeros(5, np.int64)}, ["graphs.npz", "node_y/graph_y", "one level"]),
        ({"num_nodes": np.array([2, 0]), "num_edges": np.array([3, 0])}, ["graphs.npz", "graph 1", "no nodes"]),
    ]
    for change, words in cases:
        np.savez(folder / "graphs.npz", **{**good, **change})
        with pytest.raises(ValueError) as info:
            load_folder(folder)
        for word in words:
            assert word in str(info.value), (word, str(info.value))
    (folder / "graphs.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match="graphs.npz: cannot be read"):
        load_folder(folder)


def test_graph_inputs_are_checked_like_files():
    """PyG / networkx / Graph lists meet the same rules, naming the graph (issue #14.11)."""
    graphs = [nx.path_graph(3), nx.path_graph(4), nx.path_graph(2), nx.Graph()]
    with pytest.raises(ValueError, match="networkx: graph 3 has no nodes"):
        from_networkx(graphs, labels=[0, 1, 0, 1], splits=[0, 1, 2, 0])
    with pytest.raises(ValueError, match="graph 1, field 'y': class id -1 is negative"):
        from_networkx(graphs[:3], labels=[0, -1, 1], splits=[0, 1, 2])
    with pytest.raises(ValueError, match="graph 2, field 'y': class id 1,000,000,000 would make"):
        from_networkx(graphs[:3], labels=[0, 1, 10**9], splits=[0, 1, 2])
    d = from_networkx(graphs[:3], labels=[0.5, -1.0, 1.0], splits=[0, 1, 2])  # regression targets may be negative
    assert d.task.kind == "regression"
    two_levels = Graph.from_edge_index(torch.tensor([[0, 1], [1, 0]]), 2, node_data={"y": torch.tensor([0, 1])},
                                       graph_data={"y": torch.tensor([1])})
    with pytest.raises(ValueError, match="graph 0 has node labels and graph labels"):
        from_graphs([two_levels] * 3, [0, 1, 2])
