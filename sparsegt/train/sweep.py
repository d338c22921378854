"""Hyper-parameter sweeps: many normal runs over a space of config values, a table and a plot at the end.

A sweep is a folder (``out_dir/sweeps/<name>``) holding ``sweep.json`` (the base config, the space, the
method, and every trial's overrides and status) and one ordinary run directory per trial
(``trial-000``, ``trial-001``, ...), so `sparsegt runs`, `sparsegt eval` and ``--resume`` work on a trial
as on any run. Running the same sweep again (`Sweep.run` on the folder) continues it: completed trials
are kept, a trial that was cut short resumes from its checkpoint (bit-exact), the rest start.

The space: one `Dimension` per config key, parsed from ``key=spec``:

- ``train.lr=1e-3,5e-4,2e-4``: a choice (grid: every value; random: one drawn uniformly);
- ``train.lr=loguniform:1e-4:1e-2``, ``model.dropout=uniform:0:0.3``, ``model.hidden=int:32:128``: ranges
  (random and optuna only).

Methods: ``grid`` (the Cartesian product of the choices, in order), ``random`` (``trials`` draws from a
seeded generator: the same seed gives the same trials), ``optuna`` (TPE from the Optuna package, when it is
installed: ``pip install 'sparsegt[sweep]'``; its study lives in ``optuna.db`` in the folder, so it resumes
too). Trials run one after the other: on a small machine a run needs every core.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import apply_overrides, config_to_dict, dump_config, load_config

__all__ = ["Dimension", "parse_dimension", "Sweep", "METHODS"]

METHODS = ("grid", "random", "optuna")
RANGE_KINDS = ("uniform", "loguniform", "int")


@dataclass(frozen=True)
class Dimension:
    """One swept config key: ``kind`` "choice" (``values``) or a range "uniform", "loguniform", "int"
    (``low``..``high``, both included for "int")."""

    key: str
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0

    def grid_values(self) -> tuple:
        if self.kind != "choice":
            raise ValueError(f"{self.key} is a range ({self.kind}); a grid needs a list of values "
                             f"(e.g. {self.key}=a,b,c) — or use --method random or optuna")
        return self.values

    def draw(self, rng: np.random.Generator) -> Any:
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        if self.kind == "int":
            return int(rng.integers(int(self.low), int(self.high) + 1))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial suggests for this key."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high))
        return trial.suggest_float(self.key, self.low, self.high, log=self.kind == "loguniform")


def _scalar(text: str) -> Any:
    """'1e-3' -> 0.001, '64' -> 64, 'true' -> True, 'null' -> None, anything else stays a string."""
    import yaml

    value = yaml.safe_load(text)
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_dimension(text: str) -> Dimension:
    """``key=v1,v2,...`` (a choice) or ``key=uniform|loguniform|int:low:high`` (a range)."""
    key, sep, spec = text.partition("=")
    if not sep or not key or not spec:
        raise ValueError(f"a swept parameter is key=values (e.g. train.lr=1e-3,5e-4 or train.lr=loguniform:1e-4:1e-2), "
                         f"got {text!r}")
    kind, colon, bounds = spec.partition(":")
    if colon and kind in RANGE_KINDS:
        parts = bounds.split(":")
        if len(parts) != 2:
            raise ValueError(f"{key}: a range is {kind}:low:high, got {spec!r}")
        low, high = (float(p) for p in parts)
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ValueError(f"{key}: {kind} needs low < high{' and low > 0' if kind == 'loguniform' else ''}, "
                             f"got {low} and {high}")
        return Dimension(key, kind, low=low, high=high)
    values = tuple(_scalar(v) for v in spec.split(","))
    if len(set(map(repr, values))) != len(values):
        raise ValueError(f"{key}: the values {spec!r} repeat one")
    return Dimension(key, "choice", values=values)


def _override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value) if isinstance(value, str) else ('null' if value is None else value)}"


class Sweep:
    """A sweep in ``folder``: `create` a new one or `open` an existing one, then `run` it and read `results`."""

    def __init__(self, folder: Path, record: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.record = record
        self.dimensions = [Dimension(**{**d, "values": tuple(d["values"])}) for d in record["dimensions"]]

    # ------------------------------------------------------------------ set-up
    @classmethod
    def create(cls, folder: str | Path, base_config: Any, dimensions: list[Dimension], method: str = "grid",
               trials: int | None = None, seed: int = 0) -> Sweep:
        folder = Path(folder)
        if (folder / "sweep.json").exists():
            raise ValueError(f"{folder} already holds a sweep; continue it with sparsegt sweep --resume {folder}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not dimensions:
            raise ValueError("a sweep needs at least one swept parameter (--param key=values)")
        keys = [d.key for d in dimensions]
        if len(set(keys)) != len(keys):
            raise ValueError(f"a key is swept twice: {keys}")
        for d in dimensions:  # every key must exist and take its values: fail now, not at trial 17
            for value in (d.values[:1] if d.kind == "choice" else (d.low,)):
                apply_overrides(copy.deepcopy(base_config), [_override(d.key, value)])
        if method == "grid":
            count = math.prod(len(d.grid_values()) for d in dimensions)
            if trials is not None and trials != count:
                raise ValueError(f"a grid over these values has {count} trials; leave --trials out")
            trials = count
        elif not trials or trials < 1:
            raise ValueError(f"--method {method} needs --trials N (N >= 1)")
        folder.mkdir(parents=True, exist_ok=True)
        dump_config(base_config, folder / "base.yaml")
        record = {"method": method, "trials": trials, "seed": seed,
                  "dimensions": [asdict(d) for d in dimensions], "done": []}
        sweep = cls(folder, record)
        sweep._save()
        return sweep

    @classmethod
    def open(cls, folder: str | Path) -> Sweep:
        folder = Path(folder)
        if not (folder / "sweep.json").exists():
            raise ValueError(f"{folder} is not a sweep folder (no sweep.json)")
        return cls(folder, json.loads((folder / "sweep.json").read_text()))

    def _save(self) -> None:
        tmp = self.folder / "sweep.json.tmp"
        tmp.write_text(json.dumps(self.record, indent=1))
        tmp.replace(self.folder / "sweep.json")

    def base_config(self) -> Any:
        return load_config(self.folder / "base.yaml")

    def trial_dir(self, index: int) -> Path:
        return self.folder / f"trial-{index:03d}"

    # ------------------------------------------------------------------ the trials
    def planned_values(self) -> list[dict[str, Any]]:
        """The values of every trial of a grid or random sweep, in order (Optuna decides as it goes)."""
        if self.record["method"] == "grid":
            combos = itertools.product(*(d.grid_values() for d in self.dimensions))
            return [dict(zip((d.key for d in self.dimensions), combo, strict=True)) for combo in combos]
        rng = np.random.default_rng(self.record["seed"])
        return [{d.key: d.draw(rng) for d in self.dimensions} for _ in range(self.record["trials"])]

    def run(self, train: Any, log: Any = print) -> list[dict[str, Any]]:
        """Run the trials not yet completed, one after the other, with ``train(config, run_dir, resume) ->
        summary`` (`train_run` in the CLI); return `results`."""
        if self.record["method"] == "optuna":
            self._run_optuna(train, log)
        else:
            for index, values in enumerate(self.planned_values()):
                self._run_trial(index, values, train, log)
        return self.results()

    def _run_trial(self, index: int, values: dict[str, Any], train: Any, log: Any) -> dict[str, Any] | None:
        run_dir = self.trial_dir(index)
        summary_path = run_dir / "summary.json"
        if summary_path.exists() and json.loads(summary_path.read_text()).get("status") in ("completed", "patience"):
            return json.loads(summary_path.read_text())
        config = self.base_config()
        apply_overrides(config, [_override(k, v) for k, v in values.items()])
        config.name = f"{self.folder.name}-trial-{index:03d}"
        resume = (run_dir / "last.pt").exists()
        log(f"trial {index + 1}/{self.record['trials']}: {' '.join(_override(k, v) for k, v in values.items())}"
            + (" (resuming)" if resume else ""))
        summary = train(config, run_dir, resume)
        if index not in self.record["done"] and summary is not None and summary.get("status") in ("completed",
                                                                                                   "patience"):
            self.record["done"].append(index)
            self._save()
        return summary

    def _run_optuna(self, train: Any, log: Any) -> None:
        try:
            import optuna
        except ImportError as err:
            raise ImportError("--method optuna needs Optuna: pip install 'sparsegt[sweep]'") from err
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        direction = "maximize" if self.record.get("higher_is_better", True) else "minimize"
        study = optuna.create_study(study_name="sweep", direction=direction, load_if_exists=True,
                                    storage=f"sqlite:///{(self.folder / 'optuna.db').resolve()}",
                                    sampler=optuna.samplers.TPESampler(seed=self.record["seed"]))
        while True:
            unfinished = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
            finished = [t for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
            if unfinished:  # cut short last time: same trial, same values, resumed from its checkpoint
                frozen = unfinished[0]
                trial = optuna.trial.Trial(study, frozen._trial_id)
                values = frozen.params
            elif len(finished) < self.record["trials"]:
                trial = study.ask()
                values = {d.key: d.suggest(trial) for d in self.dimensions}
            else:
                return
            summary = self._run_trial(trial.number, values, train, log)
            if summary is None or summary.get("val_metric") is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                self.record["higher_is_better"] = summary.get("higher_is_better", True)
                study.tell(trial, summary["val_metric"])

    # ------------------------------------------------------------------ results
    def results(self) -> list[dict[str, Any]]:
        """One row per trial that has a summary: index, the swept values, status, val and test metric, time;
        best validation first."""
        rows = []
        for run_dir in sorted(self.folder.glob("trial-*")):
            summary_path, config_path = run_dir / "summary.json", run_dir / "config.yaml"
            if not summary_path.exists() or not config_path.exists():
                continue
            summary = json.loads(summary_path.read_text())
            flat = _flatten(config_to_dict(load_config(config_path)))
            rows.append({"trial": int(run_dir.name.split("-")[1]), "run_dir": str(run_dir),
                         "values": {d.key: flat.get(d.key) for d in self.dimensions}, **{
                             k: summary.get(k) for k in ("status", "val_metric", "test_metric", "train_time_s",
                                                         "metric", "higher_is_better", "best_epoch")}})
        higher = rows[0].get("higher_is_better", True) if rows else True
        return sorted(rows, key=lambda r: (r["val_metric"] is None,
                                           -(r["val_metric"] or 0) if higher else (r["val_metric"] or 0)))

    def plot(self, rows: list[dict[str, Any]], path: Path | None = None) -> Path | None:
        """``sweep.png``: the validation metric against each swept parameter (one panel each); None when no
        trial has finished."""
        rows = [r for r in rows if r["val_metric"] is not None]
        if not rows:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(self.dimensions), figsize=(4 * len(self.dimensions), 3.2), squeeze=False)
        for ax, d in zip(axes[0], self.dimensions, strict=True):
            xs = [r["values"][d.key] for r in rows]
            numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
            positions = xs if numeric else [list(map(repr, d.values)).index(repr(x)) for x in xs]
            ax.scatter(positions, [r["val_metric"] for r in rows])
            if numeric and d.kind == "loguniform" or (numeric and min(xs) > 0 and max(xs) / min(xs) > 20):
                ax.set_xscale("log")
            if not numeric:
                ax.set_xticks(range(len(d.values)), [str(v) for v in d.values])
            ax.set_xlabel(d.key)
            ax.set_ylabel(f"val {rows[0].get('metric') or 'metric'}")
        fig.tight_layout()
        path = path or self.folder / "sweep.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
