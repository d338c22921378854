"""From a `RunConfig` to a finished run directory: data, encodings, model, `Trainer`, summary, plot.

``train_run(config)`` is what ``sparsegt train`` calls::

    runs/<name>-<UTC timestamp>/
        config.yaml     the resolved config (load it with `load_config`, or ``sparsegt train --config``)
        model_inputs.json  what the model reads: task, feature forms, encodings, SMILES featuriser
        metrics.jsonl   one record per epoch (also as TensorBoard events.out.tfevents.*: `loggers`)
        last.pt         the latest state (mid-epoch too); ``sparsegt train --resume RUN_DIR`` continues it
        best.pt         the model at the best validation epoch
        summary.json    status, best epoch, val/test metric at that epoch, time, parameters
        curves.png      loss and metric per epoch
        confusion.png   classification runs: the best model's per-class confusion (+ .json, .csv)
"""

from __future__ import annotations

import copy
import functools
import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from .checkpoint import atomic_write_text, load_checkpoint, load_model_weights
from .config import RunConfig, dump_config, load_config
from .confusion import write_confusion
from .distributed import DistInfo, broadcast_object, close_distributed, init_distributed, resolve_device
from .model_inputs import MODEL_INPUTS_FILE, ModelInputs, inputs_of_dataset, read_model_inputs, write_model_inputs
from .plots import plot_curves
from .progress import make_reporter
from .resume import RunToResume, checkpoint_to_continue, open_run, record_config
from .trainer import Trainer, TrainingDiverged, seed_everything

__all__ = [
    "train_run",
    "train_seeds",
    "evaluate_run",
    "build_dataset",
    "build_model",
    "run_encodings",
    "trim_dataset_edges",
    "model_inputs_of_run",
    "RunResult",
    "make_run_dir",
]


@dataclass
class RunResult:
    """What a finished (or stopped) run leaves: its folder and its summary."""

    run_dir: Path | None
    summary: dict[str, Any]


def _barrier(info: DistInfo) -> None:
    if info.enabled:
        torch.distributed.barrier()


# what `sparsegt.encodings.add_encodings` precomputes, and its options
ENCODINGS = ("lap_pe", "rwse", "lap_normalization", "lap_skip_trivial", "hop_features")


def build_dataset(config: RunConfig, *, progress: bool = False,
                  splits: tuple[str, ...] = ("train", "val", "test")) -> Any:
    """`load_dataset` with the run's data section, then the encodings the model and ``data.encodings``
    ask for (cached on disk), computed for ``splits`` only (the others are left without them)."""
    from ..data.catalog import get_card, load_dataset

    data = config.data
    try:
        dataset = load_dataset(data.name, root=data.root, seed=data.seed, progress=progress, **data.options)
    except ImportError as err:
        extra = getattr(get_card(data.name), "extra", "") or "chem"
        message = str(err)
        if "pip install" not in message:
            message += f" — dataset {data.name!r} needs the optional extra: pip install 'sparsegt[{extra}]'"
        raise ImportError(message) from err
    if data.trim_edges is not None:  # TEDDY: the edges are trimmed first, so the encodings see the kept graph
        dataset = trim_dataset_edges(dataset, data.trim_edges, splits)
    encodings = run_encodings(config)
    hops = encodings.pop("hop_features", 0)
    if hops:  # Â X .. Â^T X on the whole graph (LargeGT's tokens); cheap (T sparse products), not cached
        from ..data.hop_features import add_hop_features

        dataset = add_hop_features(dataset, hops, splits)
    if encodings:
        from ..encodings import add_encodings

        options = json.dumps(data.options, sort_keys=True)
        options += f"-trim{data.trim_edges}" if data.trim_edges is not None else ""
        # data.name=folder: root is the user's data folder, not a cache; its path tells two folders apart
        from_folder = data.name == "folder"
        options += f"-{Path(data.root).resolve()}" if from_folder else ""
        for split in splits:
            graphs = getattr(dataset, split)
            key = f"{dataset.name}-{split}-seed{data.seed}-{options}"
            setattr(
                dataset,
                split,
                add_encodings(graphs, **encodings, cache_key=key, cache_dir=None if from_folder else data.root,
                              progress=progress),
            )
    return dataset


def trim_dataset_edges(dataset: Any, keep_fraction: float, splits: tuple[str, ...]) -> Any:
    """``data.trim_edges``: every graph of ``splits`` keeps ``keep_fraction`` of its edges by TEDDY's degree-based
    scores (`sparsegt.patterns.trim_edges`: exactly ``round(keep_fraction * E)`` per graph), in place."""
    from ..patterns.edge_trim import trim_edges

    for split in splits:
        setattr(dataset, split, [trim_edges(graph, keep_fraction) for graph in getattr(dataset, split)])
    return dataset


def run_encodings(config: RunConfig) -> dict[str, Any]:
    """The keyword arguments of `sparsegt.encodings.add_encodings` for the run's graphs: what the model
    requires, updated by ``data.encodings`` (zero / false entries left out)."""
    encodings = dict(_required_encodings(config.model))
    unknown = sorted(set(config.data.encodings) - set(ENCODINGS))
    if unknown:
        raise ValueError(
            f"data.encodings: unknown encoding(s) {unknown}; known: {', '.join(ENCODINGS)} "
            "(e.g. data.encodings.rwse=16)"
        )
    encodings.update(config.data.encodings)
    return {k: v for k, v in encodings.items() if v}


def model_inputs_of_run(folder: str | Path, config: RunConfig) -> ModelInputs:
    """The run's (or pretrained model's) ``model_inputs.json``; for a run from before that record, the record
    rebuilt from ``config`` by loading its dataset (no encodings computed)."""
    recorded = read_model_inputs(folder)
    if recorded is not None:
        return recorded
    config = copy.deepcopy(config)
    if config.data.root and not Path(config.data.root).is_absolute() and not Path(config.data.root).exists():
        config.data.root = None  # a run's relative cache folder, seen from elsewhere: use the default cache
    return inputs_of_dataset(build_dataset(config, splits=()), run_encodings(config))


def _required_encodings(model_config: Any) -> dict[str, Any]:
    try:
        from ..models import ModelConfig, required_encodings
    except ImportError:
        return {}
    if not isinstance(model_config, ModelConfig):  # a model of the caller's own (train_run(model=...))
        return {}
    return dict(required_encodings(model_config))


def build_model(config: RunConfig, dataset: Any, *, initial_weights: bool = False) -> torch.nn.Module:
    """`GraphTransformer` for the dataset's task and features; then, as ``train`` asks: the weights of
    ``init_from`` (only with ``initial_weights``: a new run; every other caller loads a checkpoint of its own,
    and the source may be gone by then), the frozen model with GIN adapters (``gin_adapter``), or the model
    behind GTSP's gates (a `GTSPModel`, ``gtsp``). ValueError when the config does not fit."""
    from ..models import GraphTransformer

    model = GraphTransformer(config.model, dataset.task, dataset.node_features, dataset.edge_features)
    if config.train.init_from is not None and initial_weights:
        source = Path(config.train.init_from)
        source = source / "best.pt" if source.is_dir() else source
        load_model_weights(model, load_checkpoint(source, required=("model",))["model"], str(source),
                           " (train.init_from must come from a run of the same model config)")
    if config.train.gin_adapter is not None:
        from ..sparsify import add_sparse_gin_attention

        add_sparse_gin_attention(model, config.train.gin_adapter)
    gtsp = config.train.gtsp
    if gtsp is None:
        return model
    from ..sparsify import GTSPModel, GTSPTargets

    targets = GTSPTargets(edges=gtsp.edges, heads=gtsp.heads, layers=gtsp.layers, weights=gtsp.weights)
    return GTSPModel(model, targets, strength=gtsp.strength)


def make_loader_for(config: RunConfig) -> Any:
    """The trainer's loader factory: `NeighborLoader` with the run's fan-outs when ``data.fanouts`` is set (one
    large graph, sampled), else None (the trainer's default: whole graphs)."""
    if not config.data.fanouts:
        return None
    from ..data.neighbor_loader import NeighborLoader

    return functools.partial(NeighborLoader, fanouts=config.data.fanouts, eval_fanouts=config.data.eval_fanouts,
                             partition=config.data.partition)


def make_run_dir(out_dir: str | Path, name: str) -> Path:
    """``out_dir/<name>-<YYYYmmdd-HHMMSS>`` (UTC), made unique with a suffix if needed; ValueError when it would
    lie outside ``out_dir`` or cannot be created."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(out_dir) / f"{name}-{stamp}"
    if base.resolve().parent != Path(out_dir).resolve():
        raise ValueError(f"name {name!r} would put the run folder at {base}, outside out_dir {out_dir}")
    path, i = base, 1
    while path.exists():
        path = Path(f"{base}-{i}")
        i += 1
    return _make_folder(path)


def _make_folder(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"cannot write the run folder {path} ({err.strerror or err}); choose a writable folder "
                         "with --out-dir (or out_dir=...)") from None
    return path


# what a run folder holds before anything worth keeping was written (a failed start leaves no folder behind)
_STARTING_FILES = {"config.yaml", "metrics.jsonl", MODEL_INPUTS_FILE}


def _remove_if_nothing_recorded(path: Path) -> None:
    """Delete a run folder this call created when it holds only its config and an empty metrics.jsonl."""
    names = {p.name for p in path.iterdir()} if path.is_dir() else None
    if names is None or not names <= _STARTING_FILES:
        return
    if "metrics.jsonl" in names and (path / "metrics.jsonl").read_text().strip():
        return
    for name in names:
        (path / name).unlink()
    path.rmdir()


def _num_parameters(model: torch.nn.Module) -> int:
    if hasattr(model, "num_parameters"):
        return int(model.num_parameters())
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _write_summary(run_dir: Path, config: RunConfig, summary: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    if history:
        try:
            plot_curves(
                history,
                summary["metric"],
                run_dir / "curves.png",
                title=f"{config.name} ({config.data.name})",
            )
        except Exception as err:  # a plot must never lose a finished run
            print(f"warning: curves.png not written ({type(err).__name__}: {err})")


def train_run(
    config: RunConfig | None = None,
    *,
    resume: str | Path | RunToResume | None = None,
    quiet: bool = False,
    console: Console | None = None,
    run_dir: str | Path | None = None,
    model: torch.nn.Module | None = None,
    dataset: Any | None = None,
    dist: DistInfo | None = None,
    make_loader: Any = None,
    log_prefix: str = "",
) -> RunResult:
    """Train one run (or continue ``resume``: a run directory, or `open_run`'s answer) and return its summary.

    ``config`` with ``resume``: the run's config as the caller loaded and perhaps changed it (else its
    ``config.yaml`` is read). ``model``/``dataset`` may be given to bypass `build_model`/`build_dataset` (tests,
    notebooks); ``run_dir`` fixes the output folder instead of ``out_dir/name-timestamp``. Under torchrun this
    joins the process group; only rank 0 writes. ``train.threads`` sets torch's thread count for the run; the
    caller's count is given back when it returns.

    The steps: what to continue (`sparsegt.train.resume`), the data (`_dataset_for`), the model (`_model_for`),
    the run folder (`_open_run_folder`), then training in it (`_train_in`).
    """
    if resume is not None:
        run = resume if isinstance(resume, RunToResume) else open_run(resume, config=config)
        config, last = run.config, checkpoint_to_continue(run, quiet=quiet)
        if last is None:  # killed before its first checkpoint: nothing to continue, start afresh in place
            run_dir = run.run_dir
    elif config is None:
        raise ValueError("train_run needs a config or a run directory to resume")
    else:
        last = None
    own_dist = dist is None
    callers_threads = torch.get_num_threads()
    info = dist or init_distributed(config.train.device)
    finished = False
    try:
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        dataset = dataset if dataset is not None else _dataset_for(config, info, quiet)
        model = _model_for(config, dataset, model, info, resuming=last is not None)
        path, created = (last.parent, None) if last is not None else _open_run_folder(config, run_dir, info)
        try:
            result = _train_in(path, config, last, model, dataset, info, quiet, console, make_loader, log_prefix)
            finished = True
            return result
        except BaseException:
            if created is not None and info.is_main:
                _remove_if_nothing_recorded(created)
            raise
    finally:
        torch.set_num_threads(callers_threads)
        if own_dist:
            close_distributed(wait_for_all=finished)


def _dataset_for(config: RunConfig, info: DistInfo, quiet: bool) -> Any:
    """`build_dataset`, rank 0 first (it generates and caches the data the other ranks then read)."""
    if not info.is_main:
        _barrier(info)
    dataset = build_dataset(config, progress=not quiet and info.is_main)
    if info.is_main:
        _barrier(info)
    return dataset


def _model_for(config: RunConfig, dataset: Any, model: torch.nn.Module | None, info: DistInfo,
               resuming: bool) -> torch.nn.Module:
    """The run's model (the caller's, or `build_model`'s from the seeded RNG) on the run's device; a fresh
    distributed run then gives each rank its own dropout stream (a resumed one restores its RNG states)."""
    seed_everything(config.train.seed)
    if model is None:
        model = build_model(config, dataset, initial_weights=not resuming)
    model = model.to(info.device)
    if info.enabled and not resuming:
        torch.manual_seed(config.train.seed * 1000 + info.rank)
    return model


def _open_run_folder(config: RunConfig, run_dir: str | Path | None, info: DistInfo) -> tuple[Path, Path | None]:
    """(the folder a new run writes into, the folder if this call created it): ``run_dir``, or a new
    ``out_dir/name-timestamp`` (named by rank 0, broadcast to the others)."""
    if run_dir is not None:
        path, created = Path(run_dir), None
        if info.is_main:
            created = None if path.exists() else path
            _make_folder(path)
        return path, created
    created = make_run_dir(config.out_dir, config.name) if info.is_main else None
    return Path(broadcast_object(str(created) if created else None, info)), created


def _train_in(path: Path, config: RunConfig, last: Path | None, model: torch.nn.Module, dataset: Any,
              info: DistInfo, quiet: bool, console: Console | None, make_loader: Any, log_prefix: str) -> RunResult:
    """`train_run` from the point its run folder exists; ``last``: the checkpoint it continues (None: a new run)."""
    if info.is_main and last is None:
        dump_config(config, path / "config.yaml")
    if info.is_main and (last is None or not (path / MODEL_INPUTS_FILE).exists()):
        write_model_inputs(path, inputs_of_dataset(dataset, run_encodings(config)))
    reporter = make_reporter(quiet=quiet, console=console, is_main=info.is_main, prefix=log_prefix)
    trainer = Trainer(config, model, dataset.task, dataset.train, dataset.val, dataset.test, run_dir=path,
                      reporter=reporter, dist=info, make_loader=make_loader or make_loader_for(config))
    if last is not None:
        trainer.resume(last)  # fails (clearly) before the run folder is touched
        if info.is_main:
            record_config(path, config)  # resumed with overrides: config.yaml describes what runs from now on
    if info.is_main:
        reporter.message(
            f"{config.name}: {dataset.name} ({len(dataset.train)}/{len(dataset.val)}/"
            f"{len(dataset.test)} graphs), {_num_parameters(model):,} parameters, "
            f"{info.world_size} process(es) on {info.device}, run dir {path}"
        )
    return _fit_and_record(trainer, path, config, model, dataset, info)


def _fit_and_record(trainer: Trainer, path: Path, config: RunConfig, model: torch.nn.Module, dataset: Any,
                    info: DistInfo) -> RunResult:
    """``trainer.fit()``, then (rank 0) summary.json, curves.png and the confusion matrices; a diverged run
    writes its summary, with the error, before the error goes on."""
    extra = {
        "name": config.name,
        "dataset": dataset.name,
        "run_dir": str(path),
        "num_parameters": _num_parameters(model),
        "seed": config.train.seed,
    }
    try:
        summary = trainer.fit()
    except TrainingDiverged as err:
        summary = {**trainer.summary(), **extra, "error": str(err)}
        if info.is_main:
            _write_summary(path, config, summary)
        raise
    summary = {**summary, **extra}
    if config.train.gtsp is not None:
        summary["gtsp"] = _gtsp_summary(trainer, path, model)
    if info.is_main:
        _write_summary(path, config, summary)
        _write_confusion(path, config, model, dataset, info)
    return RunResult(path, summary)


def _gtsp_summary(trainer: Trainer, path: Path, masked: torch.nn.Module) -> dict[str, Any]:
    """``train.gtsp``'s result: the best epoch's model behind its gates (eval mode: deterministic gates) and the
    smaller model `sparsegt.sparsify.prune` makes of it, both scored on the test split (they compute the same
    function, so the two scores agree up to float rounding), the fraction of gates open per dimension (entries:
    of the last test batch) and the parameter counts. Collective under DDP (the evaluations gather)."""
    from ..sparsify import prune

    best = path / "best.pt"
    if best.exists():
        load_model_weights(masked, load_checkpoint(best, required=("model",))["model"], str(best))
    test = trainer.test_graphs or trainer.val_graphs
    split = "test" if trainer.test_graphs else "val"
    scored_masked = trainer.evaluate(test)
    densities = masked.densities()
    pruned = prune(masked).eval()
    scored_pruned = trainer.evaluate(test, model=pruned)
    weights = masked.parameter_groups()[0]["params"]   # the network's own parameters, without the gates
    return {
        "split": split,
        "gates_open": densities,
        "layers": len(pruned.layers),
        "heads": [layer.attention.num_heads for layer in pruned.layers if hasattr(layer, "attention")
                  and hasattr(layer.attention, "num_heads")],
        "parameters_dense": sum(p.numel() for p in weights),
        "parameters_pruned": sum(p.numel() for p in pruned.parameters()),
        "nonzero_parameters_pruned": sum(int(torch.count_nonzero(p)) for p in pruned.parameters()),
        "metric_masked": scored_masked["metric"],
        "metric_pruned": scored_pruned["metric"],
    }


def _write_confusion(path: Path, config: RunConfig, model: torch.nn.Module, dataset: Any, info: DistInfo) -> None:
    """confusion.png/.json/.csv of a classification run's best model (`sparsegt.train.confusion`)."""
    try:
        write_confusion(path, model, dataset.task, {"val": dataset.val, "test": dataset.test},
                        config.data.eval_batch_size or config.data.batch_size, info.device,
                        title=f"{config.name} ({config.data.name})")
    except Exception as err:  # like curves.png: a plot must never lose a finished run
        print(f"warning: confusion.png not written ({type(err).__name__}: {err})")


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def train_seeds(
    config: RunConfig, seeds: list[int], *, quiet: bool = False, console: Console | None = None
) -> tuple[Path, list[RunResult], dict[str, Any]]:
    """One run per seed in ``out_dir/<name>-<stamp>/seed-<s>/``.

    Returns (folder, runs, summary with mean and std of the val/test metric)."""
    if not seeds:
        raise ValueError("--seeds needs at least one seed")
    parent = make_run_dir(config.out_dir, config.name)
    results = []
    try:
        for seed in seeds:
            seeded = copy.deepcopy(config)
            seeded.train.seed = seed
            results.append(train_run(seeded, quiet=quiet, console=console, run_dir=parent / f"seed-{seed}"))
    except BaseException:
        if not any(parent.iterdir()):  # the first seed failed before recording anything
            parent.rmdir()
        raise
    summaries = [r.summary for r in results]
    test_mean, test_std = _mean_std([s["test_metric"] for s in summaries])
    val_mean, val_std = _mean_std([s["val_metric"] for s in summaries])
    summary = {
        "name": config.name,
        "dataset": summaries[0]["dataset"],
        "metric": summaries[0]["metric"],
        "seeds": seeds,
        "test_mean": test_mean,
        "test_std": test_std,
        "val_mean": val_mean,
        "val_std": val_std,
        "runs": summaries,
    }
    atomic_write_text(parent / "summary.json", json.dumps(summary, indent=2) + "\n")
    return parent, results, summary


def evaluate_run(
    run_dir: str | Path,
    *,
    checkpoint: str = "best.pt",
    splits: tuple[str, ...] = ("val", "test"),
    device: str = "auto",
) -> dict[str, dict[str, float]]:
    """Reload a run's config and checkpoint, rebuild its data and model, and score ``splits``.

    Returns ``{split: {"loss": ..., "metric": ...}}``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ValueError(f"{run_dir} is not a run directory (no config.yaml)")
    config = load_config(run_dir / "config.yaml")
    dataset = build_dataset(config)
    seed_everything(config.train.seed)
    model = build_model(config, dataset)
    state = load_checkpoint(run_dir / checkpoint, required=("model",))
    load_model_weights(model, state["model"], str(run_dir / checkpoint),
                       f" (was {run_dir / 'config.yaml'} edited after the run?)")
    info = DistInfo(device=resolve_device(device))
    model = model.to(info.device)
    trainer = Trainer(config, model, dataset.task, dataset.train, dataset.val, dataset.test, dist=info,
                      make_loader=make_loader_for(config))
    return {split: trainer.evaluate(getattr(dataset, split)) for split in splits}
