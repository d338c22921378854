"""CSL (Circular Skip Links, Murphy et al. 2019): 150 4-regular graphs that 1-WL cannot tell apart.

Each graph is the 41-cycle plus skip links i -- (i + R) mod 41 for one R in (2, 3, 4, 5, 6, 9, 11,
12, 13, 16) (the class); a class holds 15 random node permutations of its graph. Node features are
all zero, so without positional encodings no model beats 10 % accuracy. Splits: 5 stratified folds of
30 graphs (3 per class); fold ``k`` is the test set, fold ``(k + 1) % 5`` the validation set and the
other three the training set: 90 / 30 / 30, as Benchmarking-GNNs' 5-fold protocol.
"""

from __future__ import annotations

import numpy as np
import torch

from ..graph import Graph
from .dataset import Dataset, DatasetCard
from .spec import FeatureSpec, TaskSpec

__all__ = ["CSL_SKIPS", "csl_graph", "load_csl", "CSL_CARD"]

CSL_NODES = 41
CSL_SKIPS = (2, 3, 4, 5, 6, 9, 11, 12, 13, 16)
GRAPHS_PER_CLASS = 15
NUM_FOLDS = 5

CSL_CARD = DatasetCard(
    name="csl", task="graph classification, 10 classes (skip length)",
    size="150 graphs (90 / 30 / 30 per fold, 5 folds), 41 nodes, 164 edges each", metric="accuracy",
    source="generated: exact construction of Murphy et al. 2019 (Relational Pooling), seeded permutations",
    licence="MIT (generator); data generated locally",
    description="41-cycle + skip links of length R; all node features zero. Needs positional encodings: "
                "message passing without them stays at 10 %.",
    variants=("csl (fold=0..4)",))


def csl_graph(skip: int, permutation: np.ndarray | None = None) -> Graph:
    """The CSL graph with skip length ``skip`` ([41] node ``permutation`` optional), both edge directions."""
    nodes = np.arange(CSL_NODES)
    src = np.concatenate([nodes, nodes])
    dst = np.concatenate([(nodes + 1) % CSL_NODES, (nodes + skip) % CSL_NODES])
    if permutation is not None:
        src, dst = permutation[src], permutation[dst]
    edge_index = torch.from_numpy(np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]))
    return Graph.from_edge_index(edge_index, CSL_NODES, x=torch.zeros(CSL_NODES, 1, dtype=torch.long),
                                 graph_data={"y": torch.tensor([CSL_SKIPS.index(skip)])})


def load_csl(*, fold: int = 0, root=None, seed: int = 0, progress: bool = False) -> Dataset:
    """CSL with test fold ``fold`` (0..4). ``root``/``progress`` are accepted for uniformity (no cache)."""
    if fold not in range(NUM_FOLDS):
        raise ValueError(f"CSL fold must be 0..{NUM_FOLDS - 1}, got {fold}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC51]))
    folds: list[list[Graph]] = [[] for _ in range(NUM_FOLDS)]
    per_fold = GRAPHS_PER_CLASS // NUM_FOLDS
    for skip in CSL_SKIPS:
        graphs = [csl_graph(skip, rng.permutation(CSL_NODES)) for _ in range(GRAPHS_PER_CLASS)]
        order = rng.permutation(GRAPHS_PER_CLASS)
        for f in range(NUM_FOLDS):
            folds[f].extend(graphs[i] for i in order[f * per_fold:(f + 1) * per_fold])
    val_fold = (fold + 1) % NUM_FOLDS
    train = [g for f in range(NUM_FOLDS) if f not in (fold, val_fold) for g in folds[f]]
    return Dataset("csl", train, folds[val_fold], folds[fold],
                   task=TaskSpec("graph", "multiclass", len(CSL_SKIPS), "accuracy", True),
                   node_features=FeatureSpec("categorical", (1,)), edge_features=FeatureSpec(), card=CSL_CARD,
                   info={"fold": fold, "val_fold": val_fold, "seed": seed})
