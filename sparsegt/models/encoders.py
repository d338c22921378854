"""Feature encoders: raw node / edge features -> [*, C] embeddings, by the form a `FeatureSpec` declares.

- ``categorical``: int64 [N, F] (or [N]); column f in ``[0, cardinalities[f])``; the embedding is the
  sum of one ``nn.Embedding`` per column (OGB's AtomEncoder/BondEncoder scheme);
- ``continuous``: float [N, dim] -> ``Linear(dim, C)``;
- ``none``: a learned constant vector for every row (GraphGPS's "DummyEdge").

`RRWPEncoder` embeds GRIT's relative random-walk probabilities: the diagonal entries (i, i) into the
node states, every pattern entry into a pair state.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..data.spec import FeatureSpec
from ..graph import Graph

__all__ = ["FeatureEncoder", "RRWPEncoder"]


class FeatureEncoder(nn.Module):
    """Embed features of the form ``spec`` into ``out_dim`` channels.

    Args:
        spec: the dataset's `FeatureSpec`. out_dim: C. what: ``"node"`` or ``"edge"`` (for messages).
    """

    def __init__(self, spec: FeatureSpec, out_dim: int, what: str = "node") -> None:
        super().__init__()
        self.spec, self.out_dim, self.what = spec, out_dim, what
        if spec.kind == "categorical":
            if not spec.cardinalities:
                raise ValueError(f"{what} FeatureSpec is categorical but lists no cardinalities")
            self.embeddings = nn.ModuleList(nn.Embedding(int(c), out_dim) for c in spec.cardinalities)
        elif spec.kind == "continuous":
            if spec.dim < 1:
                raise ValueError(f"{what} FeatureSpec is continuous but has dim={spec.dim}")
            self.linear = nn.Linear(spec.dim, out_dim)
        else:
            self.constant = nn.Parameter(torch.zeros(out_dim))
            nn.init.normal_(self.constant, std=0.1)

    def forward(self, features: Tensor | None, num_rows: int) -> Tensor:
        """features: [R, F] (categorical int64 or continuous float) or None for kind ``"none"`` -> [R, C]."""
        kind = self.spec.kind
        if kind == "none":
            return self.constant.expand(num_rows, self.out_dim)
        if features is None:
            raise ValueError(f"the {self.what} FeatureSpec is {kind!r} but the batch has no "
                             f"{self.what} features")
        if features.shape[0] != num_rows:
            raise ValueError(f"{self.what} features have {features.shape[0]} rows, expected {num_rows}")
        if features.dim() == 1:
            features = features[:, None]
        if kind == "continuous":
            if features.shape[1] != self.spec.dim:
                raise ValueError(f"{self.what} features have {features.shape[1]} columns but the FeatureSpec "
                                 f"says dim={self.spec.dim}")
            return self.linear(features.to(self.linear.weight.dtype))
        if features.is_floating_point():
            raise ValueError(f"{self.what} features are float but the FeatureSpec is categorical "
                             "(int64 codes)")
        if features.shape[1] != len(self.embeddings):
            raise ValueError(f"{self.what} features have {features.shape[1]} columns but the "
                             f"FeatureSpec lists {len(self.embeddings)} cardinalities")
        out = None
        for column, embedding in enumerate(self.embeddings):
            codes = features[:, column]
            if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= embedding.num_embeddings):
                raise ValueError(f"{self.what} feature column {column} has codes in [{int(codes.min())}, "
                                 f"{int(codes.max())}] but its cardinality is {embedding.num_embeddings}")
            term = embedding(codes)
            out = term if out is None else out + term
        return out


class RRWPEncoder(nn.Module):
    """GRIT's RRWP embedding: ``x_i += W_n P_ii`` and ``pair_e = W_p rrwp_e`` (+ graph edge features).

    As GRIT's ``rrwp_linear`` node and edge encoders: no biases, xavier-uniform weights, so a pair that no
    walk of fewer than K steps joins starts at exactly 0 (GRIT's zero padding of the full graph).

    Args:
        steps: K (RRWP columns). out_dim: C.
    """

    def __init__(self, steps: int, out_dim: int) -> None:
        super().__init__()
        self.node_lin = nn.Linear(steps, out_dim, bias=False)
        self.pair_lin = nn.Linear(steps, out_dim, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.node_lin.weight)
        nn.init.xavier_uniform_(self.pair_lin.weight)

    def forward(self, x: Tensor, pattern: Graph, rrwp: Tensor, edge_attr: Tensor | None = None,
                edge_position: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x [N, C]; pattern [N, N] (E entries, containing every (i, i)); rrwp [E, K];
        edge_attr [E_graph, C] with ``edge_position`` [E_graph] (its entries' positions in the pattern).
        Returns ``(x [N, C], pair [E, C])``."""
        rrwp = rrwp.to(x.dtype)
        row, col = pattern.row_index(), pattern.indices
        diagonal = (row == col).nonzero().flatten()
        node_rrwp = rrwp.new_zeros(x.shape[0], rrwp.shape[1]).index_copy(0, row[diagonal], rrwp[diagonal])
        x = x + self.node_lin(node_rrwp)
        pair = self.pair_lin(rrwp)
        if edge_attr is not None:
            pair = pair.index_add(0, edge_position, edge_attr.to(pair.dtype))  # autocast: pair may be bf16
        return x, pair
