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


def demo_config(attention: str = "full") -> RunConfig:
    """The default run: a 3-layer GPS (GatedGCN + full attention, 32 wide, 4 heads, LapPE-8) on pattern-small
    (1,000 / 200 / 200 graphs), 4 epochs of batches of 8. ``attention="none"``: the same model without
    attention."""
    from ..models import LapPEConfig, ModelConfig

    model = ModelConfig(
        layer="gps",
        local="gatedgcn",
        attention=attention,
        num_layers=3,
        hidden=32,
        num_heads=4,
        dropout=0.0,
        attn_dropout=0.2,
        norm="batch",
        lap_pe=LapPEConfig(k=8, dim=8, kind="deepset"),
        head_layers=3,
    )
    name = "demo-gps" if attention != "none" else "demo-no-attention"
    return RunConfig(
        name=name,
        data=DataConfig(name="pattern-small", batch_size=8),
        model=model,
        # small batches: 125 steps an epoch instead of 32 at the same cost per graph; the time limit keeps the
        # demo inside its 5 minutes on a slower machine (it then reports the best epoch it reached)
        train=TrainConfig(epochs=4, lr=4e-3, weight_decay=1e-5, warmup_epochs=0.25, grad_clip=1.0, time_limit_min=3.8),
    )


RUN_PRESETS: dict[str, RunPreset] = {
    "demo": RunPreset("GPS (3 layers, 32 wide) on pattern-small: the default, a few minutes", demo_config),
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
    "exphormer-pattern": RunPreset(
        "Exphormer on PATTERN, published config (86.742% published)",
        lambda: published_run("exphormer-pattern", "pattern"),
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
