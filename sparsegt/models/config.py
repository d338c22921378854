"""`ModelConfig`: every choice that shapes a `GraphTransformer`, as plain data (YAML-loadable).

```yaml
model:
  layer: gps            # gps | gt | grit | exphormer | mpnn_vn | topk | gine | gatedgcn | gcn | largegt
  num_layers: 6
  hidden: 64
  num_heads: 4
  local: gatedgcn       # gps / exphormer / mpnn_vn: gine | gatedgcn | none
  attention: full       # gps: full | expander | topk | performer | combiner | gin_attention | pna_attention | none
  attn_dropout: 0.5
  lap_pe: {k: 10, dim: 16, kind: deepset}
```

`ModelConfig.from_dict` rejects unknown keys (naming the closest valid one) and bad values with a
ValueError; `to_dict` gives the plain dictionary back (nested dataclasses become dicts).
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields
from typing import Any

from ..encodings.encoders import LAPPE_KINDS, SIGN_FLIPS
from ..encodings.laplacian import NORMALIZATIONS as LAP_NORMS
from ..nn.sparse_activation import TOPK_RULES
from .families import FAMILIES

__all__ = ["ModelConfig", "LapPEConfig", "RWSEConfig", "LAYER_KINDS"]

LAYER_KINDS = tuple(FAMILIES)  # the families of `sparsegt.models.families` (read again at validation)
GPS_ATTENTIONS = ("full", "expander", "topk", "performer", "combiner", "gin_attention", "pna_attention", "none")
LOCAL_KINDS = ("gine", "gatedgcn", "none")
POOLINGS = ("mean", "sum", "virtual")
NORM_KINDS = ("batch", "layer", "none")
PE_COMBINE = ("concat", "add")
LAPPE_COMBINE = PE_COMBINE + ("gate",)
FFN_TOPK_RULES = TOPK_RULES


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), list(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(known)}"
            raise ValueError(f"unknown key {where}.{key}{hint}")
    kwargs = {}
    for key, value in data.items():
        nested = _NESTED.get((cls.__name__, key))
        kwargs[key] = _from_dict(nested, value, f"{where}.{key}") if nested and value is not None else value
    return cls(**kwargs)


@dataclass
class LapPEConfig:
    """Laplacian eigenvector PE (`sparsegt.encodings.laplacian`, `sparsegt.encodings.LapPEEncoder`).

    Attributes:
        k: eigenpairs kept. dim: channels they are embedded to.
        kind: ``"linear"`` (GT: one Linear of the k eigenvectors) or ``"deepset"`` (GraphGPS's DeepSet
            over (eigenvector entry, eigenvalue) pairs).
        combine: concatenate to the node features (GraphGPS) or add to them (GT); ``"gate"``: neither, the
            ``dim``-wide encoding gates the GatedGCN messages of Exphormer layers by
            ``sigmoid(MLP(||pe_i - pe_j||^2))`` (EquivStableLapPE; `sparsegt.nn.ExphormerLayer`).
        normalization: the Laplacian, ``"sym"`` (``I - D^-1/2 A D^-1/2``, GT) or ``"none"`` (``D - A``,
            GraphGPS's ``laplacian_norm: none``).
        skip_trivial: drop the eigenvalue-0 eigenvectors (GT: ``EigVec[:, 1:k+1]``) instead of counting
            them among the k (GraphGPS).
        sign_flip: random eigenvector signs in training, one per eigenvector for the whole batch
            (``"batch"``: GT and GraphGPS), per graph (``"graph"``), or none (``"none"``: EquivStableLapPE).
    """

    k: int = 8
    dim: int = 16
    kind: str = "deepset"
    combine: str = "concat"
    normalization: str = "sym"
    skip_trivial: bool = False
    sign_flip: str = "graph"

    def __post_init__(self) -> None:
        if self.k < 1 or self.dim < 1:
            raise ValueError(f"lap_pe.k and lap_pe.dim must be >= 1, got k={self.k}, dim={self.dim}")
        for name, allowed in (("kind", LAPPE_KINDS), ("combine", LAPPE_COMBINE), ("normalization", LAP_NORMS),
                              ("sign_flip", SIGN_FLIPS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"lap_pe.{name} must be one of {allowed}, got {getattr(self, name)!r}")


@dataclass
class RWSEConfig:
    """Random-walk structural encoding: return probabilities of walks of 1..``steps`` embedded to ``dim``."""

    steps: int = 16
    dim: int = 16
    combine: str = "concat"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.dim < 1:
            raise ValueError(f"rwse.steps and rwse.dim must be >= 1, got steps={self.steps}, dim={self.dim}")
        if self.combine not in PE_COMBINE:
            raise ValueError(f"rwse.combine must be one of {PE_COMBINE}, got {self.combine!r}")


@dataclass
class ModelConfig:
    """Architecture of a `GraphTransformer` (see the module docstring for a YAML example).

    Attributes:
        layer: layer family (a name of ``sparsegt.models.families.FAMILIES``). num_layers, hidden (C), num_heads (H).
        local: local MPNN of gps / exphormer / mpnn_vn layers.
        attention: global attention of gps layers (the kinds: `sparsegt.nn.gps`; ``"expander"``: graph edges + a
            random expander; for virtual tokens as well use ``layer="exphormer"``).
        dropout: residual-branch / FFN dropout. attn_dropout: attention-weight dropout.
        norm: ``"batch"``, ``"layer"`` or ``"none"``.
        expander_degree: keys per node of the expander (exphormer; gps with attention="expander").
        num_virtual: virtual tokens per graph (exphormer, gps "expander"; mpnn_vn always uses 1).
        topk: keys kept per node (topk layers; gps with attention="topk"). topk_rule: gps with attention="topk":
            ``"exact"`` (a sort) or ``"statistical"`` (Spark's Gaussian-quantile threshold: about topk, no sort).
        performer_features: random features of the Performer attention.
        combiner_block: gps with attention="combiner": nodes per region (contiguous blocks of each graph's
            node ids; Combiner, `sparsegt.nn.CombinerAttention`).
        rrwp_steps: GRIT's RRWP steps K (identity included).
        lap_pe, rwse: positional / structural encodings (None: off).
        pooling: graph-level readout: ``"mean"``, ``"sum"`` or ``"virtual"`` (mpnn_vn / exphormer).
        head_layers: Linear layers of the output MLP (GraphGPS ``layers_post_mp``).
        head_shrink: halve the MLP width at each layer (GT's MLPReadout).
        head_l2norm: scale each hidden layer of the head to unit norm (GraphGym's default, so the heads of
            GraphGPS, GRIT and Exphormer).
        dummy_edge: on data without edge features, give every edge one learned vector (GraphGPS's and
            GRIT's ``DummyEdge``: ``nn.Embedding(1, C)``, N(0, 1)) so that layers that keep edge states
            start from it (else they start from nothing: GatedGCN's first edge residual is skipped).
        seed: seed of the random patterns (expander).
        num_centroids: largegt: centroids K of the global codebook (0: local module only).
        codebook_dim: largegt: width of the embeddings the codebook clusters. codebook_decay: its EMA decay.
        feature_hops: largegt: hop aggregates Â X .. Â^T X precomputed on the whole graph (T tokens per node
            besides its state). local_hops: largegt: hops of the seed neighbourhood its local module attends over.
        ffn_topk: activation top-k in every FFN of the layers (Lazy Neuron / Spark Transformer;
            `sparsegt.nn.sparsify_feed_forward`): keep this fraction in (0, 1] of each FFN's hidden units per
            node (k = round(ffn_topk * hidden width), at least 1); None: the plain activation. The activation has
            no parameters, so checkpoints are unchanged; it applies in training and at inference alike.
        ffn_topk_rule: ``"exact"`` (`TopKReLU`: at most k nonzeros per row, a sort) or ``"statistical"``
            (`StatisticalTopKReLU`: Spark's Gaussian-quantile threshold, about k, no sort).
    """

    layer: str = "gps"
    num_layers: int = 4
    hidden: int = 64
    num_heads: int = 4
    local: str = "gine"
    attention: str = "full"
    dropout: float = 0.0
    attn_dropout: float = 0.0
    norm: str = "batch"
    expander_degree: int = 6
    num_virtual: int = 1
    topk: int = 16
    topk_rule: str = "exact"
    performer_features: int = 64
    combiner_block: int = 16
    rrwp_steps: int = 21
    lap_pe: LapPEConfig | None = None
    rwse: RWSEConfig | None = None
    pooling: str = "mean"
    head_layers: int = 3
    head_shrink: bool = False
    head_l2norm: bool = False
    dummy_edge: bool = False
    seed: int = 0
    num_centroids: int = 4096
    codebook_dim: int = 64
    codebook_decay: float = 0.99
    feature_hops: int = 2
    local_hops: int = 2
    ffn_topk: float | None = None
    ffn_topk_rule: str = "exact"

    def __post_init__(self) -> None:
        for name, value, allowed in (("layer", self.layer, tuple(FAMILIES)), ("local", self.local, LOCAL_KINDS),
                                     ("attention", self.attention, GPS_ATTENTIONS),
                                     ("pooling", self.pooling, POOLINGS), ("norm", self.norm, NORM_KINDS)):
            if value not in allowed:
                close = difflib.get_close_matches(str(value), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"model.{name} must be one of {allowed}, got {value!r}{hint}")
        for name in ("num_layers", "hidden", "num_heads", "head_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if self.layer not in ("gine", "gatedgcn", "gcn") and self.hidden % self.num_heads:
            raise ValueError(f"model.hidden ({self.hidden}) must be a multiple of "
                             f"model.num_heads ({self.num_heads})")
        for name in ("dropout", "attn_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"model.{name} must be in [0, 1), got {getattr(self, name)}")
        if self.expander_degree < 0 or self.expander_degree % 2:
            raise ValueError(f"model.expander_degree must be even and >= 0, got {self.expander_degree}")
        if self.num_virtual < 0 or self.topk < 1 or self.rrwp_steps < 2 or self.performer_features < 1 or \
                self.combiner_block < 1:
            raise ValueError("model.num_virtual must be >= 0, topk >= 1, rrwp_steps >= 2, "
                             "performer_features >= 1, combiner_block >= 1")
        if self.pooling == "virtual" and not (self.layer == "mpnn_vn" or
                                               (self.layer == "exphormer" and self.num_virtual > 0)):
            raise ValueError("model.pooling='virtual' needs layer 'mpnn_vn', or 'exphormer' with "
                             "num_virtual > 0")
        if self.layer == "gps" and self.local == "none" and self.attention == "none":
            raise ValueError("model.local and model.attention are both 'none': a gps layer would do nothing")
        if self.num_centroids < 0 or self.codebook_dim < 1 or not 0 <= self.codebook_decay < 1:
            raise ValueError("model.num_centroids must be >= 0 (0: no global codebook), codebook_dim >= 1 and "
                             "codebook_decay in [0, 1)")
        if self.feature_hops < 1 or self.local_hops < 0:
            raise ValueError("model.feature_hops must be >= 1 and model.local_hops >= 0")
        if self.ffn_topk is not None:
            if isinstance(self.ffn_topk, bool) or not isinstance(self.ffn_topk, (int, float)) \
                    or not 0.0 < float(self.ffn_topk) <= 1.0:
                raise ValueError(f"model.ffn_topk is the fraction of FFN hidden units kept per node, in (0, 1] "
                                 f"(e.g. model.ffn_topk=0.1), or null for no top-k; got {self.ffn_topk!r}")
            self.ffn_topk = float(self.ffn_topk)
        if self.topk_rule not in TOPK_RULES:
            raise ValueError(f"model.topk_rule must be one of {TOPK_RULES}, got {self.topk_rule!r}")
        if self.ffn_topk_rule not in FFN_TOPK_RULES:
            raise ValueError(f"model.ffn_topk_rule must be one of {FFN_TOPK_RULES}, got {self.ffn_topk_rule!r}")
        if isinstance(self.lap_pe, dict):
            self.lap_pe = _from_dict(LapPEConfig, self.lap_pe, "model.lap_pe")
        if isinstance(self.rwse, dict):
            self.rwse = _from_dict(RWSEConfig, self.rwse, "model.rwse")
        if self.lap_pe is not None and self.lap_pe.combine == "gate" and not (
                self.layer == "exphormer" and self.local == "gatedgcn"):
            raise ValueError("model.lap_pe.combine='gate' (EquivStableLapPE) gates GatedGCN messages: it needs "
                             "layer='exphormer' with local='gatedgcn'")
        if self.layer == "largegt" and (self.lap_pe is not None or self.rwse is not None):
            raise ValueError("model.layer='largegt' encodes its hop tokens with the node encoder alone: drop "
                             "model.lap_pe and model.rwse (the paper's node2vec input is not supported)")
        concat = sum(pe.dim for pe in (self.lap_pe, self.rwse) if pe is not None and pe.combine == "concat")
        if concat >= self.hidden:
            raise ValueError(f"concatenated encodings take {concat} of hidden={self.hidden} channels; "
                             "lower their dim or use combine='add'")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a plain mapping (e.g. YAML); unknown keys are a ValueError with a suggestion."""
        return _from_dict(cls, data, "model")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NESTED = {("ModelConfig", "lap_pe"): LapPEConfig, ("ModelConfig", "rwse"): RWSEConfig}
