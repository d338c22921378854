"""A user's folder holding one graph split by nodes (graph.npz, or nodes.csv + edges.csv): reading, training from
the command line's ``data.name=folder``, and one named error per malformed file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsegt.data import load_dataset, load_folder
from sparsegt.data.spec import TARGET_MASK
from sparsegt.train.config import RunConfig, apply_overrides
from sparsegt.train.run import train_run

NODES = "node,split,f0,y\n0,train,0.5,1\n1,train,1.5,0\n2,val,0.0,1\n3,test,2.0,0\n4,,1.0,\n5,none,0.0,2\n"
EDGES = "source,target,w\n0,1,1\n1,0,1\n1,2,2\n2,1,2\n3,4,1\n4,5,1\n"


def write(folder, **files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name.replace("_", ".")).write_text(text)
    return folder


def graph_npz(folder, **change):
    arrays = {"edge_index": np.array([[0, 1, 1, 2, 3], [1, 0, 2, 1, 4]]), "y": np.array([1, 0, 1, 0, -1]),
              "split": np.array([0, 0, 1, 2, -1]), "x": np.arange(10, dtype=np.float32).reshape(5, 2),
              "edge_attr": np.array([0, 1, 1, 0, 1])}
    arrays = {k: v for k, v in {**arrays, **change}.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "graph.npz", **arrays)
    return folder


def test_csv_one_graph_folder(tmp_path):
    d = load_folder(write(tmp_path / "csv", nodes_csv=NODES, edges_csv=EDGES))
    g = d.train[0]
    assert g.num_nodes == 6 and g.num_edges == 6 and g.x.shape == (6, 1) and g.edge_attr.shape == (6, 1)
    # node 5's label 2 is in no split: ignored, so two classes remain
    assert d.task.level == "node" and d.task.kind == "binary" and d.task.num_outputs == 1
    masks = [s[0].node_data[TARGET_MASK].tolist() for s in (d.train, d.val, d.test)]
    assert masks[0] == [True, True, False, False, False, False] and masks[1][2] and masks[2][3]
    assert g.y.tolist()[4] == 0  # no split, no label: stored as 0 and never scored


def test_npz_one_graph_folder_with_split_or_masks(tmp_path):
    d = load_folder(graph_npz(tmp_path / "a"))
    assert d.task.kind == "binary" and d.train[0].node_data[TARGET_MASK].tolist() == [True, True, False, False, False]
    masks = {"split": None, "train_mask": np.array([1, 1, 0, 0, 0], bool), "val_mask": np.array([0, 0, 1, 0, 0], bool),
             "test_mask": np.array([0, 0, 0, 1, 0], bool)}
    e = load_folder(graph_npz(tmp_path / "b", **masks))
    for s in ("train", "val", "test"):
        assert torch.equal(getattr(d, s)[0].node_data[TARGET_MASK], getattr(e, s)[0].node_data[TARGET_MASK])


def test_sparsegt_train_data_name_folder(tmp_path):
    folder = graph_npz(tmp_path / "mine")
    config = apply_overrides(RunConfig(), ["data.name=folder", f"data.root={folder}", "model.layer=gine",
                                           "model.num_layers=1", "model.hidden=4", "train.epochs=1",
                                           f"out_dir={tmp_path / 'runs'}", "train.chance_check_epochs=0"])
    assert train_run(config, quiet=True).summary["status"] == "completed"
    with pytest.raises(ValueError, match="data.root=PATH"):
        load_dataset("folder")


@pytest.mark.parametrize("nodes,edges,words", [
    (NODES.replace("3,test", "3,holdout"), EDGES, ["nodes.csv", "line 5", "'split'", "'holdout'", "none"]),
    (NODES.replace("2,val,0.0,1", "2,val,0.0,"), EDGES, ["nodes.csv", "line 4", "'y'", "empty", "split to none"]),
    (NODES.replace("5,none", "7,none"), EDGES, ["nodes.csv", "line 7", "'node'", "0..5"]),
    (NODES.replace("node,split", "node,fold"), EDGES, ["nodes.csv", "'split'", "column missing"]),
    (NODES, EDGES.replace("4,5,1", "4,9,1"), ["edges.csv", "line 7", "'target'", "node id 9", "0..5"]),
    (NODES, EDGES.replace("3,4,1", "3,4.5,1"), ["edges.csv", "line 6", "'target'", "'4.5'", "integer"]),
    (NODES.replace("1,train,1.5,0", "1,train,nan,0"), EDGES, ["nodes.csv", "node 1", "'x'", "NaN"]),
    (NODES.replace("3,test,2.0,0", "3,test,2.0,-1"), EDGES, ["nodes.csv", "line 5", "'y'", "negative"]),
    ("graph,node,split,y\n0,0,train,1\n", EDGES, ["nodes.csv", "'graph'", "graphs.csv"]),
], ids=["split-name", "missing-label", "node-ids", "no-split-column", "edge-target", "float-id", "nan-feature",
        "negative-class", "graph-column"])
def test_malformed_csv_is_a_named_error(tmp_path, nodes, edges, words):
    folder = write(tmp_path / "bad", nodes_csv=nodes, edges_csv=edges)
    with pytest.raises(ValueError) as info:
        load_folder(folder)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


@pytest.mark.parametrize("change,words", [
    ({"split": np.array([0, 0, 1, 5, -1])}, ["graph.npz", "row 3", "'split'", "-1 (none)"]),
    ({"split": np.array([0, 0, 1])}, ["graph.npz", "'split'", "shape (3,)", "5"]),
    ({"split": np.array([0, 0, 0, 2, -1])}, ["no val node"]),
    ({"train_mask": np.ones(5, bool)}, ["graph.npz", "'split'", "either split", "train_mask"]),
    ({"split": None, "train_mask": np.array([1, 1, 0, 0, 0], bool), "val_mask": np.array([0, 1, 1, 0, 0], bool),
      "test_mask": np.zeros(5, bool)}, ["graph.npz", "node 1", "train_mask and val_mask", "disjoint"]),
    ({"edge_index": np.array([[0, 1, 7], [1, 0, 0]]), "edge_attr": None}, ["graph.npz", "edge 2", "edge_index[0]",
                                                                           "node id 7"]),
    ({"edge_index": np.array([[0, 1], [1, 0], [2, 2]])}, ["graph.npz", "'edge_index'", "[2, E]", "transpose"]),
    ({"y": None}, ["graph.npz", "'y'", "missing"]),
    ({"x": np.zeros((4, 2), np.float32)}, ["graph.npz", "'x'", "5 nodes"]),
    ({"x": np.array([[0.0], [np.inf], [0], [0], [0]])}, ["graph.npz", "node 1", "'x'", "NaN or infinite"]),
    ({"y": np.array([1, 0, 10**9, 0, -1])}, ["graph.npz", "row 2", "'y'", "class id 1,000,000,000"]),
    ({"num_nodes": np.array(6)}, ["graph.npz", "'num_nodes'", "y has 5 rows"]),
    ({"graph_y": np.array([1])}, ["graph.npz", "graph_y", "graphs.npz"]),
], ids=["split-value", "split-shape", "no-val", "split-and-masks", "masks-overlap", "edge-id", "edge-index-shape",
        "no-labels", "x-rows", "x-inf", "class-1e9", "num-nodes", "many-graph-fields"])
def test_malformed_npz_is_a_named_error(tmp_path, change, words):
    folder = graph_npz(tmp_path / "bad", **change)
    with pytest.raises(ValueError) as info:
        load_folder(folder)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_torn_npz_and_empty_folder(tmp_path):
    folder = tmp_path / "torn"
    folder.mkdir()
    (folder / "graph.npz").write_bytes(b"PK\x03\x04 torn")
    with pytest.raises(ValueError, match="graph.npz: cannot be read"):
        load_folder(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="one graph"):
        load_folder(tmp_path / "empty")
