"""nn modules that embed precomputed encodings: LapPE, RWSE, SPD attention bias, RRWP.

Each maps the tensors `add_encodings` / `rrwp` / `shortest_path_distance` produce to features the model
adds or concatenates; how they are combined with the node features is the model's business.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

__all__ = ["LapPEEncoder", "RWSEEncoder", "SPDBias", "RRWPLinearEncoder", "LAPPE_KINDS", "SIGN_FLIPS"]

LAPPE_KINDS = ("linear", "deepset")
SIGN_FLIPS = ("graph", "batch", "none")


class LapPEEncoder(nn.Module):
    r"""Laplacian eigenvector encoder: [N, k] eigenpairs -> [N, out_dim].

    ``kind="linear"`` (GT, Dwivedi & Bresson): one linear map of the k eigenvectors,
    ``W [u_1(i), ..., u_k(i)] + b``; eigenvalues unused (GT's ``embedding_lap_pos_enc``).
    ``kind="deepset"`` (GraphGPS's ``LapPE`` with ``model: DeepSet``): each eigenpair
    ``(u_j(i), lambda_j)`` goes through ``Linear(2, 2d) -> ReLU -> [Linear(2d, 2d) -> ReLU] x (layers - 2)
    -> Linear(2d, d) -> ReLU`` (``Linear(2, d) -> ReLU`` when ``layers = 1``), then the sum over j of the
    unpadded pairs (permutation invariant over eigenpairs, eigenvalue-aware).

    Eigenvector signs are arbitrary, so during training (``self.training``) every forward flips each
    eigenvector by a random sign: ``sign_flip="batch"`` draws one sign per eigenvector index for the
    whole batch (GT and GraphGPS), ``"graph"`` one per graph (needs ``batch``), ``"none"`` never (GraphGPS's
    and Exphormer's EquivStableLapPE: ``kind="linear"`` with ``sign_flip="none"`` is its
    ``EquivStableLapPENodeEncoder``, ``nn.Linear(k, d)`` of the eigenvectors, padding read as 0). At eval no
    flip happens. Padded entries (``lap_mask`` False) contribute nothing.

    Args:
        k: number of eigenpairs; out_dim: output width d; layers: DeepSet MLP depth (>= 1);
        sign_flip: ``"batch"``, ``"graph"`` or ``"none"``.
    """

    def __init__(self, k: int, out_dim: int, kind: str = "linear", layers: int = 2,
                 sign_flip: str = "graph") -> None:
        super().__init__()
        if kind not in LAPPE_KINDS:
            raise ValueError(f"kind must be one of {LAPPE_KINDS}, got {kind!r}")
        if sign_flip not in SIGN_FLIPS:
            raise ValueError(f"sign_flip must be one of {SIGN_FLIPS}, got {sign_flip!r}")
        if k < 1 or out_dim < 1 or layers < 1:
            raise ValueError(f"k = {k}, out_dim = {out_dim} and layers = {layers} must be >= 1")
        self.k, self.out_dim, self.kind, self.sign_flip = k, out_dim, kind, sign_flip
        if kind == "linear":
            self.linear = nn.Linear(k, out_dim)
        else:
            width = out_dim if layers == 1 else 2 * out_dim
            mlp: list[nn.Module] = [nn.Linear(2, width), nn.ReLU()]
            for _ in range(layers - 2):
                mlp += [nn.Linear(width, width), nn.ReLU()]
            if layers > 1:
                mlp += [nn.Linear(width, out_dim), nn.ReLU()]
            self.pair_mlp = nn.Sequential(*mlp)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.reset_parameters()

    def random_signs(self, lap_vec: Tensor, batch: Tensor | None = None) -> Tensor:
        """[N, k] of +-1: one sign per eigenvector (per graph when ``sign_flip="graph"`` and ``batch`` [N])."""
        per_graph = self.sign_flip == "graph" and batch is not None
        num_groups = (int(batch.max()) + 1 if batch.numel() else 1) if per_graph else 1
        signs = torch.randint(0, 2, (num_groups, self.k), device=lap_vec.device).to(lap_vec.dtype) * 2 - 1
        return signs[batch] if per_graph else signs.expand(lap_vec.shape[0], -1)

    def forward(self, lap_vec: Tensor, lap_val: Tensor, lap_mask: Tensor,
                batch: Tensor | None = None) -> Tensor:
        """lap_vec, lap_val: [N, k] float; lap_mask: [N, k] bool; batch: optional [N] graph index.

        Returns [N, out_dim]."""
        if lap_vec.dim() != 2 or lap_vec.shape[1] != self.k:
            raise ValueError(f"lap_vec must have shape [N, {self.k}], got {tuple(lap_vec.shape)}")
        if lap_val.shape != lap_vec.shape or lap_mask.shape != lap_vec.shape:
            raise ValueError(f"lap_val {tuple(lap_val.shape)} and lap_mask {tuple(lap_mask.shape)} must "
                             f"match lap_vec {tuple(lap_vec.shape)}")
        mask = lap_mask.to(lap_vec.dtype)
        vec = lap_vec * mask
        if self.training and self.sign_flip != "none":
            vec = vec * self.random_signs(lap_vec, batch)
        if self.kind == "linear":
            return self.linear(vec)
        pairs = self.pair_mlp(torch.stack([vec, lap_val * mask], dim=2))  # [N, k, d]
        return (pairs * mask.unsqueeze(2)).sum(dim=1)


class RWSEEncoder(nn.Module):
    """RWSE encoder (GraphGPS kernel PE): BatchNorm over the K return probabilities (``norm="batch"``; ``"none"``:
    none), then a linear map (``kind="linear"``) or a two-layer MLP (``"mlp"``): [N, K] -> [N, out_dim].
    ``batch_norm: bool``, the old spelling of ``norm``, is deprecated."""

    def __init__(self, steps: int, out_dim: int, kind: str = "linear", norm: str = "batch", *,
                 batch_norm: bool | None = None) -> None:
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")
        if isinstance(norm, bool):  # the fourth positional argument was batch_norm
            norm, batch_norm = "batch", norm
        if batch_norm is not None:  # the layers' `renamed_keywords` lives in nn/, above this package
            warnings.warn("RWSEEncoder(batch_norm=...) is deprecated and will be removed in the next release; use "
                          "norm='batch' or norm='none'", DeprecationWarning, stacklevel=2)
            norm = "batch" if batch_norm else "none"
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        self.steps = steps
        self.norm = nn.BatchNorm1d(steps) if norm == "batch" else nn.Identity()
        self.proj = (nn.Linear(steps, out_dim) if kind == "linear" else
                     nn.Sequential(nn.Linear(steps, 2 * out_dim), nn.ReLU(), nn.Linear(2 * out_dim, out_dim)))

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.BatchNorm1d)):
                module.reset_parameters()

    def forward(self, rwse: Tensor) -> Tensor:
        """rwse: [N, K] -> [N, out_dim]."""
        if rwse.dim() != 2 or rwse.shape[1] != self.steps:
            raise ValueError(f"rwse must have shape [N, {self.steps}], got {tuple(rwse.shape)}")
        return self.proj(self.norm(rwse))


class SPDBias(nn.Module):
    """Graphormer-style shortest-path attention bias: distance [E] in 0..max_distance -> [E, num_heads]."""

    def __init__(self, max_distance: int, num_heads: int) -> None:
        super().__init__()
        self.max_distance = max_distance
        self.embedding = nn.Embedding(max_distance + 1, num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.embedding.weight)  # start as plain attention

    def forward(self, distance: Tensor) -> Tensor:
        """distance: [E] int64 (values above max_distance are clamped) -> [E, num_heads]."""
        if distance.dtype.is_floating_point or distance.dim() != 1:
            raise ValueError(f"distance must be a 1-D integer tensor [E], got {distance.dtype} "
                             f"{tuple(distance.shape)}")
        if distance.numel() and int(distance.min()) < 0:
            raise ValueError(f"distance has a negative entry ({int(distance.min())}); use max_distance for "
                             "unreachable pairs")
        return self.embedding(distance.clamp(max=self.max_distance))


class RRWPLinearEncoder(nn.Module):
    """GRIT's linear RRWP embedding: [*, steps] random-walk probabilities -> [*, out_dim].

    Use it on `rrwp_node` output (node side, added to ``x``) or on `rrwp` output (pair side, the
    initial pair representation / edge bias). ``bias=False`` as in GRIT's node encoder.
    """

    def __init__(self, steps: int, out_dim: int, bias: bool = False) -> None:
        super().__init__()
        self.steps = steps
        self.linear = nn.Linear(steps, out_dim, bias=bias)

    def reset_parameters(self) -> None:
        self.linear.reset_parameters()

    def forward(self, rrwp: Tensor) -> Tensor:
        if rrwp.shape[-1] != self.steps:
            raise ValueError(f"rrwp must have {self.steps} columns, got shape {tuple(rrwp.shape)}")
        return self.linear(rrwp)
