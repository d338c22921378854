"""Routing patterns: Routing Transformer's k-means clusters and BiFormer's bi-level region routing.

Both pick keys per query from q/k each step on q's device, without gradient through the choice.
Features used for routing are the heads concatenated, ``[N, H * D]`` (one pattern for all heads).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..graph import Graph
from ._csr import check_int, csr_from_pairs, finish, graph_offsets, segment_arange
from .content import _as_heads

__all__ = ["routing", "RoutingPattern", "spherical_kmeans", "bilevel_routing", "grid_regions"]

AFFINITY_CHUNK = 1 << 22   # region affinities computed at once by bilevel_routing


def _unit_rows(x: Tensor) -> Tensor:
    """[N, H, D] -> [N, H * D]: each head scaled to unit norm (Routing Transformer routes on the sphere)."""
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x.flatten(1)


def spherical_kmeans(points: Tensor, n_clusters: int, iterations: int = 5) -> Tensor:
    """[C, F] centroids of ``points`` [N, F] by spherical k-means, deterministic: initialised at
    ``n_clusters`` evenly spaced points (repeated if N < C)."""
    n = points.shape[0]
    if n == 0:
        return torch.zeros(n_clusters, points.shape[1], dtype=points.dtype, device=points.device)
    start = torch.linspace(0, n - 1, n_clusters, device=points.device).round().long()
    centroids = points[start].clone()
    for _ in range(iterations):
        assign = (points @ centroids.T).argmax(1)
        sums = torch.zeros_like(centroids).index_add(0, assign, points)
        counts = torch.bincount(assign, minlength=n_clusters)
        centroids = torch.where(counts[:, None] > 0, sums, centroids)
        centroids = centroids / centroids.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return centroids


def _bucket_pattern(query_bucket: Tensor, key_bucket: Tensor, key_priority: Tensor, num_buckets: int,
                    max_keys: int | None, num_cols: int) -> Graph:
    """Each query attends the keys of its bucket; with ``max_keys`` only the highest-priority ones.

    Sorting touches only the Nk keys (never the E entries): the kept keys of every bucket are listed
    in ascending order once, and each query's row copies its bucket's list, so rows come out sorted.
    """
    if max_keys is not None:
        order = torch.sort(key_priority, descending=True, stable=True).indices
        order = order[torch.sort(key_bucket[order], stable=True).indices]    # by bucket, then priority
        total = torch.bincount(key_bucket, minlength=num_buckets)
        first_of_bucket = (torch.cumsum(total, 0) - total)[key_bucket[order]]
        rank = torch.arange(order.numel(), device=order.device) - first_of_bucket
        kept = order[rank < max_keys]
    else:
        kept = torch.arange(key_bucket.numel(), device=key_bucket.device)
    kept = kept[torch.sort(key_bucket[kept] * max(num_cols, 1) + kept).indices]   # by bucket, then key id
    counts = torch.bincount(key_bucket[kept], minlength=num_buckets)
    bucket_start = torch.cumsum(counts, 0) - counts
    degree = counts[query_bucket]
    indptr = torch.zeros(query_bucket.numel() + 1, dtype=torch.long, device=query_bucket.device)
    indptr[1:] = torch.cumsum(degree, 0)
    col = kept[torch.repeat_interleave(bucket_start[query_bucket], degree) + segment_arange(degree)]
    return Graph(indptr, col, num_cols, validate=False)


@torch.no_grad()
def routing(q: Tensor, k: Tensor, n_clusters: int, *, centroids: Tensor | None = None, iterations: int = 5,
            max_keys_per_cluster: int | None = None, batch: Graph | None = None) -> Graph:
    """Routing Transformer pattern: query i attends key j iff both fall in the same k-means cluster.

    Each head of q and k is scaled to unit norm and the heads concatenated (``F = H * D``); a point
    joins the cluster of its nearest centroid (largest cosine).

    Args:
        q: [Nq, H, D] or [Nq, D]. k: [Nk, H, D] or [Nk, D].
        n_clusters: C. centroids: [C, F] unit-norm centroids (e.g. `RoutingPattern`'s online state);
            None: ``iterations`` of spherical k-means on the normalised q and k of this call.
        max_keys_per_cluster: keep only the keys closest to their centroid, at most this many per
            cluster, so E <= Nq * max_keys_per_cluster (the Routing Transformer's balanced clusters
            bound the work the same way). None: every key of the cluster (E can reach Nq * Nk).
        batch: a square batch (``ptr``): queries only see keys of their own graph/sequence.
    Returns:
        `Graph` [Nq, Nk]; a query whose cluster holds no key gets an empty row (zeros from the
        kernel). Take ``add_self_loops`` or a `union` with a window to guarantee keys.
    """
    q, k = _as_heads(q, k, "routing")
    n_clusters = check_int("routing: n_clusters", n_clusters, 1)
    qf, kf = _unit_rows(q), _unit_rows(k)
    if centroids is None:
        centroids = spherical_kmeans(torch.cat([qf, kf]), n_clusters, iterations)
    if tuple(centroids.shape) != (n_clusters, qf.shape[1]):
        raise ValueError(f"routing: centroids must be [n_clusters, H*D] = [{n_clusters}, {qf.shape[1]}], "
                         f"got {tuple(centroids.shape)}")
    centroids = centroids.to(device=qf.device, dtype=qf.dtype)
    q_sim, k_sim = qf @ centroids.T, kf @ centroids.T
    q_cluster, k_cluster = q_sim.argmax(1), k_sim.argmax(1)
    k_priority = k_sim.gather(1, k_cluster[:, None]).squeeze(1)
    num_buckets = n_clusters
    if batch is not None:
        ptr, col_ptr = graph_offsets(batch)
        if batch.num_nodes != q.shape[0] or batch.num_cols != k.shape[0]:
            raise ValueError(f"routing: batch is {batch.num_nodes}x{batch.num_cols} but q has {q.shape[0]} "
                             f"rows and k {k.shape[0]}")
        graphs = torch.arange(len(ptr) - 1, device=q.device)
        q_cluster = graphs.repeat_interleave(ptr.diff()) * n_clusters + q_cluster
        k_cluster = graphs.repeat_interleave(col_ptr.diff()) * n_clusters + k_cluster
        num_buckets = n_clusters * len(graphs)
    if max_keys_per_cluster is not None:
        max_keys_per_cluster = check_int("routing: max_keys_per_cluster", max_keys_per_cluster, 1)
    out = _bucket_pattern(q_cluster, k_cluster, k_priority, num_buckets, max_keys_per_cluster, k.shape[0])
    if batch is not None and batch.ptr is not None:
        out = finish(out.indptr, out.indices, out.num_cols, batch.ptr, batch.col_ptr)
    return out


class RoutingPattern(nn.Module):
    """Routing Transformer's online k-means as module state.

    ``centroids`` [C, H*D] is a buffer (saved in checkpoints, moved by ``.to``). In training mode
    every call moves each centroid towards the mean of the unit-norm q and k rows assigned to it:
    ``c <- normalise(decay * c + (1 - decay) * mean)`` (an exponential moving average, the paper's
    online mini-batch k-means); in eval mode centroids stay fixed.

    Args:
        n_clusters: C. dim: H * D of the q/k it will route. decay: EMA decay in [0, 1).
        max_keys_per_cluster: see `routing`. seed: initial centroids (random unit vectors).
    """

    centroids: Tensor

    def __init__(self, n_clusters: int, dim: int, decay: float = 0.999,
                 max_keys_per_cluster: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"RoutingPattern: decay = {decay} must be in [0, 1)")
        self.n_clusters = check_int("RoutingPattern: n_clusters", n_clusters, 1)
        self.dim = check_int("RoutingPattern: dim", dim, 1)
        self.decay = decay
        self.max_keys_per_cluster = max_keys_per_cluster
        init = torch.randn(n_clusters, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("centroids", init / init.norm(dim=1, keepdim=True))

    @torch.no_grad()
    def update(self, q: Tensor, k: Tensor) -> None:
        """One EMA step of the centroids towards the points assigned to them."""
        q, k = _as_heads(q, k, "RoutingPattern")
        points = torch.cat([_unit_rows(q), _unit_rows(k)]).to(self.centroids.dtype)
        assign = (points @ self.centroids.T).argmax(1)
        sums = torch.zeros_like(self.centroids).index_add(0, assign, points)
        counts = torch.bincount(assign, minlength=self.n_clusters).to(points.dtype)
        means = sums / counts.clamp_min(1)[:, None]
        moved = self.decay * self.centroids + (1 - self.decay) * means
        moved = torch.where(counts[:, None] > 0, moved, self.centroids)
        self.centroids.copy_(moved / moved.norm(dim=1, keepdim=True).clamp_min(1e-12))

    def forward(self, q: Tensor, k: Tensor, batch: Graph | None = None) -> Graph:
        """The routing pattern of q [Nq, H, D] against k [Nk, H, D] (updating centroids in training)."""
        if self.training:
            self.update(q, k)
        return routing(q, k, self.n_clusters, centroids=self.centroids,
                       max_keys_per_cluster=self.max_keys_per_cluster, batch=batch)

    def extra_repr(self) -> str:
        return f"n_clusters={self.n_clusters}, dim={self.dim}, decay={self.decay}"


def grid_regions(h: int, w: int, region_h: int, region_w: int) -> Tensor:
    """[h * w] region id of every token of a row-major ``h x w`` image cut into ``region_h x region_w``
    windows (BiFormer's S x S regions; edge windows may be smaller)."""
    row = torch.arange(h).repeat_interleave(w)
    col = torch.arange(w).repeat(h)
    per_row = -(-w // region_w)
    return (torch.div(row, region_h, rounding_mode="floor") * per_row
            + torch.div(col, region_w, rounding_mode="floor"))


@torch.no_grad()
def bilevel_routing(q: Tensor, k: Tensor, regions: int | Tensor, top_r: int, *,
                    include_own_region: bool = False) -> Graph:
    """BiFormer's bi-level routing: route between regions, then attend token-to-token inside the routes.

    Region-level queries and keys are the means of q and k over each region's tokens (heads
    concatenated); the region affinity is ``A = q_region @ k_region^T``; region a keeps its ``top_r``
    most affine regions ``R(a)``; every token of region a attends to every token of R(a)
    (plus region a itself if ``include_own_region``).

    Args:
        q: [N, H, D] or [N, D]. k: same number of tokens N (self-attention over one token set).
        regions: an int (consecutive blocks of that many tokens, the last may be shorter) or an [N]
            region id per token (e.g. `grid_regions` for images).
        top_r: routed regions per region.
    Returns:
        `Graph` [N, N] with ``sum_t |tokens of R(region(t))|`` entries, sorted.
    """
    q, k = _as_heads(q, k, "bilevel_routing")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"bilevel_routing: q and k must cover the same tokens, got {q.shape[0]} and "
                         f"{k.shape[0]}")
    n = q.shape[0]
    top_r = check_int("bilevel_routing: top_r", top_r, 1)
    if isinstance(regions, Tensor):
        region = regions.to(device=q.device, dtype=torch.long).reshape(-1)
        if region.numel() != n or (n and int(region.min()) < 0):
            raise ValueError(f"bilevel_routing: regions must be [N] = [{n}] non-negative ids, got "
                             f"{tuple(regions.shape)}")
    else:
        size = check_int("bilevel_routing: regions", regions, 1)
        region = torch.div(torch.arange(n, device=q.device), size, rounding_mode="floor")
    if n == 0:
        return Graph.empty(0).to(q.device)
    num_regions = int(region.max()) + 1
    counts = torch.bincount(region, minlength=num_regions)
    qf, kf = q.flatten(1), k.flatten(1)
    safe = counts.clamp_min(1).to(qf.dtype)[:, None]
    q_region = qf.new_zeros(num_regions, qf.shape[1]).index_add(0, region, qf) / safe
    k_region = kf.new_zeros(num_regions, kf.shape[1]).index_add(0, region, kf) / safe
    # region affinity q_region @ k_region^T in row chunks: memory O(AFFINITY_CHUNK + R * top_r), never R x R
    no_tokens = counts == 0                                    # ids without tokens are never routed to
    rows_per_chunk = max(1, AFFINITY_CHUNK // num_regions)
    routed = torch.cat([torch.topk((q_region[s:s + rows_per_chunk] @ k_region.T).masked_fill_(no_tokens, -torch.inf),
                                   min(top_r, num_regions), dim=1).indices
                        for s in range(0, num_regions, rows_per_chunk)])     # [R, top_r]
    if include_own_region:
        routed = torch.cat([routed, torch.arange(num_regions, device=q.device)[:, None]], 1)
    # region-level CSR of key tokens: tokens sorted by region
    token_order = torch.sort(region, stable=True).indices
    region_start = torch.cumsum(counts, 0) - counts
    routed = torch.sort(routed, dim=1).values
    dup = torch.zeros_like(routed, dtype=torch.bool)
    dup[:, 1:] = routed[:, 1:] == routed[:, :-1]
    routed_count = torch.where(dup, torch.zeros_like(routed), counts[routed])        # [R, r]
    degree_of_region = routed_count.sum(1)
    degree = degree_of_region[region]                                               # [N]
    row = torch.arange(n, device=q.device).repeat_interleave(degree)
    # for each token row: walk its region's routed regions in order
    per_region_row = routed[region]                                                 # [N, r]
    per_region_count = routed_count[region]
    flat_region = per_region_row.reshape(-1).repeat_interleave(per_region_count.reshape(-1))
    col = token_order[region_start[flat_region] + segment_arange(per_region_count.reshape(-1))]
    # consecutive-block regions routed in ascending order give rows already sorted and unique
    return csr_from_pairs(row, col, n, n, presorted=not isinstance(regions, Tensor))
