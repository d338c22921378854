"""``model_inputs.json``: what a trained model reads, recorded in its run folder (and pretrained folder).

A model is built from its config *and* its data's promises: the task (level, kind, outputs, metric), the form
of the node and edge features (categorical cardinalities or a continuous width), the encodings precomputed for
it (``lap_pe``, ``rwse``, ...) and, for molecules, how a SMILES became a graph (the featuriser's name and
version). `sparsegt predict` rebuilds the model and checks new graphs against this record, so a SMILES fed to a
PATTERN model, or features of another width, is a clear error instead of a silent wrong answer.

Runs from before the record are read by loading their dataset once (`sparsegt.train.run.model_inputs_of_run`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.spec import FeatureSpec, TaskSpec
from .checkpoint import atomic_write_text

__all__ = ["MODEL_INPUTS_FILE", "ModelInputs", "inputs_of_dataset", "write_model_inputs", "read_model_inputs"]

MODEL_INPUTS_FILE = "model_inputs.json"


@dataclass(frozen=True)
class ModelInputs:
    """The data contract of a trained model.

    ``featurizer``: the name of the SMILES featuriser its molecules went through
    (`sparsegt.data.prediction_inputs.SMILES_FEATURIZERS`), or None when it was not trained on SMILES.
    ``encodings``: the keyword arguments of `sparsegt.encodings.add_encodings` used for its graphs.
    """

    dataset: str
    task: TaskSpec
    node_features: FeatureSpec
    edge_features: FeatureSpec
    featurizer: str | None = None
    encodings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str = MODEL_INPUTS_FILE) -> ModelInputs:
        try:
            raw = json.loads(text)
            task = dict(raw["task"])
            task["target_names"] = tuple(task.get("target_names", ()))
            features = [FeatureSpec(f["kind"], tuple(f["cardinalities"]), int(f["dim"]))
                        for f in (raw["node_features"], raw["edge_features"])]
            return cls(str(raw["dataset"]), TaskSpec(**task), features[0], features[1], raw.get("featurizer"),
                       dict(raw.get("encodings", {})))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{where}: not a valid model-inputs record ({type(err).__name__}: {err}); it is "
                             "written by sparsegt train, delete it to rebuild it from the run's dataset") from None

    def describe_features(self) -> str:
        """``node features: categorical [3, 5], edge features: none`` (for error messages)."""
        def one(spec: FeatureSpec) -> str:
            if spec.kind == "categorical":
                return f"categorical, {len(spec.cardinalities)} column(s) of {list(spec.cardinalities)} categories"
            return f"continuous, width {spec.dim}" if spec.kind == "continuous" else "none"

        return f"node features: {one(self.node_features)}; edge features: {one(self.edge_features)}"


def inputs_of_dataset(dataset: Any, encodings: dict[str, Any]) -> ModelInputs:
    """The record of a model trained on ``dataset`` (a `Dataset`, or any object with its fields)."""
    info = getattr(dataset, "info", None) or {}
    return ModelInputs(str(dataset.name), dataset.task, dataset.node_features,
                       dataset.edge_features or FeatureSpec(), info.get("featurizer"), dict(encodings))


def write_model_inputs(folder: str | Path, inputs: ModelInputs) -> Path:
    path = Path(folder) / MODEL_INPUTS_FILE
    atomic_write_text(path, inputs.to_json())
    return path


def read_model_inputs(folder: str | Path) -> ModelInputs | None:
    """``folder/model_inputs.json``, or None for a run from before the record (`run.model_inputs_of_run` then
    rebuilds it from the run's dataset)."""
    path = Path(folder) / MODEL_INPUTS_FILE
    return ModelInputs.from_json(path.read_text(), str(path)) if path.exists() else None
