"""Node-level training on one graph split by node masks: masked loss/metric, chunked evaluation, sampled runs."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from sparsegt.data import load_dataset
from sparsegt.data.neighbor_loader import NeighborLoader
from sparsegt.data.node_splits import split_from_masks, split_views
from sparsegt.data.spec import TARGET_MASK, TaskSpec
from sparsegt.graph import Graph
from sparsegt.train.config import RunConfig, apply_overrides
from sparsegt.train.run import build_model, train_run
from sparsegt.train.trainer import Trainer, seed_everything, select_prediction

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

OPTIONS = ["data.name=dcsbm", "data.options.num_nodes=1500", "data.options.num_communities=8",
           "model.layer=gine", "model.num_layers=2", "model.hidden=8", "model.norm=none", "train.epochs=1",
           "train.threads=1", "train.chance_check_epochs=0"]


def config(tmp_path, *extra):
    return apply_overrides(RunConfig(), [*OPTIONS, f"data.root={tmp_path / 'cache'}", f"out_dir={tmp_path}",
                                         *extra])


def test_select_prediction_keeps_the_masked_nodes():
    g = Graph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 4, node_data={"y": torch.arange(4)})
    g = g.with_data(node_data={TARGET_MASK: torch.tensor([True, False, True, False])})
    output = torch.arange(8.0).reshape(4, 2)
    prediction, target = select_prediction(output, g, TaskSpec("node", "multiclass", 2, "accuracy"))
    assert prediction.tolist() == [[0, 1], [4, 5]] and target.tolist() == [0, 2]


def test_chunked_evaluation_equals_whole_graph_evaluation(tmp_path):
    """A 2-layer message-passing model sees exactly its 2-hop in-neighbourhood: sampled with every neighbour, the
    chunked evaluation must give the whole-graph forward's predictions for every target node."""
    cfg = config(tmp_path, "data.eval_batch_size=97")
    dataset = load_dataset("dcsbm", root=tmp_path / "cache", num_nodes=1500, num_communities=8)
    seed_everything(0)
    model = build_model(cfg, dataset)
    whole = Trainer(cfg, model, dataset.task, dataset.train, dataset.val, dataset.test)
    chunked = Trainer(cfg, model, dataset.task, dataset.train, dataset.val, dataset.test,
                      make_loader=functools.partial(NeighborLoader, fanouts=[3], eval_fanouts=[-1, -1]))
    for split in (dataset.val, dataset.test):
        a, b = whole.evaluate(split), chunked.evaluate(split)
        assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5) and a["metric"] == b["metric"]
    batches = list(chunked.loader.evaluation_batches(dataset.val, 97))
    assert len(batches) == math.ceil(int(dataset.val[0].node_data[TARGET_MASK].sum()) / 97)


@pytest.mark.parametrize("sampled", [True, False])
def test_train_run_on_one_graph(tmp_path, sampled):
    extra = ["data.fanouts=[4,2]", "data.batch_size=128", "data.eval_batch_size=256"] if sampled else []
    result = train_run(config(tmp_path, *extra), quiet=True)
    summary = result.summary
    assert summary["status"] == "completed" and 0 <= summary["test_metric"] <= 1
    assert math.isfinite(summary["final_train_loss"])


def test_split_masks_are_checked():
    with pytest.raises(ValueError, match="node 1 is in train_mask and test_mask"):
        split_from_masks([True, True, False], [False, False, True], [False, True, False])
    assert split_from_masks([1, 0, 0], [0, 1, 0], [0, 0, 0]).tolist() == [0, 1, -1]
    g = Graph.from_edge_index(torch.tensor([[0], [1]]), 3)
    with pytest.raises(ValueError, match="node 2 has split 7"):
        split_views(g, np.array([0, 1, 7]))
    with pytest.raises(ValueError, match="no val node"):
        split_views(g, np.array([0, 0, 2]))
    with pytest.raises(ValueError, match=r"shape \[N = 3\]"):
        split_views(g, np.array([0, 1]))


def test_fanouts_config_is_checked(tmp_path):
    with pytest.raises(ValueError, match=r"data.fanouts = \[10, -3\]"):
        config(tmp_path, "data.fanouts=[10,-3]")
    with pytest.raises(ValueError, match="one graph"):
        train_run(apply_overrides(RunConfig(), ["data.name=pattern-tiny", "data.fanouts=[3]", "train.epochs=1",
                                                f"data.root={tmp_path / 'cache'}", f"out_dir={tmp_path}"]),
                  quiet=True)
