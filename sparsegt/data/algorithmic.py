"""Algorithmic tasks where the answer depends on far-apart nodes.

**reachability** (the task of "Transformers Struggle to Learn to Search", Saparov et al. 2024): a
random DAG and a query (source, target); is the target reachable from the source? Graph-level binary
label, balanced 50/50. The query is marked in the node features (0 = other node, 1 = source,
2 = target). Both directions of every arc are stored, with ``edge_attr`` 0 on the arc as drawn
(u -> v: key u, query v) and 1 on its reverse, so a model can tell them apart.
``graph_data["distance"]`` holds the source -> target hop distance (-1 when unreachable).

**relay** (distance-k relay on rings): a ring of ``num_nodes`` nodes in random order, node values
uniform in ``{0..num_classes-1}`` (``x[:, 0]``); node i must output the value of the node ``k`` steps
ahead along the ring. Edges are stored both ways with ``edge_attr`` 0 = "ahead", 1 = "behind". A
message-passing model needs >= k layers; global attention needs positions (any PE) instead.

**marker** (marker readout on rings): a ring of ``min_nodes..max_nodes`` nodes in random order; one node
carries a marker value ``m`` in ``{1..num_classes}`` (``x[:, 0]``, 0 on every other node) and every node its
own value ``a`` in ``{0..num_classes-1}`` (``x[:, 1]``); node i must output ``(a_i + m) mod num_classes``.
The label needs the far-away marker and the node's own value, so no graph-level answer solves it. An
L-layer message-passing model sees the marker only from the ``2L + 1`` nodes within L hops (elsewhere it can
do no better than chance, ``1 / num_classes``); one attention layer over the whole graph sees it from
every node, and needs no positions to find it (the marker is in the features). ``node_data["distance"]``
holds each node's hop distance to the marker. Undirected edges, no edge features.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

from ..graph import Graph
from .cache import cached_splits
from .dataset import Dataset, DatasetCard
from .spec import FeatureSpec, TaskSpec

__all__ = ["reachability_graph", "relay_graph", "load_reachability", "load_relay", "REACHABILITY_CARD",
           "RELAY_CARD", "marker_graph", "load_marker", "MARKER_CARD"]

GENERATOR_VERSION = 1

REACHABILITY_CARD = DatasetCard(
    name="reachability", task="graph classification, binary (is target reachable from source?)",
    size="default 2,000 / 500 / 500 graphs of 16-32 nodes (num_train, min_nodes, max_nodes, ... options)",
    metric="accuracy", source="generated: random DAGs with a (source, target) query, seeded",
    licence="MIT (generator); data generated locally",
    description="Graph search as in 'Transformers Struggle to Learn to Search': the query nodes are marked "
                "in the features; labels balanced; arcs carry a direction feature.")

RELAY_CARD = DatasetCard(
    name="relay", task="node classification (value of the node k steps ahead on a ring)",
    size="default 1,000 / 200 / 200 rings of 64 nodes, k = 8 (num_nodes, k, num_classes options)",
    metric="accuracy", source="generated: distance-k relay on rings, seeded",
    licence="MIT (generator); data generated locally",
    description="Long-range task: the answer of node i is the feature of node i+k; local message passing "
                "needs k layers, global attention needs positional encodings.")

MARKER_CARD = DatasetCard(
    name="marker", task="node classification ((own value + value of the one marked node) mod C, on a ring)",
    size="default 1,000 / 200 / 200 rings of 48-96 nodes, C = 4 (num_train, min_nodes, max_nodes, num_classes "
         "options)",
    metric="accuracy", source="generated: marker readout on rings, seeded",
    licence="MIT (generator); data generated locally",
    description="Long-range task: every node needs the value of one marked node, mostly far away; an L-layer "
                "MPNN sees it from the 2L+1 nodes within L hops (chance elsewhere), attention over the graph "
                "from every node in one layer.")


def _directed_pair_graph(num_nodes: int, src: np.ndarray, dst: np.ndarray, x: np.ndarray,
                         **kwargs) -> Graph:
    """Arcs src -> dst (edge_attr 0) plus their reverses (edge_attr 1)."""
    both = np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]).astype(np.int64)
    edge_index = torch.from_numpy(both)
    direction = torch.zeros(2 * len(src), 1, dtype=torch.long)
    direction[len(src):] = 1
    return Graph.from_edge_index(edge_index, num_nodes, direction, x=torch.from_numpy(x), **kwargs)


def _distances_from(source: int, num_nodes: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """[N] BFS hop distance from ``source`` along arcs src -> dst (-1 = unreachable)."""
    out: list[list[int]] = [[] for _ in range(num_nodes)]
    for u, v in zip(src.tolist(), dst.tolist(), strict=True):
        out[u].append(v)
    dist = np.full(num_nodes, -1, dtype=np.int64)
    dist[source] = 0
    queue = deque([source])
    while queue:
        u = queue.popleft()
        for v in out[u]:
            if dist[v] < 0:
                dist[v] = dist[u] + 1
                queue.append(v)
    return dist


def reachability_graph(rng: np.random.Generator, num_nodes: int, avg_out_degree: float = 1.5,
                       reachable: bool | None = None) -> Graph | None:
    """One query graph; ``reachable`` picks the label (random if None). None if this DAG has no such query."""
    rank = rng.permutation(num_nodes)  # topological position of each node
    upper = np.triu(rng.random((num_nodes, num_nodes)) < avg_out_degree / max(num_nodes - 1, 1) * 2, 1)
    low, high = np.nonzero(upper)  # arcs from earlier to later topological positions
    order = np.argsort(rank)  # node at each topological position
    src, dst = order[low], order[high]
    source = int(rng.integers(num_nodes))
    dist = _distances_from(source, num_nodes, src, dst)
    if reachable is None:
        reachable = bool(rng.integers(2))
    candidates = np.flatnonzero(dist > 0) if reachable else np.flatnonzero(dist < 0)
    if candidates.size == 0:
        return None
    target = int(rng.choice(candidates))
    x = np.zeros((num_nodes, 1), dtype=np.int64)
    x[source, 0], x[target, 0] = 1, 2
    return _directed_pair_graph(num_nodes, src, dst, x,
                                graph_data={"y": torch.tensor([int(reachable)]),
                                            "distance": torch.tensor([int(dist[target])])})


def _draw_query(rng: np.random.Generator, min_nodes: int, max_nodes: int, avg_out_degree: float,
                reachable: bool) -> Graph:
    for _ in range(1000):
        g = reachability_graph(rng, int(rng.integers(min_nodes, max_nodes + 1)), avg_out_degree, reachable)
        if g is not None:
            return g
    kind = "reachable" if reachable else "unreachable"
    raise ValueError(f"could not draw a {kind} query with avg_out_degree={avg_out_degree}; "
                     "choose a degree between 0.5 and 4")


def load_reachability(*, num_train: int = 2000, num_val: int = 500, num_test: int = 500, min_nodes: int = 16,
                      max_nodes: int = 32, avg_out_degree: float = 1.5, root=None, seed: int = 0,
                      progress: bool = False) -> Dataset:
    """Reachability queries on random DAGs of ``min_nodes..max_nodes`` nodes (balanced labels)."""
    if not 2 <= min_nodes <= max_nodes:
        raise ValueError(f"need 2 <= min_nodes <= max_nodes, got {min_nodes}, {max_nodes}")
    if avg_out_degree <= 0:
        raise ValueError(f"avg_out_degree must be > 0, got {avg_out_degree}")

    def build() -> dict[str, list[Graph]]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EA5C4]))
        splits = {}
        for split, count in (("train", num_train), ("val", num_val), ("test", num_test)):
            graphs = [_draw_query(rng, min_nodes, max_nodes, avg_out_degree, reachable=(i % 2 == 0))
                      for i in range(count)]
            splits[split] = [graphs[j] for j in rng.permutation(len(graphs))]
        return splits

    params = {"generator": GENERATOR_VERSION, "seed": seed, "sizes": [num_train, num_val, num_test],
              "nodes": [min_nodes, max_nodes], "avg_out_degree": avg_out_degree}
    splits, path, _ = cached_splits("reachability", params, build, root, progress)
    return Dataset("reachability", splits["train"], splits["val"], splits["test"],
                   task=TaskSpec("graph", "binary", 1, "accuracy", True),
                   node_features=FeatureSpec("categorical", (3,)),
                   edge_features=FeatureSpec("categorical", (2,)),
                   card=REACHABILITY_CARD, info={"min_nodes": min_nodes, "max_nodes": max_nodes,
                                                 "avg_out_degree": avg_out_degree, "seed": seed,
                                                 "cache_file": str(path)})


def relay_graph(rng: np.random.Generator, num_nodes: int, k: int, num_classes: int) -> Graph:
    """A ring of ``num_nodes`` nodes in random order; y[i] = x[node k steps ahead of i]."""
    ring = rng.permutation(num_nodes)  # ring[p] = node at ring position p
    values = rng.integers(num_classes, size=num_nodes)
    ahead = np.empty(num_nodes, dtype=np.int64)
    ahead[ring] = ring[(np.arange(num_nodes) + k) % num_nodes]
    src, dst = ring, ring[(np.arange(num_nodes) + 1) % num_nodes]
    return _directed_pair_graph(num_nodes, src, dst, values.reshape(-1, 1).astype(np.int64),
                                node_data={"y": torch.from_numpy(values[ahead].astype(np.int64))})


def load_relay(*, num_train: int = 1000, num_val: int = 200, num_test: int = 200, num_nodes: int = 64,
               k: int = 8, num_classes: int = 4, root=None, seed: int = 0, progress: bool = False) -> Dataset:
    """Distance-``k`` relay on rings of ``num_nodes`` nodes with ``num_classes`` values."""
    if num_nodes < 3 or not 1 <= k < num_nodes:
        raise ValueError(f"need num_nodes >= 3 and 1 <= k < num_nodes, got {num_nodes}, {k}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")

    def build() -> dict[str, list[Graph]]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x4E1A7]))
        return {split: [relay_graph(rng, num_nodes, k, num_classes) for _ in range(count)]
                for split, count in (("train", num_train), ("val", num_val), ("test", num_test))}

    params = {"generator": GENERATOR_VERSION, "seed": seed, "sizes": [num_train, num_val, num_test],
              "num_nodes": num_nodes, "k": k, "num_classes": num_classes}
    splits, path, _ = cached_splits("relay", params, build, root, progress)
    return Dataset("relay", splits["train"], splits["val"], splits["test"],
                   task=TaskSpec("node", "multiclass", num_classes, "accuracy", True),
                   node_features=FeatureSpec("categorical", (num_classes,)),
                   edge_features=FeatureSpec("categorical", (2,)), card=RELAY_CARD,
                   info={"num_nodes": num_nodes, "k": k, "num_classes": num_classes, "seed": seed,
                         "cache_file": str(path)})


def marker_graph(rng: np.random.Generator, num_nodes: int, num_classes: int) -> Graph:
    """A ring of ``num_nodes`` nodes in random order, one marked; y[i] = (x[i, 1] + marker value) mod C."""
    ring = rng.permutation(num_nodes)  # ring[p] = node at ring position p
    marker = int(rng.integers(num_nodes))
    value = int(rng.integers(1, num_classes + 1))
    own = rng.integers(num_classes, size=num_nodes)
    x = np.zeros((num_nodes, 2), dtype=np.int64)
    x[marker, 0], x[:, 1] = value, own
    position = np.empty(num_nodes, dtype=np.int64)
    position[ring] = np.arange(num_nodes)
    offset = np.abs(position - position[marker])
    distance = np.minimum(offset, num_nodes - offset)
    src, dst = ring, np.roll(ring, -1)
    edge_index = torch.from_numpy(np.stack([np.concatenate([src, dst]), np.concatenate([dst, src])]))
    return Graph.from_edge_index(edge_index, num_nodes, x=torch.from_numpy(x),
                                 node_data={"y": torch.from_numpy((own + value) % num_classes),
                                            "distance": torch.from_numpy(distance)})


def load_marker(*, num_train: int = 1000, num_val: int = 200, num_test: int = 200, min_nodes: int = 48,
                max_nodes: int = 96, num_classes: int = 4, root=None, seed: int = 0,
                progress: bool = False) -> Dataset:
    """Marker readout on rings of ``min_nodes..max_nodes`` nodes with ``num_classes`` values."""
    if not 3 <= min_nodes <= max_nodes:
        raise ValueError(f"need 3 <= min_nodes <= max_nodes, got {min_nodes}, {max_nodes}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")

    def build() -> dict[str, list[Graph]]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x3A7CE5]))
        return {split: [marker_graph(rng, int(rng.integers(min_nodes, max_nodes + 1)), num_classes)
                        for _ in range(count)]
                for split, count in (("train", num_train), ("val", num_val), ("test", num_test))}

    params = {"generator": GENERATOR_VERSION, "seed": seed, "sizes": [num_train, num_val, num_test],
              "nodes": [min_nodes, max_nodes], "num_classes": num_classes}
    splits, path, _ = cached_splits("marker", params, build, root, progress)
    return Dataset("marker", splits["train"], splits["val"], splits["test"],
                   task=TaskSpec("node", "multiclass", num_classes, "accuracy", True),
                   node_features=FeatureSpec("categorical", (num_classes + 1, num_classes)),
                   edge_features=FeatureSpec(), card=MARKER_CARD,
                   info={"min_nodes": min_nodes, "max_nodes": max_nodes, "num_classes": num_classes,
                         "seed": seed, "cache_file": str(path)})
