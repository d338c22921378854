"""A trained model ready to use: `load_trained(run folder or pretrained name)` and `prepare_graphs`.

`load_trained` reads the run's ``config.yaml`` and ``model_inputs.json`` (`sparsegt.train.model_inputs`), builds
the `GraphTransformer` they describe and loads its weights safely (``weights_only=True``): ``best.pt`` (or
``last.pt``) of a run folder, ``model.pt`` of a pretrained folder (`sparsegt.train.pretrained`). The model is
returned in eval mode. `prepare_graphs` checks new graphs against what the model was trained on (feature kind,
width and category ranges) and computes the same encodings (LapPE, RWSE, ...) the training data got, through
the trainer's own `sparsegt.encodings.add_encodings` call and options (`sparsegt.train.run.run_encodings`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..data.spec import FeatureSpec
from ..graph import Graph
from .checkpoint import load_checkpoint, load_model_weights
from .config import RunConfig, load_config
from .distributed import resolve_device
from .model_inputs import ModelInputs
from .pretrained import list_pretrained, pretrained_root
from .run import model_inputs_of_run

__all__ = ["TrainedModel", "load_trained", "prepare_graphs", "check_graphs_fit"]


@dataclass
class TrainedModel:
    """A model with its weights (eval mode, on ``device``), its config and the record of its inputs."""

    name: str
    folder: Path
    config: RunConfig
    inputs: ModelInputs
    model: nn.Module
    device: torch.device

    @property
    def batch_size(self) -> int:
        return self.config.data.eval_batch_size or self.config.data.batch_size


def _find(run_dir: str | Path | None, pretrained: str | None, checkpoint: str) -> tuple[Path, Path, str]:
    """(folder, weights file, name) of a run folder or a pretrained model."""
    if (run_dir is None) == (pretrained is None):
        raise ValueError("give a run directory or a pretrained model name (one of them)")
    if pretrained is not None:
        folder = pretrained_root() / pretrained
        if not (folder / "model.pt").exists():
            known = ", ".join(list_pretrained()) or "none"
            raise ValueError(f"no pretrained model {pretrained!r} in {pretrained_root()} (available: {known})")
        return folder, folder / "model.pt", pretrained
    folder = Path(run_dir)
    if not (folder / "config.yaml").exists():
        raise ValueError(f"{folder} is not a run directory (no config.yaml); for a pretrained model use "
                         "--pretrained NAME (sparsegt eval --pretrained list)")
    if checkpoint not in ("best.pt", "last.pt"):
        raise ValueError(f"checkpoint must be best.pt or last.pt, got {checkpoint!r}")
    return folder, folder / checkpoint, folder.name


def load_trained(run_dir: str | Path | None = None, *, pretrained: str | None = None, checkpoint: str = "best.pt",
                 device: str = "auto") -> TrainedModel:
    """The model of a run folder (its ``checkpoint``) or of ``pretrained/NAME``, in eval mode on ``device``."""
    from ..models import GraphTransformer, ModelConfig

    folder, weights_path, name = _find(run_dir, pretrained, checkpoint)
    config = load_config(folder / "config.yaml")
    if not isinstance(config.model, ModelConfig):
        raise ValueError(f"{folder / 'config.yaml'}: the model section is not a sparsegt GraphTransformer config")
    inputs = model_inputs_of_run(folder, config)
    with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
        model = GraphTransformer(config.model, inputs.task, inputs.node_features, inputs.edge_features)
    if pretrained is not None:
        weights = torch.load(weights_path, map_location="cpu", weights_only=True)
    else:
        weights = load_checkpoint(weights_path, required=("model",))["model"]
    load_model_weights(model, weights, str(weights_path), f" (was {folder / 'config.yaml'} edited after training?)")
    target = resolve_device(device)
    return TrainedModel(name, folder, config, inputs, model.to(target).eval(), target)


def _check_features(values: Tensor | None, spec: FeatureSpec, what: str, graph: int, source: str,
                    inputs: ModelInputs) -> None:
    trained = f"the model was trained with {inputs.describe_features()} ({inputs.dataset})"
    if spec.kind == "none":
        if values is not None:
            raise ValueError(f"{source}, graph {graph}: has {what} but {trained}; leave them out, or use a model "
                             f"trained with {what}")
        return
    if values is None:
        raise ValueError(f"{source}, graph {graph}: has no {what} but {trained}")
    columns = values.shape[1] if values.dim() == 2 else 1
    if spec.kind == "continuous":
        if not values.is_floating_point() or columns != spec.dim:
            kind = "floating-point" if values.is_floating_point() else "integer"
            raise ValueError(f"{source}, graph {graph}: {what} are {kind} with width {columns}, but {trained}")
        return
    if values.is_floating_point() or columns != len(spec.cardinalities):
        kind = "floating-point" if values.is_floating_point() else "integer"
        raise ValueError(f"{source}, graph {graph}: {what} are {kind} with {columns} column(s), but {trained}")
    if values.numel():
        flat = values.reshape(values.shape[0], -1)
        limits = torch.tensor(spec.cardinalities, dtype=flat.dtype)
        bad = (flat < 0) | (flat >= limits)
        if bad.any():
            row, column = (int(i) for i in bad.nonzero()[0])
            raise ValueError(f"{source}, graph {graph}: {what} column {column} holds category {int(flat[row, column])}"
                             f", but the model knows categories 0..{spec.cardinalities[column] - 1} there ({trained})")


def check_graphs_fit(graphs: Sequence[Graph], inputs: ModelInputs, source: str = "input") -> None:
    """ValueError naming the graph and field when a graph's features do not have the form the model was trained
    on (kind, width, category range)."""
    for i, g in enumerate(graphs):
        _check_features(g.x, inputs.node_features, "node features x", i, source, inputs)
        _check_features(g.edge_attr, inputs.edge_features, "edge features edge_attr", i, source, inputs)


HOP_FEATURES_OPTION = "hop_features"  # the run's encodings entry for `sparsegt.data.hop_features`


def prepare_graphs(trained: TrainedModel, graphs: Sequence[Graph], source: str = "input") -> list[Graph]:
    """``graphs`` checked against the model's record, with the encodings its training graphs had."""
    graphs = list(graphs)
    if not graphs:
        raise ValueError(f"{source}: no graphs to predict on")
    check_graphs_fit(graphs, trained.inputs, source)
    encodings = dict(trained.inputs.encodings)
    hops = encodings.pop(HOP_FEATURES_OPTION, 0)
    if hops:  # LargeGT's Â X .. Â^T X, each graph on its own
        from ..data.hop_features import HOP_FEATURES, propagated_features

        graphs = [g.with_data(node_data={HOP_FEATURES: propagated_features(g, hops)}) for g in graphs]
    if encodings:
        from ..encodings import add_encodings

        graphs = add_encodings(graphs, **encodings)
    return graphs
