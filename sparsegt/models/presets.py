"""Published configurations of GT, GraphGPS, GRIT and Exphormer on PATTERN and CLUSTER, as plain data.

``PRESETS[name]`` is a `ModelConfig`; ``TRAINING[name]`` the optimiser settings of the same source
(batch size, learning rate, weight decay, epochs, warm-up, scheduler) for the trainer to reproduce.
Sources (read from the authors' public config files):

- GT: graphdeeplearning/graphtransformer ``configs/SBMs_GraphTransformer_LapPE_{PATTERN,CLUSTER}_500k_
  sparse_graph_BN.json``: L=10, hidden 80, 8 heads, BatchNorm, dropout 0, LapPE k=2 (PATTERN) / 10
  (CLUSTER) added through a linear map, MLP readout with halving widths (L=2 -> 3 layers);
  Adam lr 5e-4 with reduce-on-plateau (factor 0.5, patience 10), batch 26 / 32.
- GraphGPS: rampasek/GraphGPS ``configs/GPS/{pattern,cluster}-GPS.yaml``: GatedGCN + Transformer;
  PATTERN 6 layers, 64 wide, 4 heads, dropout 0, attention dropout 0.5; CLUSTER 16 layers, 48 wide,
  8 heads, dropout 0.1, attention dropout 0.5; LapPE 10 frequencies, DeepSet to 16 channels
  (concatenated); BatchNorm; 3-layer head; AdamW lr 1e-3, wd 1e-5, 100 epochs, 5 warm-up, cosine.
- GRIT: LiamMa/GRIT ``configs/GRIT/{pattern,cluster}-GRIT-RRWP.yaml``: PATTERN 10 layers, 64 wide,
  8 heads, RRWP 21 steps, attention dropout 0.2, lr 5e-4, batch 32; CLUSTER 16 layers, 48 wide,
  8 heads, RRWP 32, dropout 0.01, attention dropout 0.5, lr 1e-3, batch 16; BatchNorm, clamp 5,
  degree scaler; DummyEdge edge encoder; ``inductive_node`` head (GraphGym MLP, L2-normalised hidden
  layers, no width halving); AdamW wd 1e-5, 100 epochs, 5 warm-up, cosine.
- Exphormer: the ``configs/Exphormer/{pattern,cluster}.yaml`` of the Exphormer code (as redistributed
  in bowang-lab/Graph-Mamba): CustomGatedGCN+Exphormer; PATTERN 4 layers, 40 wide, 4 heads,
  exp_deg 7 (degree 14), 4 virtual nodes, lr 2e-4, wd 2e-5, 120 epochs; CLUSTER 20 layers, 32 wide,
  8 heads, exp_deg 3 (degree 6), 3 virtual nodes, dropout 0.1, lr 2e-4, wd 1e-5, 150 epochs;
  EquivStableLapPE (10 eigenvectors of L = D - A, one shared Linear to the hidden width, gating the
  GatedGCN messages); DummyEdge; ``inductive_node`` head. The yamls list ``attn_dropout: 0.5``, but the
  code never passes it to ``ExphormerAttention`` (multi_model_layer.py), which has no dropout: 0 here.
- LargeGT: snap-research/LargeGT ``docs/03_reproduce.md`` and ``main.py`` defaults (ogbn-products / snap-patents
  commands): 1 layer, 2 heads, 4096 centroids, codebook (``global_dim``) 64, EMA decay 0.99 (``codebook.py``),
  feed-forward dropout 0.5, attention dropout 0, BatchNorm, one Linear output layer, Adam lr 1e-3 without
  weight decay or schedule, 500 epochs; 2-hop aggregates X, ÂX, Â²X as tokens. Chosen here (`largegt-dcsbm`):
  width 128 (their snap-patents width; 256 on ogbn-products) for a CPU budget; ``data.fanouts=[10, 9]`` (at most
  1 + 10 + 90 nodes a seed, their ``sample_node_len`` 100 drawn from the 1- and 2-hop union); seed batches of
  1024 (ogbn-products; 2048 on snap-patents) and evaluation chunks of 256 (their test batch); gradient clipping
  off as theirs.

Differences kept on purpose are listed in each layer's docstring.
"""

from __future__ import annotations

from .config import LapPEConfig, ModelConfig

__all__ = ["PRESETS", "TRAINING", "preset"]


def _cosine(lr: float, weight_decay: float, epochs: int, batch_size: int, warmup: int = 5,
            two_classes: bool = False) -> dict:
    """GraphGPS's ``cosine_with_warmup``, stepped once per epoch (GraphGPS, GRIT and Exphormer share its loop).

    ``two_classes``: GraphGym predicts one logit for a two-class task and GraphGPS's weighted loss is then a
    weighted BCE averaged over nodes (``weighted_cross_entropy_node_mean`` on two logits)."""
    return {"optimizer": "adamw", "lr": lr, "weight_decay": weight_decay, "epochs": epochs,
            "batch_size": batch_size, "scheduler": "cosine_with_warmup", "warmup_epochs": warmup,
            "lr_update": "epoch", "clip_grad_norm": True,
            "loss": "weighted_cross_entropy_node_mean" if two_classes else "weighted_cross_entropy"}


def _plateau(lr: float, batch_size: int) -> dict:
    return {"optimizer": "adam", "lr": lr, "weight_decay": 0.0, "epochs": 1000, "batch_size": batch_size,
            "scheduler": "reduce_on_plateau", "reduce_factor": 0.5, "patience": 10, "min_lr": 1e-6,
            "clip_grad_norm": False, "loss": "weighted_cross_entropy"}


def _graphgps_lappe(k: int) -> LapPEConfig:
    """GraphGPS ``posenc_LapPE``: ``laplacian_norm: none`` (L = D - A), ``eigvec_norm: L2``, ``max_freqs: k``
    (trivial eigenvector included), ``model: DeepSet``, ``dim_pe: 16``, ``layers: 2``, one sign per
    eigenvector per batch; concatenated to ``Linear(x)`` of width hidden - 16."""
    return LapPEConfig(k=k, dim=16, kind="deepset", combine="concat", normalization="none", sign_flip="batch")


def _gt_lappe(k: int) -> LapPEConfig:
    """GT / Benchmarking-GNNs ``laplacian_positional_encoding``: the k non-trivial eigenvectors of
    ``I - D^-1/2 A D^-1/2`` (``EigVec[:, 1:k+1]``), one ``Linear(k, 80)`` added to the node embedding,
    one random sign per eigenvector per training batch."""
    return LapPEConfig(k=k, dim=80, kind="linear", combine="add", normalization="sym", skip_trivial=True,
                       sign_flip="batch")


def _equivstable_lappe(hidden: int) -> LapPEConfig:
    """Exphormer ``posenc_EquivStableLapPE``: ``laplacian_norm: none`` (L = D - A), ``eigvec_norm: L2``,
    ``max_freqs: 10`` (trivial eigenvector included), ``raw_norm_type: none``; one ``nn.Linear(10, hidden)``
    shared by all layers, not added to the node features (its ``LinearNode`` is full width), gating each
    GatedGCN message by ``sigmoid(MLP(||pe_i - pe_j||^2))``; no random sign flip."""
    return LapPEConfig(k=10, dim=hidden, kind="linear", combine="gate", normalization="none", sign_flip="none")


PRESETS: dict[str, ModelConfig] = {
    "gt-pattern": ModelConfig(layer="gt", num_layers=10, hidden=80, num_heads=8, norm="batch",
                              lap_pe=_gt_lappe(k=2),
                              head_layers=3, head_shrink=True),
    "gt-cluster": ModelConfig(layer="gt", num_layers=10, hidden=80, num_heads=8, norm="batch",
                              lap_pe=_gt_lappe(k=10),
                              head_layers=3, head_shrink=True),
    "gps-pattern": ModelConfig(layer="gps", local="gatedgcn", attention="full", num_layers=6, hidden=64,
                               num_heads=4, dropout=0.0, attn_dropout=0.5, norm="batch",
                               lap_pe=_graphgps_lappe(k=16), head_layers=3, head_l2norm=True,
                               dummy_edge=True),
    "gps-cluster": ModelConfig(layer="gps", local="gatedgcn", attention="full", num_layers=16, hidden=48,
                               num_heads=8, dropout=0.1, attn_dropout=0.5, norm="batch",
                               lap_pe=_graphgps_lappe(k=10), head_layers=3, head_l2norm=True,
                               dummy_edge=True),
    "grit-pattern": ModelConfig(layer="grit", num_layers=10, hidden=64, num_heads=8, dropout=0.0,
                                attn_dropout=0.2, norm="batch", rrwp_steps=21, head_layers=3, head_l2norm=True,
                                dummy_edge=True),
    "grit-cluster": ModelConfig(layer="grit", num_layers=16, hidden=48, num_heads=8, dropout=0.01,
                                attn_dropout=0.5, norm="batch", rrwp_steps=32, head_layers=3, head_l2norm=True,
                                dummy_edge=True),
    "exphormer-pattern": ModelConfig(layer="exphormer", local="gatedgcn", num_layers=4, hidden=40,
                                     num_heads=4, dropout=0.0, attn_dropout=0.0, norm="batch",
                                     expander_degree=14, num_virtual=4, lap_pe=_equivstable_lappe(40),
                                     head_layers=3, head_l2norm=True, dummy_edge=True),
    "exphormer-cluster": ModelConfig(layer="exphormer", local="gatedgcn", num_layers=20, hidden=32,
                                     num_heads=8, dropout=0.1, attn_dropout=0.0, norm="batch",
                                     expander_degree=6, num_virtual=3, lap_pe=_equivstable_lappe(32),
                                     head_layers=3, head_l2norm=True, dummy_edge=True),
    "largegt-dcsbm": ModelConfig(layer="largegt", num_layers=1, hidden=128, num_heads=2, dropout=0.5,
                                 attn_dropout=0.0, norm="batch", num_centroids=4096, codebook_dim=64,
                                 codebook_decay=0.99, feature_hops=2, local_hops=2, head_layers=1),
}

TRAINING: dict[str, dict] = {
    "gt-pattern": _plateau(5e-4, 26),
    "gt-cluster": _plateau(5e-4, 32),
    "gps-pattern": _cosine(5e-4, 1e-5, 100, 32, two_classes=True),
    "gps-cluster": _cosine(5e-4, 1e-5, 100, 16),
    "grit-pattern": _cosine(5e-4, 1e-5, 100, 32, two_classes=True),
    "grit-cluster": _cosine(1e-3, 1e-5, 100, 16),
    "exphormer-pattern": _cosine(2e-4, 2e-5, 120, 32, two_classes=True),
    "exphormer-cluster": _cosine(2e-4, 1e-5, 150, 16),
    # LargeGT main.py: Adam(lr=1e-3), no weight decay, no scheduler, 500 epochs of 1024 seeds (ogbn-products)
    "largegt-dcsbm": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0, "epochs": 500, "batch_size": 1024,
                      "scheduler": "constant", "clip_grad_norm": False, "loss": "cross_entropy"},
}


def preset(name: str) -> ModelConfig:
    """A fresh copy of ``PRESETS[name]`` (ValueError listing the names if unknown)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(sorted(PRESETS))}")
    return ModelConfig.from_dict(PRESETS[name].to_dict())
