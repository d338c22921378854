"""`EMACodebook`: K centroids of a stream of embeddings, kept by online k-means with exponential moving averages.

LargeGT's global module (Dwivedi et al. 2023, after GOAT, Kong et al. 2023) lets every seed node attend to a
small codebook that summarises the embeddings of **all** nodes of the graph: the codebook is refreshed from
each training batch's seed embeddings, so over an epoch it sees the whole training set, and a seed reaches the
whole graph at the cost of K keys. The update is the EMA vector quantiser of VQ-VAE (van den Oord et al.
2017, appendix; Razavi et al. 2019): no gradient flows into the codebook.

One update with a batch of embeddings ``z_i`` [B, d] (``torch.no_grad``), decay ``γ`` in [0, 1):

1. assign: ``a_i = argmin_k ||z_i - c_k||²`` over the *live* centroids (``n_k > 0``; ties -> lowest k);
2. seed the dead: each centroid with ``n_k = 0`` (never assigned, or its count underflowed) takes one
   embedding of the batch, those farthest from their assigned centroid first (batch order when no centroid
   is live); that embedding is assigned to it instead and its old ``m_k`` is cleared. When no centroid was
   live, the embeddings left over join their nearest newly seeded centroid (the first batch initialises);
3. batch statistics: ``b_k = |{i : a_i = k}|``, ``s_k = Σ_{a_i = k} z_i`` (summed over all processes of a
   `torch.distributed` group, so every rank keeps the same codebook);
4. moving averages, for every k: ``n_k <- γ n_k + (1 - γ) b_k``, ``m_k <- γ m_k + (1 - γ) s_k``;
5. centroids: ``c_k <- m_k / n_k`` for the k with ``b_k > 0``.

So a centroid moves toward the mean of its assigned embeddings, ``c_k' = (1 - w) c_k + w mean_k`` with
``w = (1 - γ) b_k / (γ n_k + (1 - γ) b_k)``; a centroid with no embedding in the batch (an *empty* cluster)
stays exactly where it is while its count decays (``m_k / n_k`` would be the same ratio; it is not
recomputed, so not even rounding moves it). A freshly seeded centroid equals its embedding. The authors'
code adds Laplace smoothing to ``n_k`` against a division by zero; here zero counts are dead centroids
instead, so no smoothing is needed and the rule above is exact.

``counts`` (``n_k``) also gives the attention's bias ``log n_k``: LargeGT adds the log of the number of nodes
assigned to each centroid, so attending to centroid k stands for attending to its n_k nodes. ``n_k`` is the
EMA of the per-batch count, proportional to the cluster's share of the graph, and the constant factor
(graph size / batch size) cancels in the softmax.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["EMACodebook"]


class EMACodebook(nn.Module):
    """K centroids of dimension d, updated by `update` (see the module docstring); buffers only, no parameters.

    Args:
        num_centroids: K. dim: d. decay: γ (LargeGT and GOAT: 0.99).
        sync: sum the batch statistics over the default `torch.distributed` process group when one is
            initialised with more than one process (the update must then run on every rank in step, as a
            DDP training step does).

    Buffers: ``centroids`` [K, d], ``counts`` [K] (``n_k``), ``sums`` [K, d] (``m_k``).
    """

    def __init__(self, num_centroids: int, dim: int, decay: float = 0.99, sync: bool = True) -> None:
        super().__init__()
        if num_centroids < 1 or dim < 1:
            raise ValueError(f"EMACodebook needs num_centroids >= 1 and dim >= 1, got {num_centroids}, {dim}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMACodebook decay must lie in [0, 1), got {decay}")
        self.num_centroids, self.dim, self.decay, self.sync = num_centroids, dim, float(decay), sync
        self.register_buffer("centroids", torch.zeros(num_centroids, dim))
        self.register_buffer("counts", torch.zeros(num_centroids))
        self.register_buffer("sums", torch.zeros(num_centroids, dim))

    def reset_parameters(self) -> None:
        """Every centroid dead again (the next update seeds them from its embeddings)."""
        for buffer in (self.centroids, self.counts, self.sums):
            buffer.zero_()

    @property
    def live(self) -> Tensor:
        """[K] bool: the centroids that hold embeddings (``n_k > 0``); attention uses only these."""
        return self.counts > 0

    def assign(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(``a`` [B] nearest live centroid or -1 when none is live, ``d`` [B] its squared distance or +inf)."""
        live = torch.nonzero(self.live).reshape(-1)
        if live.numel() == 0:
            return (torch.full((z.shape[0],), -1, dtype=torch.long, device=z.device),
                    torch.full((z.shape[0],), float("inf"), dtype=z.dtype, device=z.device))
        centroids = self.centroids[live].to(z.dtype)
        distance = (z.pow(2).sum(1, keepdim=True) - 2 * z @ centroids.T + centroids.pow(2).sum(1)).clamp_min(0)
        best, position = distance.min(dim=1)  # first minimum: ties go to the lowest centroid id
        return live[position], best

    @torch.no_grad()
    def update(self, z: Tensor) -> Tensor:
        """One EMA k-means step with embeddings ``z`` [B, d] (detached); returns their assignments ``a`` [B]."""
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(f"EMACodebook.update takes embeddings [B, {self.dim}], got {tuple(z.shape)}")
        z = z.detach().to(self.centroids.dtype)
        assignment, distance = self.assign(z)
        dead = torch.nonzero(~self.live).reshape(-1)
        if dead.numel() and z.shape[0]:
            # farthest first; stable, so equal distances (all +inf when nothing is live) keep batch order
            order = torch.sort(distance, descending=True, stable=True).indices
            taken = min(dead.numel(), z.shape[0])
            seeded, seeds = dead[:taken], order[:taken]
            assignment[seeds] = seeded
            self.sums[seeded] = 0.0  # a dead centroid starts afresh: nothing of what it held before remains
            rest = torch.nonzero(assignment < 0).reshape(-1)  # nothing was live: nearest new centroid
            if rest.numel():
                nearest = torch.cdist(z[rest], z[seeds]).argmin(dim=1)
                assignment[rest] = seeded[nearest]
        batch_counts = torch.bincount(assignment, minlength=self.num_centroids).to(z.dtype)
        batch_sums = torch.zeros_like(self.sums).index_add_(0, assignment, z)
        if self.sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(batch_counts)
            dist.all_reduce(batch_sums)
        self.counts.mul_(self.decay).add_(batch_counts, alpha=1 - self.decay)
        self.sums.mul_(self.decay).add_(batch_sums, alpha=1 - self.decay)
        moved = batch_counts > 0
        self.centroids[moved] = self.sums[moved] / self.counts[moved].unsqueeze(1)
        return assignment

    def extra_repr(self) -> str:
        return f"num_centroids={self.num_centroids}, dim={self.dim}, decay={self.decay}"
