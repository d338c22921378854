"""DCSBM (`sparsegt.data.large_sbm`) at 10^4 nodes: determinism, degrees, labels, masks, the cached dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sparsegt.data import load_dataset
from sparsegt.data.large_sbm import DCSBMConfig, generate_dcsbm
from sparsegt.data.spec import TARGET_MASK

SMALL = DCSBMConfig(num_nodes=10_000, num_communities=16, num_groups=4)


@pytest.fixture(scope="module")
def generated():
    return generate_dcsbm(SMALL, seed=1)


def test_deterministic_by_seed_whatever_the_chunking(generated):
    graph, _ = generated
    again, _ = generate_dcsbm(DCSBMConfig(**{**SMALL.__dict__, "chunk_nodes": 1234}), seed=1)
    assert torch.equal(graph.indptr, again.indptr) and torch.equal(graph.indices, again.indices)
    assert all(torch.equal(graph.node_data[k], again.node_data[k]) for k in graph.node_data)
    other, _ = generate_dcsbm(SMALL, seed=2)
    assert not torch.equal(graph.node_data["y"], other.node_data["y"])


def test_simple_undirected_graph_with_the_requested_degrees(generated):
    graph, info = generated
    adjacency = graph.to_scipy()
    assert (adjacency != adjacency.T).nnz == 0 and adjacency.diagonal().sum() == 0
    assert adjacency.max() == 1  # no repeated pair
    degree = graph.degree().numpy().astype(float)
    # stubs that hit the node itself or an existing pair are dropped: a little under the request
    assert 0.8 * SMALL.mean_degree <= degree.mean() <= 1.05 * SMALL.mean_degree
    # a Pareto tail: P(theta > 4) = (4 * mean of Pareto(1.5) = 12) ** -1.5 ~ 0.024; a Poisson degree has ~0
    tail = (degree > 4 * degree.mean()).mean()
    assert 0.5 * 12 ** -1.5 < tail < 2 * 12 ** -1.5
    light, _ = generate_dcsbm(DCSBMConfig(**{**SMALL.__dict__, "degree_exponent": 4.0}), seed=1)
    light_degree = light.degree().numpy().astype(float)
    assert (light_degree > 4 * light_degree.mean()).mean() < tail
    community = graph.node_data["community"].numpy()
    rows = np.repeat(np.arange(graph.num_nodes), np.diff(graph.indptr.numpy()))
    inside = (community[rows] == community[graph.indices.numpy()]).mean()
    assert abs(inside - (SMALL.p_in + (1 - SMALL.p_in) / SMALL.num_communities)) < 0.05


def test_labels_follow_group_and_community_aggregate_and_are_balanced(generated):
    graph, info = generated
    community, y, x = (graph.node_data[k].numpy() for k in ("community", "y", "x"))
    coin = np.bincount(community, weights=x[:, -1]) / np.bincount(community)
    assert (y == 2 * (community % SMALL.num_groups) + (coin > 0.5)[community]).all()
    counts = np.bincount(y, minlength=SMALL.num_classes)
    assert counts.tolist() == info["class_counts"]
    assert counts.min() > 0.4 * len(y) / SMALL.num_classes and counts.max() < 1.6 * len(y) / SMALL.num_classes
    # the aggregate is a small margin: each community's coin rate is close to 1/2
    assert np.abs(coin - 0.5).max() < 0.1


def test_cached_dataset_has_disjoint_masks_of_the_requested_sizes(tmp_path):
    options = {"num_nodes": 10_000, "num_communities": 16}
    dataset = load_dataset("dcsbm", root=tmp_path, seed=1, **options)
    masks = [s[0].node_data[TARGET_MASK] for s in (dataset.train, dataset.val, dataset.test)]
    assert int(sum(m.long() for m in masks).max()) == 1
    fractions = [float(m.float().mean()) for m in masks]
    assert np.allclose(fractions, [SMALL.train_fraction, SMALL.val_fraction, SMALL.test_fraction], atol=0.02)
    assert dataset.task.level == "node" and dataset.task.num_outputs == SMALL.num_classes
    assert dataset.train[0].indptr.data_ptr() == dataset.val[0].indptr.data_ptr()  # one graph, three masks
    graph, _ = generate_dcsbm(SMALL, seed=1)
    assert torch.equal(dataset.train[0].indices, graph.indices)  # the cache reads back what was generated
    again = load_dataset("dcsbm", root=tmp_path, seed=1, **options)
    assert again.info["cache_file"] == dataset.info["cache_file"]
    with pytest.raises(ValueError, match="unknown option"):
        load_dataset("dcsbm", root=tmp_path, num_node=5)
    with pytest.raises(ValueError, match="degree_exponent"):
        load_dataset("dcsbm", root=tmp_path, degree_exponent=1.5)
