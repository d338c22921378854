"""Named run presets: the published set-ups of GraphGPS and GT, and the demo's default.

``get_preset(name)`` returns a fresh `RunConfig`; ``sparsegt train --preset NAME`` starts from it and
applies overrides. Model architectures come from `sparsegt.models.PRESETS` and their optimiser settings
from `sparsegt.models.TRAINING` (both read from the authors' config files), so there is one source.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from .config import DataConfig, RunConfig, TrainConfig

__all__ = ["RunPreset", "RUN_PRESETS", "DEFAULT_PRESET", "get_preset", "published_run"]


@dataclass(frozen=True)
class RunPreset:
    description: str
    build: Callable[[], RunConfig]


def published_run(model_preset: str, dataset: str, name: str | None = None) -> RunConfig:
    """`RunConfig` for ``sparsegt.models`` preset ``model_preset`` with its published training settings."""
    from ..models import TRAINING, preset

    t = TRAINING[model_preset]
    if t["scheduler"] == "cosine_with_warmup":
        train = TrainConfig(
            epochs=t["epochs"],
            lr=t["lr"],
            weight_decay=t["weight_decay"],
            optimizer=t["optimizer"],
            warmup_epochs=t["warmup_epochs"],
            scheduler="cosine",
            lr_update=t["lr_update"],
            grad_clip=1.0 if t["clip_grad_norm"] else None,
            loss=t["loss"],
        )
    elif t["scheduler"] == "reduce_on_plateau":
        train = TrainConfig(
            epochs=t["epochs"],
            lr=t["lr"],
            weight_decay=t["weight_decay"],
            optimizer=t["optimizer"],
            warmup_epochs=0.0,
            scheduler="plateau",
            plateau_factor=t["reduce_factor"],
            plateau_patience=t["patience"],
            min_lr=t["min_lr"],
            grad_clip=1.0 if t["clip_grad_norm"] else None,
            loss=t["loss"],
        )
    elif t["scheduler"] == "constant":
        train = TrainConfig(epochs=t["epochs"], lr=t["lr"], weight_decay=t["weight_decay"], optimizer=t["optimizer"],
                            warmup_epochs=0.0, scheduler="constant", grad_clip=1.0 if t["clip_grad_norm"] else None,
                            loss=t["loss"])
    else:
        raise ValueError(f"preset {model_preset}: scheduler {t['scheduler']!r} is not supported")
    return RunConfig(
        name=name or model_preset,
        data=DataConfig(name=dataset, batch_size=t["batch_size"]),
        model=preset(model_preset),
        train=train,
    )


def _zinc_gps(dataset: str, name: str, **data) -> RunConfig:
    """GraphGPS configs/GPS/zinc-GPS+RWSE.yaml: GINE + full attention, 10 layers, 64 wide, 4 heads, attention
    dropout 0.5, RWSE 20 steps -> 28 channels, sum pooling, L1 loss; AdamW lr 1e-3, wd 1e-5, batch 32,
    2000 epochs, 50 warm-up."""
    from ..models import ModelConfig, RWSEConfig

    model = ModelConfig(
        layer="gps",
        local="gine",
        attention="full",
        num_layers=10,
        hidden=64,
        num_heads=4,
        dropout=0.0,
        attn_dropout=0.5,
        norm="batch",
        rwse=RWSEConfig(steps=20, dim=28),
        pooling="sum",
        head_layers=3,
    )
    return RunConfig(
        name=name,
        data=DataConfig(name=dataset, batch_size=32, **data),
        model=model,
        train=TrainConfig(epochs=2000, lr=1e-3, weight_decay=1e-5, warmup_epochs=50, grad_clip=1.0),
    )


def _largegt_dcsbm() -> RunConfig:
    """`sparsegt.models.PRESETS["largegt-dcsbm"]` with its training settings, sampling 2 hops with fan-outs
    [10, 9] (at most 100 nodes a seed, as LargeGT's ``sample_node_len`` 100), 1024 seeds a batch and evaluation
    chunks of 256 seeds (the sources and the choices: `sparsegt.models.presets`)."""
    config = published_run("largegt-dcsbm", "dcsbm")
    config.data.batch_size, config.data.eval_batch_size = 1024, 256
    config.data.fanouts = [10, 9]
    return config


def demo_config(attention: str = "full", *, local: str = "gatedgcn", lap_pe: bool = True, fold: int = 0) -> RunConfig:
    """The default run: a 3-layer GPS (GatedGCN + full attention, 32 wide, 4 heads, LapPE-16) on CSL, test fold
    ``fold`` (90 / 30 / 30 graphs), 40 epochs of batches of 10.

    The demo (`sparsegt.train.demo`) trains it with parts taken out, everything else equal:
    ``attention="none"`` is the same model without attention, ``local="none"`` without the MPNN,
    ``lap_pe=False`` without the positional encoding.
    """
    from ..models import LapPEConfig, ModelConfig

    model = ModelConfig(
        layer="gps",
        local=local,
        attention=attention,
        num_layers=3,
        hidden=32,
        num_heads=4,
        dropout=0.0,
        attn_dropout=0.2,
        norm="batch",
        # k=16: with 8 eigenpairs GPS scored 90-93 % and GatedGCN 83-100 % over the 5 folds; with 16 both 100 %
        lap_pe=LapPEConfig(k=16, dim=8, kind="deepset") if lap_pe else None,
        head_layers=3,
    )
    missing = [part for part, kept in (("mpnn", local != "none"), ("attention", attention != "none"),
                                       ("pe", lap_pe)) if not kept]
    name = "demo-gps" + "".join(f"-no-{part}" for part in missing)
    return RunConfig(
        name=name,
        data=DataConfig(name="csl", batch_size=10, options={"fold": fold}),
        model=model,
        # each run takes 3-8 s on one loaded core; the limit only guards `make demo` on a far slower machine
        train=TrainConfig(epochs=40, lr=2e-3, weight_decay=1e-5, warmup_epochs=2.0, grad_clip=1.0,
                          time_limit_min=0.5),
    )


def marker_demo_config(attention: str = "full", *, local: str = "gatedgcn", lap_pe: bool = True,
                       seed: int = 0) -> RunConfig:
    """The demo's long-range task: `demo_config`'s model on marker readout (`sparsegt.data.algorithmic`; 500 / 200
    / 200 rings of 48-96 nodes, 4 classes), 10 epochs of batches of 16, training seed ``seed``.

    Every node's label needs the value of one marked node, on average ~18 hops away; the 3-layer GatedGCN sees
    it from the nodes within 3 hops only, attention over the ring from every node.
    """
    config = demo_config(attention, local=local, lap_pe=lap_pe)
    config.name = config.name.replace("demo-gps", "demo-marker-gps", 1)
    config.data = DataConfig(name="marker", batch_size=16, options={"num_train": 500})
    config.train.epochs = 10
    config.train.seed = seed
    # each run takes 7-15 s on one loaded core; the limit only guards `make demo` on a far slower machine
    config.train.time_limit_min = 1.0
    return config


def pattern_demo_config(attention: str = "full") -> RunConfig:
    """The demo before issue #13: the same 3-layer GPS with LapPE-8 on pattern-small (1,000 / 200 / 200 graphs),
    4 epochs of batches of 8. Too short to separate attention from its absence (docs/results.md)."""
    config = demo_config(attention)
    config.name = "demo-pattern" if attention != "none" else "demo-pattern-no-attention"
    config.model.lap_pe.k = 8
    config.data = DataConfig(name="pattern-small", batch_size=8)
    # small batches: 125 steps an epoch instead of 32 at the same cost per graph
    config.train = TrainConfig(epochs=4, lr=4e-3, weight_decay=1e-5, warmup_epochs=0.25, grad_clip=1.0,
                               time_limit_min=3.8)
    return config


RUN_PRESETS: dict[str, RunPreset] = {
    "demo": RunPreset("GPS (GatedGCN + attention + LapPE, 3 layers, 32 wide) on CSL fold 0: the default, ~10 s",
                      demo_config),
    "demo-marker": RunPreset("the same GPS on marker readout (long range: 500 rings of 48-96 nodes), 10 epochs, "
                             "~15 s", marker_demo_config),
    "demo-pattern": RunPreset("the same GPS on pattern-small, 4 epochs (the demo before issue #13), ~3 min",
                              pattern_demo_config),
    "gps-pattern": RunPreset(
        "GraphGPS on PATTERN, published config (86.685% published)",
        lambda: published_run("gps-pattern", "pattern"),
    ),
    "gps-cluster": RunPreset(
        "GraphGPS on CLUSTER, published config (78.016% published)",
        lambda: published_run("gps-cluster", "cluster"),
    ),
    "gt-pattern": RunPreset(
        "GT (Dwivedi & Bresson) on PATTERN, published config (84.808% published)",
        lambda: published_run("gt-pattern", "pattern"),
    ),
    "gt-cluster": RunPreset(
        "GT on CLUSTER, published config (73.169% published)", lambda: published_run("gt-cluster", "cluster")
    ),
    "grit-pattern": RunPreset(
        "GRIT on PATTERN, published config (87.196% published)",
        lambda: published_run("grit-pattern", "pattern"),
    ),
    "grit-cluster": RunPreset(
        "GRIT on CLUSTER, published config (80.026% published)",
        lambda: published_run("grit-cluster", "cluster"),
    ),
    "exphormer-pattern": RunPreset(
        "Exphormer on PATTERN, published config (86.742% published)",
        lambda: published_run("exphormer-pattern", "pattern"),
    ),
    "exphormer-cluster": RunPreset(
        "Exphormer on CLUSTER, published config (78.071% published)",
        lambda: published_run("exphormer-cluster", "cluster"),
    ),
    "largegt-dcsbm": RunPreset(
        "LargeGT (sampled 2-hop tokens + global codebook) on dcsbm (10^6 nodes; data.options.num_nodes=...)",
        lambda: _largegt_dcsbm(),
    ),
    "gps-moses-plogp": RunPreset(
        "GraphGPS's ZINC recipe on MOSES-pLogP (ZINC-like, MAE)",
        lambda: _zinc_gps("moses-plogp", "gps-moses-plogp"),
    ),
    "gps-qm9": RunPreset(
        "GraphGPS's ZINC recipe on one QM9 target (data.options.target, MAE)",
        lambda: _zinc_gps("qm9", "gps-qm9"),
    ),
}

DEFAULT_PRESET = "demo"


def get_preset(name: str) -> RunConfig:
    """A fresh `RunConfig` for preset ``name``; ValueError listing close names when unknown."""
    if name not in RUN_PRESETS:
        close = difflib.get_close_matches(name, RUN_PRESETS, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown preset {name!r}{hint} Presets: {', '.join(RUN_PRESETS)}")
    return RUN_PRESETS[name].build()
