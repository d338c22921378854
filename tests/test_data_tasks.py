"""CSL, the algorithmic tasks, the catalog (names, cards) and describe()."""

import dataclasses

import networkx as nx
import numpy as np
import pytest
import torch

from sparsegt.data import dataset_rows, describe, get_card, list_datasets, load_dataset, print_dataset_table
from sparsegt.data.catalog import DATASETS
from sparsegt.data.csl import CSL_SKIPS, csl_graph
from sparsegt.train.metrics import HIGHER_IS_BETTER


def directed_arcs(g, kind):
    """(source, target) pairs whose edge_attr equals ``kind``."""
    mask = g.edge_attr[:, 0] == kind
    return list(zip(g.indices[mask].tolist(), g.row_index()[mask].tolist(), strict=True))


def test_csl_construction_and_folds():
    for skip in (2, 16):
        g = csl_graph(skip)
        assert g.num_nodes == 41 and g.num_edges == 164
        assert torch.all(g.degree() == 4)
        expected = nx.circulant_graph(41, [1, skip])
        assert nx.is_isomorphic(nx.Graph(g.to_networkx().to_undirected()), expected)
    perm = np.random.default_rng(0).permutation(41)
    g = csl_graph(9, perm)
    assert nx.is_isomorphic(nx.Graph(g.to_networkx().to_undirected()), nx.circulant_graph(41, [1, 9]))
    tests = []
    for fold in range(5):
        d = load_dataset("csl", fold=fold)
        assert (len(d.train), len(d.val), len(d.test)) == (90, 30, 30)
        for split, per_class in ((d.train, 9), (d.val, 3), (d.test, 3)):
            counts = torch.bincount(torch.cat([g.y for g in split]), minlength=10)
            assert counts.tolist() == [per_class] * 10
        assert all(torch.all(g.x == 0) for g in d.train)
        tests.append({(int(g.y), tuple(g.indices.tolist())) for g in d.test})
    assert len(set().union(*tests)) == 150, "the 5 test folds partition the 150 graphs"
    assert len(CSL_SKIPS) == 10
    with pytest.raises(ValueError, match="fold"):
        load_dataset("csl", fold=5)


def test_reachability_labels_are_true_and_balanced(tmp_path):
    d = load_dataset("reachability", root=tmp_path, num_train=60, num_val=10, num_test=10, min_nodes=8,
                     max_nodes=20)
    labels = torch.cat([g.y for g in d.train])
    assert int(labels.sum()) == 30
    for g in d.train + d.test:
        g.validate()
        x = g.x[:, 0]
        assert int((x == 1).sum()) == 1 and int((x == 2).sum()) == 1
        source, target = int((x == 1).nonzero()), int((x == 2).nonzero())
        digraph = nx.DiGraph(directed_arcs(g, 0))
        digraph.add_nodes_from(range(g.num_nodes))
        assert nx.is_directed_acyclic_graph(digraph)
        assert sorted(directed_arcs(g, 1)) == sorted((v, u) for u, v in directed_arcs(g, 0))
        reachable = nx.has_path(digraph, source, target)
        assert int(g.y) == int(reachable)
        distance = nx.shortest_path_length(digraph, source, target) if reachable else -1
        assert int(g.graph_data["distance"]) == distance
    assert d.task.kind == "binary" and d.task.metric == "accuracy"
    assert len(load_dataset("reachability", root=tmp_path, num_train=4, num_val=2, num_test=2).train) == 4


def test_relay_label_is_feature_k_steps_ahead(tmp_path):
    k = 5
    d = load_dataset("relay", root=tmp_path, num_train=8, num_val=2, num_test=2, num_nodes=20, k=k,
                     num_classes=3)
    for g in d.train:
        g.validate()
        ahead = dict(directed_arcs(g, 0))  # node -> the next node along the ring
        assert len(ahead) == 20
        for node in range(20):
            walk = node
            for _ in range(k):
                walk = ahead[walk]
            assert int(g.y[node]) == int(g.x[walk, 0])
    assert d.task.level == "node" and d.task.num_outputs == 3
    with pytest.raises(ValueError):
        load_dataset("relay", root=tmp_path, num_nodes=10, k=10)


def test_marker_labels_need_the_marker_and_the_own_value(tmp_path):
    d = load_dataset("marker", root=tmp_path, num_train=12, num_val=3, num_test=4, min_nodes=6, max_nodes=15,
                     num_classes=3)
    assert (len(d.train), len(d.val), len(d.test)) == (12, 3, 4)
    sizes = set()
    for g in [*d.train, *d.val, *d.test]:
        g.validate()
        n = g.num_nodes
        sizes.add(n)
        assert 6 <= n <= 15 and g.num_edges == 2 * n and g.edge_attr is None
        ring = nx.Graph(g.to_networkx().to_undirected())
        assert nx.is_isomorphic(ring, nx.cycle_graph(n)), "one ring through every node"
        marker_value, own = g.x[:, 0], g.x[:, 1]
        [marker] = marker_value.nonzero().flatten().tolist()
        assert 1 <= int(marker_value[marker]) <= 3 and 0 <= int(own.min()) and int(own.max()) < 3
        hops = nx.single_source_shortest_path_length(ring, marker)
        for node in range(n):
            assert int(g.y[node]) == (int(own[node]) + int(marker_value[marker])) % 3
            assert int(g.node_data["distance"][node]) == hops[node]
    assert len(sizes) > 3, "the ring sizes vary"
    assert (d.task.level, d.task.kind, d.task.num_outputs, d.task.metric) == ("node", "multiclass", 3, "accuracy")
    assert d.node_features.cardinalities == (4, 3) and d.edge_features.kind == "none"
    again = load_dataset("marker", root=tmp_path / "elsewhere", num_train=12, num_val=3, num_test=4, min_nodes=6,
                         max_nodes=15, num_classes=3)
    other = load_dataset("marker", root=tmp_path, num_train=12, num_val=3, num_test=4, min_nodes=6, max_nodes=15,
                         num_classes=3, seed=1)
    for a, b in zip(d.test, again.test, strict=True):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert any(not torch.equal(a.x, b.x) for a, b in zip(d.test, other.test, strict=True)), "the seed matters"
    default = load_dataset("marker", root=tmp_path)
    assert (len(default.train), len(default.val), len(default.test)) == (1000, 200, 200)
    assert min(g.num_nodes for g in default.train) >= 48 and max(g.num_nodes for g in default.train) <= 96
    with pytest.raises(ValueError):
        load_dataset("marker", root=tmp_path, min_nodes=10, max_nodes=5)
    with pytest.raises(ValueError):
        load_dataset("marker", root=tmp_path, num_classes=1)


def test_catalog_names_and_cards():
    cards = list_datasets()
    names = {c.name for c in cards}
    assert {"pattern", "cluster", "csl", "qm9", "b3db", "solubility", "freesolv", "moses-plogp",
            "reachability", "relay", "marker"} <= names
    assert len(names) == len(cards)
    for entry in DATASETS.values():
        assert entry.card.metric in HIGHER_IS_BETTER
        assert entry.card.licence and entry.card.source and entry.card.size
    for required in ("pattern", "cluster", "pattern-small", "cluster-small", "pattern-tiny", "cluster-tiny",
                     "csl", "qm9", "qm9-small", "b3db", "solubility", "freesolv", "moses-plogp",
                     "moses-plogp-small", "reachability", "relay", "marker"):
        assert required in DATASETS
    assert get_card("Pattern_Small").name == "pattern"
    with pytest.raises(ValueError, match="'pattern'"):
        load_dataset("patern")
    with pytest.raises(ValueError, match="accepts.*fold"):
        load_dataset("csl", folds=2)
    with pytest.raises(ValueError, match="fixed by the name"):
        load_dataset("pattern-tiny", size="full")
    rows = dataset_rows()
    assert {"name", "task", "size", "metric", "source", "licence"} <= set(rows[0])


def test_describe_counts_by_hand(tmp_path):
    d = load_dataset("relay", root=tmp_path, num_train=3, num_val=1, num_test=1, num_nodes=10, k=2,
                     num_classes=2)
    stats = describe(d)
    train = stats["splits"]["train"]
    assert train["graphs"] == 3
    assert train["nodes"] == {"min": 10, "median": 10.0, "mean": 10.0, "max": 10}
    assert train["edges"]["mean"] == 20.0
    labels = torch.cat([g.y for g in d.train])
    assert train["labels"][1] == pytest.approx(float(labels.float().mean()))
    assert sum(train["labels"].values()) == pytest.approx(1.0)
    eager = dataclasses.replace(d, train=list(d.train), val=list(d.val), test=list(d.test))
    assert describe(eager) == stats  # the list path and the lazy (cached) path agree


def test_print_table_runs():
    from rich.console import Console

    console = Console(record=True, width=200)
    print_dataset_table(console)
    text = console.export_text()
    assert "pattern" in text and "moses-plogp" in text and "weighted_accuracy" in text


def test_cache_keys_name_the_data(tmp_path):
    a = load_dataset("relay", root=tmp_path, num_train=3, num_val=1, num_test=1, num_nodes=10)
    again = load_dataset("relay", root=tmp_path / "elsewhere", num_train=3, num_val=1, num_test=1,
                         num_nodes=10)
    other = load_dataset("relay", root=tmp_path, num_train=3, num_val=1, num_test=1, num_nodes=10, seed=1)
    assert a.cache_key("train") == again.cache_key("train")  # the cache folder does not matter
    assert a.cache_key("train") != a.cache_key("val")
    assert a.cache_key("train") != other.cache_key("train")
    with pytest.raises(ValueError):
        a.cache_key("dev")
