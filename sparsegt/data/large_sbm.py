"""DCSBM: one large degree-corrected stochastic-block-model graph whose labels need more than 2 hops.

Node-level classification on one graph of 10^4 .. 10^7 nodes, generated offline (numba, in node chunks) and
cached as ``.npz`` like the other datasets.

The graph (Karrer & Newman's degree-corrected SBM, sampled by stubs):

- node i joins community ``c_i`` uniformly among ``num_communities`` and gets a degree propensity ``theta_i``
  drawn from a Pareto tail with exponent ``degree_exponent`` (P(theta > t) ~ t^-(exponent - 1)), capped at
  ``max_degree_ratio`` times the mean, normalised to mean 1;
- node i emits Poisson(theta_i * mean_degree / 2) stubs; each joins a node of i's own community with probability
  ``p_in``, else a node of the whole graph, the endpoint chosen with probability proportional to theta. Both
  directions are stored; self-loops and repeated pairs are dropped. The expected degree of i is about
  ``theta_i * mean_degree``.

Features ``x`` [N, feature_dim + 1] (float32): columns 0..F-1 are the mean vector of the community's *group*
(``c mod num_groups``, a random unit vector) plus N(0, feature_noise^2) noise; column F is a coin with
probability 0.5 + margin or 0.5 - margin, the sign planted per community (half of each group's communities up).

Labels, ``num_classes = 2 * num_groups``: ``y_i = 2 * group(c_i) + bit(c_i)`` where ``bit(c)`` says whether the
community's coin column averages above 1/2 over *all* its members. The group is visible locally (own
features and homophilous neighbours); the bit is a community-level aggregate: a 2-hop neighbourhood of a few
dozen nodes estimates a rate of 0.5 +- 0.02 with a standard error near 0.07, so local message passing stays
close to chance on it, while a model that pools over the whole community (a global codebook, LargeGT's
global module) can read it. Communities of one group are otherwise indistinguishable.

Splits: each node is train / val / test with probabilities ``train_fraction`` / ``val_fraction`` /
``test_fraction`` and in no split otherwise (unlabelled for training purposes).

Every random draw is a `hash_random` function of (seed, stream, node, counter): the output does not depend on
``chunk_nodes``. Memory: the node arrays (O(N)), the cumulative propensities (8 N bytes) and the CSR (8 E
bytes, one counting pass and one filling pass over the stubs); no edge list is held.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from numba import njit

from ..graph import Graph
from .cache import cached_splits
from .dataset import Dataset, DatasetCard
from .hash_random import below, derive_key, normal, uniform
from .node_splits import one_graph_dataset
from .spec import FeatureSpec, TaskSpec

__all__ = ["DCSBMConfig", "generate_dcsbm", "load_dcsbm", "DCSBM_CARD"]

GENERATOR_VERSION = 1
# key streams of the generator's draws
_COMMUNITY, _THETA, _STUBS, _STUB_COUNT, _FEATURES, _COIN, _GROUP_MEANS, _PLANTED, _SPLIT = range(1, 10)


@dataclass(frozen=True)
class DCSBMConfig:
    """The generator's parameters (see the module docstring)."""

    num_nodes: int = 1_000_000
    num_communities: int = 256
    num_groups: int = 4
    mean_degree: float = 12.0
    degree_exponent: float = 2.5
    max_degree_ratio: float = 50.0
    p_in: float = 0.8
    feature_dim: int = 16
    feature_noise: float = 1.0
    aggregate_margin: float = 0.02
    train_fraction: float = 0.5
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    chunk_nodes: int = 1 << 16  # nodes per numba call (progress granularity; the output does not depend on it)

    def __post_init__(self) -> None:
        problems = []
        if self.num_nodes < 2:
            problems.append(f"num_nodes = {self.num_nodes} must be >= 2")
        if not 1 <= self.num_communities <= self.num_nodes:
            problems.append(f"num_communities = {self.num_communities} must lie in 1..num_nodes")
        if not 1 <= self.num_groups <= self.num_communities:
            problems.append(f"num_groups = {self.num_groups} must lie in 1..num_communities")
        if self.mean_degree <= 0 or self.degree_exponent <= 2 or self.max_degree_ratio < 1:
            problems.append("mean_degree must be > 0, degree_exponent > 2 (a finite mean) and max_degree_ratio >= 1")
        if not 0 <= self.p_in <= 1 or not 0 <= self.aggregate_margin <= 0.5:
            problems.append("p_in must lie in [0, 1] and aggregate_margin in [0, 0.5]")
        if self.feature_dim < 1 or self.feature_noise < 0 or self.chunk_nodes < 1:
            problems.append("feature_dim and chunk_nodes must be >= 1, feature_noise >= 0")
        fractions = (self.train_fraction, self.val_fraction, self.test_fraction)
        if min(fractions) < 0 or sum(fractions) > 1 + 1e-9 or self.train_fraction == 0 or self.val_fraction == 0:
            problems.append(f"train/val/test fractions {fractions} must be >= 0 with a sum <= 1, train and val > 0")
        if problems:
            raise ValueError("DCSBMConfig: " + "; ".join(problems))

    @property
    def num_classes(self) -> int:
        return 2 * self.num_groups


@njit(cache=True)
def _poisson(key, i, lam):
    """Poisson(lam) by inversion of one uniform (lam < 500), else the normal approximation."""
    if lam <= 0.0:
        return 0
    if lam >= 500.0:
        return max(0, np.int64(lam + np.sqrt(lam) * normal(key, i, 0) + 0.5))
    u = uniform(key, i, 1)
    p = np.exp(-lam)
    cdf = p
    k = 0
    while u > cdf and k < 10000:
        k += 1
        p *= lam / k
        cdf += p
    return k


@njit(cache=True)
def _nodes_numba(start, end, community_key, theta_key, num_communities, exponent, cap, community, theta):
    for i in range(start, end):
        community[i] = below(community_key, i, 0, num_communities)
        t = (1.0 - uniform(theta_key, i, 0)) ** (-1.0 / (exponent - 1.0))
        theta[i] = min(t, cap)


@njit(cache=True)
def _pick(cum, members, lo, hi, r):
    """The member whose propensity interval in ``cum[lo:hi+1]`` holds ``r`` (binary search)."""
    a, b = lo, hi - 1
    while a < b:
        mid = (a + b) // 2
        if cum[mid + 1] > r:
            b = mid
        else:
            a = mid + 1
    return members[a]


@njit(cache=True)
def _stubs_numba(start, end, stub_key, count_key, half_degree, p_in, theta, community, members, cum, offsets,
                 fill, indices, write):
    """Count (``write`` False: ``fill[i] += 1`` per endpoint) or place (``write`` True: ``indices[fill[i]++]``)
    the edges of the stubs emitted by nodes start..end-1."""
    n = theta.shape[0]
    for i in range(start, end):
        stubs = _poisson(count_key, i, theta[i] * half_degree)
        c = community[i]
        for k in range(stubs):
            if uniform(stub_key, i, 2 * k) < p_in:
                lo, hi = offsets[c], offsets[c + 1]
            else:
                lo, hi = 0, n
            r = cum[lo] + uniform(stub_key, i, 2 * k + 1) * (cum[hi] - cum[lo])
            j = _pick(cum, members, lo, hi, r)
            if j == i:
                continue
            if write:
                indices[fill[i]] = j
                indices[fill[j]] = i
            fill[i] += 1
            fill[j] += 1


@njit(cache=True)
def _dedupe_rows_numba(indptr, indices):
    """Sort each row and drop repeats in place; returns the new indptr (entries move to the front)."""
    n = indptr.shape[0] - 1
    out = np.zeros(n + 1, np.int64)
    write = 0
    for r in range(n):
        row = np.sort(indices[indptr[r]:indptr[r + 1]])
        previous = -1
        for v in row:
            if v != previous:
                indices[write] = v
                write += 1
                previous = v
        out[r + 1] = write
    return out


@njit(cache=True)
def _features_numba(start, end, feature_key, coin_key, planted_key, group_means, noise, margin, community,
                    num_groups, x):
    dim = group_means.shape[1]
    for i in range(start, end):
        c = community[i]
        g = c % num_groups
        for f in range(dim):
            x[i, f] = group_means[g, f] + noise * normal(feature_key, i, f)
        # half the communities of each group lean up, half down (alternating in c // num_groups)
        up = (c // num_groups + (1 if uniform(planted_key, g, 0) < 0.5 else 0)) % 2 == 1
        rate = 0.5 + margin if up else 0.5 - margin
        x[i, dim] = 1.0 if uniform(coin_key, i, 0) < rate else 0.0


def _chunks(n: int, size: int):
    return ((s, min(s + size, n)) for s in range(0, n, size))


def generate_dcsbm(cfg: DCSBMConfig = DCSBMConfig(), seed: int = 0, progress: bool = False) -> tuple[Graph, dict]:
    """(graph, info): the graph with ``x`` [N, F+1] float32, ``y`` [N] int64, ``split`` [N] int8 (0/1/2/-1)
    and ``community`` [N] int64; ``info``: edge count, class counts and generation time."""
    started = time.perf_counter()
    n, key = cfg.num_nodes, lambda stream: derive_key(seed, 0xDC5B, stream)

    def say(message: str) -> None:
        if progress:
            print(f"dcsbm: {message} ({time.perf_counter() - started:.1f} s)", flush=True)

    community = np.empty(n, np.int64)
    theta = np.empty(n, np.float64)
    for s, e in _chunks(n, cfg.chunk_nodes):
        _nodes_numba(s, e, key(_COMMUNITY), key(_THETA), cfg.num_communities, cfg.degree_exponent,
                     cfg.max_degree_ratio * 10.0, community, theta)
    theta = np.minimum(theta / theta.mean(), cfg.max_degree_ratio)
    theta /= theta.mean()
    members = np.argsort(community, kind="stable")
    offsets = np.zeros(cfg.num_communities + 1, np.int64)
    np.cumsum(np.bincount(community, minlength=cfg.num_communities), out=offsets[1:])
    cum = np.zeros(n + 1, np.float64)
    np.cumsum(theta[members], out=cum[1:])
    say(f"{n:,} nodes in {cfg.num_communities} communities")

    half_degree = cfg.mean_degree / 2.0
    degree = np.zeros(n, np.int64)
    unused = np.zeros(0, np.int64)
    stub_args = (key(_STUBS), key(_STUB_COUNT), half_degree, cfg.p_in, theta, community, members, cum, offsets)
    for s, e in _chunks(n, cfg.chunk_nodes):
        _stubs_numba(s, e, *stub_args, degree, unused, False)
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(degree, out=indptr[1:])
    indices = np.empty(int(indptr[-1]), np.int64)
    fill = indptr[:-1].copy()
    del degree
    for s, e in _chunks(n, cfg.chunk_nodes):
        _stubs_numba(s, e, *stub_args, fill, indices, True)
        if progress and (e // cfg.chunk_nodes) % 16 == 0:
            say(f"edges of {e:,}/{n:,} nodes")
    del fill, cum, members
    indptr = _dedupe_rows_numba(indptr, indices)
    indices = indices[: int(indptr[-1])].copy()
    say(f"{indices.shape[0]:,} directed edges")

    rng_means = np.stack([[normal(key(_GROUP_MEANS), g, f) for f in range(cfg.feature_dim)]
                          for g in range(cfg.num_groups)])
    group_means = rng_means / np.linalg.norm(rng_means, axis=1, keepdims=True)
    x = np.empty((n, cfg.feature_dim + 1), np.float32)
    for s, e in _chunks(n, cfg.chunk_nodes):
        _features_numba(s, e, key(_FEATURES), key(_COIN), key(_PLANTED), group_means, cfg.feature_noise,
                        cfg.aggregate_margin, community, cfg.num_groups, x)
    sizes = np.bincount(community, minlength=cfg.num_communities)
    coin_mean = np.bincount(community, weights=x[:, -1], minlength=cfg.num_communities) / np.maximum(sizes, 1)
    bit = (coin_mean > 0.5).astype(np.int64)
    y = 2 * (community % cfg.num_groups) + bit[community]
    draw = _split_draws(n, key(_SPLIT))
    edges = np.cumsum([cfg.train_fraction, cfg.val_fraction, cfg.test_fraction])
    split = np.searchsorted(edges, draw, side="right").astype(np.int8)
    split[split == 3] = -1
    graph = Graph(torch.from_numpy(indptr), torch.from_numpy(indices),
                  node_data={"x": torch.from_numpy(x), "y": torch.from_numpy(y),
                             "split": torch.from_numpy(split), "community": torch.from_numpy(community)},
                  validate=False)
    info = {"num_edges": int(indices.shape[0]), "class_counts": np.bincount(y, minlength=cfg.num_classes).tolist(),
            "generation_s": round(time.perf_counter() - started, 3)}
    say("done")
    return graph, info


@njit(cache=True)
def _split_draws_numba(n, key, out):
    for i in range(n):
        out[i] = uniform(key, i, 0)


def _split_draws(n: int, key: np.uint64) -> np.ndarray:
    out = np.empty(n, np.float64)
    _split_draws_numba(n, key, out)
    return out


DCSBM_CARD = DatasetCard(
    name="dcsbm", task="node classification on one graph, 2 x num_groups classes (group, community aggregate)",
    size="one graph, 10^6 nodes by default (data.options.num_nodes=...), ~12 edges per node; 50/10/10 % "
         "train/val/test nodes", metric="accuracy",
    source="generated: degree-corrected SBM (numba, seeded), cached as .npz",
    licence="data generated locally",
    description="Power-law degrees, planted communities, noisy group features; the label's second bit is a "
                "community-level average that 2-hop message passing cannot estimate (see sparsegt.data.large_sbm).",
    variants=("dcsbm-tiny",))


def load_dcsbm(*, root=None, seed: int = 0, progress: bool = False, **config) -> Dataset:
    """DCSBM (one graph, node masks); ``config`` overrides `DCSBMConfig` fields. Cached on disk."""
    known = set(asdict(DCSBMConfig()))
    unknown = sorted(set(config) - known)
    if unknown:
        raise ValueError(f"dcsbm: unknown option(s) {unknown}; known: {sorted(known)}")
    cfg = replace(DCSBMConfig(), **config)
    content = {k: v for k, v in asdict(cfg).items() if k != "chunk_nodes"}  # the output does not depend on it
    params = {"generator": GENERATOR_VERSION, "seed": seed, **content}

    def build():
        graph, info = generate_dcsbm(cfg, seed, progress)
        return {"whole": [graph]}, info

    splits, path, info = cached_splits("dcsbm", params, build, root, progress)
    graph = splits["whole"][0]
    return one_graph_dataset(graph, graph.node_data["split"], name="dcsbm",
                             task=TaskSpec("node", "multiclass", cfg.num_classes, "accuracy", True),
                             node_features=FeatureSpec("continuous", dim=cfg.feature_dim + 1),
                             edge_features=FeatureSpec(), card=DCSBM_CARD,
                             info={"config": asdict(cfg), "seed": seed, "cache_file": str(path), **info})
