"""A dataset of one graph whose nodes are split into train / val / test (citation networks, LargeGT's graphs).

The graph is shared; each split of the `Dataset` is ``[graph]`` with its own ``node_data[TARGET_MASK]`` (bool
[N]: the nodes scored in that split), so the trainer's loss and metrics cover the masked nodes only
(`sparsegt.train.trainer.select_prediction`) while message passing and attention see the whole graph (the
transductive setting). Nodes in no split (``split == -1``: unlabelled, held out) are never scored.

Splits are stored as one int8 array per node: 0 train, 1 val, 2 test, -1 none (`SPLIT_IDS`); PyG-style boolean
masks convert with `split_from_masks`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..graph import Graph
from .dataset import Dataset, DatasetCard
from .spec import TARGET_MASK, FeatureSpec, TaskSpec

__all__ = ["SPLIT_IDS", "split_from_masks", "split_views", "one_graph_dataset"]

SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "none": -1}


def split_from_masks(train_mask, val_mask, test_mask, *, where: str = "masks") -> np.ndarray:
    """[N] int8 split ids from three boolean [N] masks; a node in two masks is an error naming it."""
    masks = [np.asarray(m) for m in (train_mask, val_mask, test_mask)]
    names = ("train_mask", "val_mask", "test_mask")
    n = masks[0].shape[0] if masks[0].ndim == 1 else -1
    for name, mask in zip(names, masks, strict=True):
        if mask.ndim != 1 or mask.shape[0] != n:
            raise ValueError(f"{where}, field '{name}': must have shape [N = {n}], got {mask.shape}")
        if mask.dtype != np.bool_ and not np.isin(mask, (0, 1)).all():
            raise ValueError(f"{where}, field '{name}': must hold booleans (or 0/1), got dtype {mask.dtype}")
    masks = [m.astype(bool) for m in masks]
    overlap = (masks[0].astype(np.int8) + masks[1] + masks[2]) > 1
    if overlap.any():
        node = int(np.flatnonzero(overlap)[0])
        inside = [name for name, m in zip(names, masks, strict=True) if m[node]]
        raise ValueError(f"{where}: node {node} is in {' and '.join(inside)} ({int(overlap.sum())} nodes are in "
                         "more than one); the masks must be disjoint")
    split = np.full(n, -1, dtype=np.int8)
    for s, mask in enumerate(masks):
        split[mask] = s
    return split


def split_views(graph: Graph, split: Tensor | np.ndarray, *, where: str = "split") -> tuple[Graph, Graph, Graph]:
    """(train, val, test): ``graph`` sharing its tensors, each with ``node_data[TARGET_MASK]`` = its nodes.

    ``split``: [N] ints in {0, 1, 2, -1} (`SPLIT_IDS`). A ``node_data["split"]`` of ``graph`` is dropped from
    the views (the masks say the same)."""
    split = torch.as_tensor(np.asarray(split))
    if split.shape != (graph.num_nodes,):
        raise ValueError(f"{where}: must have shape [N = {graph.num_nodes}], got {tuple(split.shape)}")
    bad = ~torch.isin(split, torch.tensor([-1, 0, 1, 2], dtype=split.dtype))
    if bad.any():
        node = int(torch.nonzero(bad)[0])
        raise ValueError(f"{where}: node {node} has split {int(split[node])}; use 0 (train), 1 (val), 2 (test) "
                         "or -1 (none)")
    for s, name in ((0, "train"), (1, "val")):
        if not bool((split == s).any()):
            raise ValueError(f"{where}: no {name} node (split id {s}); training needs train nodes and model "
                             "selection needs val nodes")
    node_data = {k: t for k, t in graph.node_data.items() if k != "split"}
    views = []
    for s in range(3):
        views.append(Graph(graph.indptr, graph.indices, graph.num_cols,
                           node_data={**node_data, TARGET_MASK: split == s}, edge_data=graph.edge_data,
                           graph_data=graph.graph_data, validate=False))
    return views[0], views[1], views[2]


def one_graph_dataset(graph: Graph, split: Tensor | np.ndarray, *, name: str, task: TaskSpec,
                      node_features: FeatureSpec, edge_features: FeatureSpec, card: DatasetCard,
                      info: dict | None = None) -> Dataset:
    """A node-level `Dataset` of one graph: each split ``[graph]`` masked by `split_views`."""
    if task.level != "node":
        raise ValueError(f"{name}: a dataset of one graph split by nodes needs a node-level task, got {task.level}")
    train, val, test = split_views(graph, split, where=f"{name}: split")
    counts = {s: int((torch.as_tensor(np.asarray(split)) == i).sum()) for s, i in SPLIT_IDS.items()}
    tests = [test] if counts["test"] else []  # no test nodes: the trainer reports no test metric
    return Dataset(name, [train], [val], tests, task=task, node_features=node_features,
                   edge_features=edge_features, card=card, info={**(info or {}), "split_nodes": counts})
