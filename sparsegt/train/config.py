"""`RunConfig`: everything a training run needs, as dataclasses; YAML load/dump; dotted overrides.

A run is described by three parts and a name::

    RunConfig(name="gps-pattern",
              data=DataConfig(name="pattern", batch_size=32, encodings={"lap_pe": 10}),
              model=ModelConfig(...),          # sparsegt.models.ModelConfig
              train=TrainConfig(epochs=100, lr=5e-4))

From the command line every field can be overridden with ``section.field=value`` (``model.hidden=64``,
``train.epochs=3``, ``data.name=cluster-small``, ``data.options.num_graphs=100``); values are parsed as
YAML scalars (``1e-3``, ``true``, ``null``, ``[1, 2]``). A key that does not exist is a ValueError that
lists the closest existing keys.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "DataConfig",
    "TrainConfig",
    "GTSPConfig",
    "RunConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "update_config",
    "load_config",
    "dump_config",
    "config_keys",
]


@dataclass
class DataConfig:
    """Which dataset, how it is batched, and which encodings are precomputed.

    ``encodings``: keyword arguments of `sparsegt.encodings.add_encodings` (``{"lap_pe": 10, "rwse": 16}``);
    left empty, the model's `required_encodings` decide. ``options`` go to `load_dataset` (e.g. a QM9
    ``target``). ``seed`` is the data's generation/split seed (the same for every training seed).
    ``fanouts``: sample neighbourhoods instead of batching whole graphs (a dataset of one large graph):
    ``[10, 5]`` takes 10 neighbours per node at hop 1 and 5 at hop 2 (-1: all); ``batch_size`` then counts seed
    nodes, and evaluation runs in chunks of ``eval_batch_size`` seeds sampled with ``eval_fanouts`` (default
    ``fanouts``) (`sparsegt.data.NeighborLoader`). ``partition``: with ``fanouts`` under torchrun, each rank
    samples seeds from its own part of the training nodes: ``"metis"`` (pymetis, the extra ``sparsegt[large]``;
    without it a contiguous split and a notice), ``"contiguous"``, or ``"none"`` (one shared permutation).
    ``root``: the cache folder, or the data folder of ``name=folder``.
    ``trim_edges``: TEDDY's one-shot edge sparsification (`sparsegt.patterns.trim_edges`, docs/sparsify.md):
    every graph of every split keeps this fraction in (0, 1] of its edges, the highest degree-based scores,
    before encodings are computed and training starts (None: all edges).
    """

    name: str = "pattern-small"
    root: str | None = None
    seed: int = 0
    options: dict = field(default_factory=dict)
    batch_size: int = 32
    eval_batch_size: int | None = None
    encodings: dict = field(default_factory=dict)
    fanouts: list | None = None
    eval_fanouts: list | None = None
    partition: str = "none"
    trim_edges: float | None = None

    def __post_init__(self) -> None:
        if self.trim_edges is not None:
            if isinstance(self.trim_edges, bool) or not isinstance(self.trim_edges, (int, float)) \
                    or not 0.0 < float(self.trim_edges) <= 1.0:
                raise ValueError(f"data.trim_edges is the fraction of each graph's edges kept, in (0, 1] (e.g. "
                                 f"data.trim_edges=0.7), or null to keep them all; got {self.trim_edges!r}")
            self.trim_edges = float(self.trim_edges)
        if self.partition not in ("none", "metis", "contiguous"):
            raise ValueError(f"data.partition must be none, metis or contiguous, got {self.partition!r}")
        if self.partition != "none" and not self.fanouts:
            raise ValueError(f"data.partition={self.partition} splits the seed nodes of a sampled graph among ranks: "
                             "it needs data.fanouts (e.g. data.fanouts=[10,5])")
        if self.batch_size < 1 or (self.eval_batch_size is not None and self.eval_batch_size < 1):
            raise ValueError(f"data.batch_size ({self.batch_size}) and data.eval_batch_size "
                             f"({self.eval_batch_size}) must be >= 1")
        for name in ("fanouts", "eval_fanouts"):
            values = getattr(self, name)
            if values is not None and (not values or any(isinstance(f, bool) or not isinstance(f, int) or f < -1
                                                         for f in values)):
                raise ValueError(f"data.{name} = {values!r}: give one whole number >= 0 per hop, or -1 for every "
                                 f"neighbour, e.g. data.{name}=[10,5]")


@dataclass
class GTSPConfig:
    """GTSP's masked training (`sparsegt.sparsify.GTSPModel`, docs/sparsify.md): the fraction in [0, 1) to prune
    of each dimension named (None: not masked), the density penalty's ``strength``, and ``gate_lr_scale``, the
    gates' learning rate as a multiple of the run's (`GTSPModel.parameter_groups`)."""

    edges: float | None = None
    heads: float | None = None
    layers: float | None = None
    weights: float | None = None
    strength: float = 10.0
    gate_lr_scale: float = 100.0

    def __post_init__(self) -> None:
        targets = {name: getattr(self, name) for name in ("edges", "heads", "layers", "weights")}
        for name, value in targets.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0.0 <= float(value) < 1.0):
                raise ValueError(f"train.gtsp.{name} is the fraction of that dimension to prune, in [0, 1), or "
                                 f"null to leave it unmasked; got {value!r}")
        for name in ("strength", "gate_lr_scale"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"train.gtsp.{name} must be a finite number > 0, got {getattr(self, name)!r}")
            setattr(self, name, value)


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping.

    ``optimizer``: ``"adamw"`` (decoupled weight decay; GraphGPS, GRIT, Exphormer) or ``"adam"`` (L2 weight
    decay in the gradient; Benchmarking-GNNs / GT).
    ``scheduler="cosine"``: the learning rate rises linearly over ``warmup_epochs`` then follows a cosine
    to ``min_lr`` at ``epochs`` (GraphGPS's ``cosine_with_warmup``). ``lr_update``: evaluate the schedule
    at every ``"step"`` (smooth) or once per ``"epoch"`` (GraphGPS steps its scheduler per epoch, so its
    first epoch runs at ``lr * 1e-6`` and the warmup moves in jumps).
    ``"plateau"``: Benchmarking-GNNs / GT — multiply by ``plateau_factor`` after more than
    ``plateau_patience`` evaluations without a lower validation loss; stop once below ``min_lr``.
    ``"constant"``: ``lr`` after the warmup. ``patience``: stop after this many
    evaluations without a better validation metric (None: never). ``class_weighted_loss``: None means
    "when the metric is weighted accuracy" (Benchmarking-GNNs / GraphGPS on PATTERN and CLUSTER).
    ``loss``: ``auto`` picks cross-entropy for classes, BCE for binary, L1 when the metric is MAE, else MSE.
    ``time_limit_min``: stop cleanly (best checkpoint kept, test at the best epoch reported) after this
    many minutes of training. ``batches_per_epoch``: None is one pass over the training set; K makes an
    "epoch" (the unit of evaluation, checkpoints and the schedule) K batches, continuing through the
    shuffled passes — for budgets shorter than a pass over a large dataset. Checkpoints (``last.pt``)
    are written at every epoch end and mid-epoch every ``checkpoint_every_s`` seconds or
    ``checkpoint_every_batches`` batches (0: off). ``bn_recalibration``: before each evaluation, set the
    BatchNorm statistics from this many fixed training batches with the current weights, everything else
    in eval mode (`sparsegt.train.batch_norm`; 0: evaluate with the moving averages, as GraphGPS does).
    ``val_with_moving_stats``: also score validation with the moving averages before recalibrating
    (``val_metric_moving_stats`` in ``metrics.jsonl``: the curve GraphGPS's evaluation would draw), and test
    with them whenever that score is the best so far (``test_metric_moving_stats``, ``best_moving.pt``, the
    summary's ``moving_stats``: the number GraphGPS's protocol reports).
    ``compile``: train through ``torch.compile`` (``"inductor"``: generated fused code for the elementwise
    work around the kernels; ``"aot_eager"``: traced but not compiled, for checks; ``"off"``: eager).
    Attention is one custom op in the compiled graph and the numba layer kernels step aside for their torch
    ops, which the compiler fuses; evaluation stays eager. Numerics differ from eager by rounding.
    ``precision``: ``"bf16"`` trains under bfloat16 autocast (matrix products in bf16, the loss, attention
    and the fused kernels in float32; evaluation in float32), where the device supports it.
    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``threads``: torch's CPU threads (null or 0: torch's
    default). ``chance_check_epochs``: after this many epochs (or at the last, if sooner), warn when the
    training loss is not at least 2% below the loss of the best constant prediction (the model learnt nothing:
    a learning rate far too high, labels unrelated to the inputs); the warning is printed and kept in
    ``summary.json`` under ``warnings`` (0: off). ``loggers``: where each epoch's numbers go besides
    ``metrics.jsonl``: ``tensorboard`` (event files in the run folder) and/or ``wandb`` (offline unless
    ``WANDB_MODE`` is set); ``[]`` for none (`sparsegt.train.loggers`).
    ``weight_sparsity``: TEDDY's parameter sparsification (`sparsegt.train.l0_projection.L0BallProjection`):
    after every optimizer step each weight tensor (trainable, >= 2 dimensions; biases and norm scales stay
    dense) is projected onto its l0 ball, keeping its ``round((1 - weight_sparsity) * numel)`` largest
    magnitudes; in [0, 1), None: off.
    ``init_from``: start from the model weights of another run (its folder: its ``best.pt``; or a checkpoint
    file) instead of a fresh initialisation: fine-tuning (the architecture must be the same). ``gin_adapter``:
    Sparse GIN-Attention fine-tuning (`sparsegt.sparsify.add_sparse_gin_attention`): the model is frozen and
    every GT/GPS attention gains a GIN over its attention graph of this hidden width r, starting at zero; only
    those ``L (2Cr + r + C + 1)`` parameters train (BatchNorm's running statistics still follow the data). Use
    it with ``init_from``. None: off.
    ``gtsp``: GTSP's masked training (`GTSPConfig`): the model is trained behind hard-concrete gates on the
    dimensions named, with the density penalty added to the loss; ``summary.json`` reports the gates left open
    and the pruned model (`sparsegt.sparsify.prune` of the best epoch) scored on the test split. None: off.
    """

    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: typing.Literal["adamw", "adam"] = "adamw"
    warmup_epochs: float = 5.0
    min_lr: float = 0.0
    scheduler: typing.Literal["cosine", "plateau", "constant"] = "cosine"
    lr_update: typing.Literal["step", "epoch"] = "step"
    plateau_factor: float = 0.5
    plateau_patience: int = 10
    grad_clip: float | None = 1.0
    patience: int | None = None
    seed: int = 0
    eval_every: int = 1
    device: str = "auto"
    loss: str = "auto"
    class_weighted_loss: bool | None = None
    threads: int | None = None
    time_limit_min: float | None = None
    checkpoint_every_s: float = 30.0
    checkpoint_every_batches: int = 0
    batches_per_epoch: int | None = None
    bn_recalibration: int = 32
    val_with_moving_stats: bool = False
    chance_check_epochs: int = 5
    compile: typing.Literal["off", "inductor", "aot_eager"] = "off"
    precision: typing.Literal["fp32", "bf16"] = "fp32"
    loggers: list[str] = field(default_factory=lambda: ["tensorboard"])
    weight_sparsity: float | None = None
    gtsp: GTSPConfig | None = None
    init_from: str | None = None
    gin_adapter: int | None = None

    def __post_init__(self) -> None:
        if self.gin_adapter is not None and (isinstance(self.gin_adapter, bool) or self.gin_adapter < 1):
            raise ValueError(f"train.gin_adapter is the hidden width r of the GIN adapters (a whole number >= 1, e.g. "
                             f"train.gin_adapter=8), or null for none; got {self.gin_adapter!r}")
        if self.gin_adapter is not None and self.gtsp is not None:
            raise ValueError("train.gin_adapter freezes the model while train.gtsp trains it behind gates: "
                             "choose one")
        if self.gtsp is not None and self.weight_sparsity is not None:
            raise ValueError("train.gtsp and train.weight_sparsity both sparsify the weights (GTSP's gates, TEDDY's "
                             "projection): choose one (GTSP's weight target is train.gtsp.weights)")
        if self.weight_sparsity is not None:
            if isinstance(self.weight_sparsity, bool) or not isinstance(self.weight_sparsity, (int, float)) \
                    or not 0.0 <= float(self.weight_sparsity) < 1.0:
                raise ValueError(f"train.weight_sparsity is the fraction of every weight tensor set to zero, in "
                                 f"[0, 1) (e.g. train.weight_sparsity=0.8), or null for dense weights; got "
                                 f"{self.weight_sparsity!r}")
            self.weight_sparsity = float(self.weight_sparsity)
        for name in ("lr", "weight_decay", "warmup_epochs", "min_lr", "plateau_factor", "checkpoint_every_s"):
            setattr(self, name, float(getattr(self, name)))
        if self.grad_clip is not None:
            self.grad_clip = float(self.grad_clip)
        if self.bn_recalibration < 0:
            raise ValueError(f"train.bn_recalibration must be >= 0 batches (0: off), got {self.bn_recalibration}")
        if self.epochs < 1 or self.eval_every < 1:
            raise ValueError(f"train.epochs ({self.epochs}) and train.eval_every ({self.eval_every}) must be >= 1")
        for name in ("lr", "weight_decay", "warmup_epochs", "min_lr", "checkpoint_every_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"train.{name} must be a finite number >= 0, got {value}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"train.grad_clip is the largest gradient norm and must be > 0, got {self.grad_clip}; "
                             "use train.grad_clip=null to switch clipping off")
        for name in ("patience", "batches_per_epoch", "time_limit_min"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"train.{name} must be > 0 or null (off), got {value}")
        if self.seed < 0 or self.checkpoint_every_batches < 0 or self.chance_check_epochs < 0:
            raise ValueError(f"train.seed ({self.seed}), train.checkpoint_every_batches "
                             f"({self.checkpoint_every_batches}) and train.chance_check_epochs "
                             f"({self.chance_check_epochs}) must be >= 0")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(self.device)):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N (N a GPU index), got {self.device!r}")
        if self.threads is not None and self.threads < 0:
            raise ValueError(f"train.threads must be >= 1 (or null / 0 for torch's default), got {self.threads}")
        if self.scheduler not in ("cosine", "plateau", "constant"):
            raise ValueError(f"train.scheduler must be cosine, plateau or constant, got {self.scheduler!r}")
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(f"train.optimizer must be adamw or adam, got {self.optimizer!r}")
        if self.lr_update not in ("step", "epoch"):
            raise ValueError(f"train.lr_update must be step or epoch, got {self.lr_update!r}")
        from .loggers import LOGGER_NAMES

        unknown = [name for name in self.loggers if name not in LOGGER_NAMES]
        if unknown:
            raise ValueError(f"train.loggers: unknown logger(s) {unknown}; choose from {', '.join(LOGGER_NAMES)} "
                             "(e.g. train.loggers=[tensorboard,wandb], or train.loggers=[] for none)")


def _default_model_config() -> Any:
    from ..models import ModelConfig

    return ModelConfig()


@dataclass
class RunConfig:
    """A whole run: ``runs/<name>-<timestamp>/`` holds its resolved config, metrics and checkpoints."""

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: Any = field(default_factory=_default_model_config)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # the run folder is out_dir/<name>-<stamp>: a name with a path in it would put it elsewhere
        name = str(self.name)
        if not name or name.strip(".") == "" or any(c in name for c in "/\\\0") or name != name.strip():
            raise ValueError(f"name must be a plain folder name (no '/', '\\', leading/trailing spaces, not '.' "
                             f"or '..'), got {self.name!r}; set out_dir for where runs go")


# ------------------------------------------------------------------------------------- dict <-> dataclass
def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def config_to_dict(config: Any) -> dict:
    """Nested plain dict (lists for tuples) of a config dataclass, ready for ``yaml.safe_dump``/JSON."""
    return _plain(config)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: fall back to the current values' types
        return {}


def _allowed_types(hint: Any) -> tuple[list[Any], bool]:
    """(concrete types, None allowed) of a type hint; [] means unknown/Any."""
    if hint is None or hint is Any:
        return [], True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        concrete = [a for a in args if a is not type(None)]
        out: list[Any] = []
        for a in concrete:
            out += _allowed_types(a)[0]
        return out, type(None) in args
    if origin is typing.Literal:
        return [("literal", typing.get_args(hint))], False
    return [origin or hint], False


def _coerce(value: Any, hint: Any, current: Any, where: str) -> Any:
    """Check/convert ``value`` for a field with type ``hint`` whose current value is ``current``."""
    allowed, none_ok = _allowed_types(hint)
    if not allowed and current is not None:
        allowed = [type(current)]
    if value is None:
        if none_ok or not allowed:
            return None
        raise ValueError(f"{where} cannot be null")
    if not allowed:
        return value
    for t in allowed:
        if isinstance(t, tuple) and t[0] == "literal":
            if value in t[1]:
                return value
            continue
        if t is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "on", "off"):
                return value.lower() in ("true", "yes", "on")
        elif t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
        elif t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)  # PyYAML reads "1e-3" as a string
                except ValueError:
                    pass
        elif t is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
        elif t in (tuple, list):
            if isinstance(value, (list, tuple)):
                return t(value)
        elif t is dict:
            if isinstance(value, dict):
                return dict(value)
        elif dataclasses.is_dataclass(t):
            if isinstance(value, dict):
                return config_from_dict(t, value, where)
            if isinstance(value, t):
                return value
        elif isinstance(t, type) and isinstance(value, t):
            return value
    names = ", ".join(t[0] if isinstance(t, tuple) else getattr(t, "__name__", str(t)) for t in allowed)
    if allowed and isinstance(allowed[0], tuple):
        names = "one of " + ", ".join(repr(v) for v in allowed[0][1])
    raise ValueError(
        f"{where} = {value!r} ({type(value).__name__}) but it must be {names}" + (" or null" if none_ok else "")
    )


def _unknown_key(key: str, where: str, choices: list[str]) -> ValueError:
    close = difflib.get_close_matches(key, choices, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known keys: {', '.join(sorted(choices))}"
    return ValueError(f"unknown config key {where}{hint}")


def update_config(config: Any, values: dict, where: str = "") -> Any:
    """Set the fields of a config dataclass (in place) from a nested dict; unknown keys are ValueErrors."""
    if not isinstance(values, dict):
        raise ValueError(f"{where or type(config).__name__} must be a mapping, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(config)]
    hints = _hints(type(config))
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise _unknown_key(path, path, [f"{where}.{n}" if where else n for n in names])
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            update_config(current, value, path)
        else:
            setattr(config, key, _coerce(value, hints.get(key), current, path))
    return config


def revalidate(config: Any) -> Any:
    """Re-run ``__post_init__`` checks of a config and its sections after fields were set one by one."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            revalidate(value)
    post_init = getattr(config, "__post_init__", None)
    if post_init is not None:
        post_init()
    return config


def config_from_dict(cls: type, values: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` (from its defaults) and a nested dict of the fields that differ."""
    return update_config(cls(), values, where)


def config_keys(config: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config (``train.lr``, ``model.hidden``, ...), dict fields included."""
    out = []
    for f in dataclasses.fields(config):
        path = f"{prefix}{f.name}"
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += config_keys(value, path + ".")
        else:
            out.append(path)
            if isinstance(value, dict):
                out += [f"{path}.{k}" for k in value]
    return out


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def apply_overrides(config: Any, overrides: list[str]) -> Any:
    """Apply ``a.b.c=value`` strings to a config (in place; also returned).

    Raises ValueError for a malformed item, an unknown key (naming the closest keys) or a value of the
    wrong type. Fields that are dicts (``data.options``, ``data.encodings``) accept any sub-key.
    """
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. train.epochs=3)")
        key, text = item.split("=", 1)
        key = key.strip()
        parts = key.split(".")
        if not all(parts):
            raise ValueError(f"override key {key!r} has an empty part")
        value = _parse_value(text)
        target = config
        for i, part in enumerate(parts):
            path = ".".join(parts[: i + 1])
            last = i == len(parts) - 1
            if isinstance(target, dict):
                if last:
                    target[part] = value
                else:
                    target = target.setdefault(part, {})
                    if not isinstance(target, dict):
                        raise ValueError(f"{path} is not a mapping, it cannot have sub-keys")
                continue
            if not dataclasses.is_dataclass(target):
                raise ValueError(f"{'.'.join(parts[:i])} is not a section, it has no key {part!r}")
            names = [f.name for f in dataclasses.fields(target)]
            if part not in names:
                raise _unknown_key(path, key, config_keys(config))
            if last:
                current = getattr(target, part)
                hint = _hints(type(target)).get(part)
                if dataclasses.is_dataclass(current) and isinstance(value, dict):
                    update_config(current, value, key)
                elif dataclasses.is_dataclass(current) and not (value is None and _allowed_types(hint)[1]):
                    raise ValueError(
                        f"{key} is a section; set its fields, e.g. {config_keys(current, key + '.')[0]}=..."
                    )
                else:
                    setattr(target, part, _coerce(value, hint, current, key))
            else:
                child = getattr(target, part)
                if child is None:  # an optional section that is off: switch it on with its defaults
                    kinds = [
                        t for t in _allowed_types(_hints(type(target)).get(part))[0] if dataclasses.is_dataclass(t)
                    ]
                    if kinds:
                        child = kinds[0]()
                        setattr(target, part, child)
                target = child
    return revalidate(config)


def load_config(path: str | Path, base: Any | None = None) -> Any:
    """Read a YAML run config (``yaml.safe_load``); fields left out keep ``base``'s (default: RunConfig())."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"config file {path} does not exist")
    try:
        with open(path, encoding="utf-8-sig") as f:
            values = yaml.safe_load(f) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}{where}: not valid YAML ({problem})") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a run config must be a mapping with data/model/train sections")
    config = copy.deepcopy(base) if base is not None else RunConfig()
    try:
        return revalidate(update_config(config, values))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def dump_config(config: Any, path: str | Path | None = None) -> str:
    """YAML text of a config; also written to ``path`` when given."""
    text = yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False)
    if path is not None:
        Path(path).write_text(text)
    return text
