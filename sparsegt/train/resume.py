"""Continuing a run folder (``sparsegt train --resume RUN_DIR [KEY=VALUE ...]``): every check in one place.

`open_run` checks that the folder is a run (it has a ``config.yaml``), reads that config and applies the
overrides; `checkpoint_to_continue` clears what a writer killed mid-write left and says whether there is a
``last.pt`` to continue (a run killed before its first checkpoint starts again in its folder; one with results
but no ``last.pt`` is an error); `record_config` writes the config that runs from now on into ``config.yaml``
and keeps the one it replaces as ``config.before-resume-<UTC stamp>.yaml``. `sparsegt.train.run.train_run`
calls the three in that order; the CLI calls `open_run` itself to report the overrides before the run starts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import remove_stale_temp_files
from .config import RunConfig, apply_overrides, dump_config, load_config

__all__ = ["RunToResume", "open_run", "checkpoint_to_continue", "record_config", "nothing_recorded"]

# what a run folder holds that is worth keeping (a folder with none of them has nothing to lose)
_RESULT_FILES = ("last.pt", "best.pt", "summary.json")


@dataclass(frozen=True)
class RunToResume:
    """A run folder to continue and the config it continues with."""

    run_dir: Path
    config: RunConfig  # the run's config.yaml (or the caller's), with ``overrides`` applied
    overrides: tuple[str, ...] = ()


def open_run(run_dir: str | Path, overrides: Sequence[str] = (), *, config: RunConfig | None = None) -> RunToResume:
    """The run in ``run_dir``, with ``overrides`` (``a.b=value``) applied to its ``config.yaml``; ``config``: the
    caller has loaded (and perhaps changed) it already. ValueError when the folder is not a run directory, or
    for an override that does not fit the config."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise ValueError(f"{run_dir} is not a run directory (no config.yaml)")
    if config is None:
        config = load_config(run_dir / "config.yaml")
    apply_overrides(config, list(overrides))
    return RunToResume(run_dir, config, tuple(overrides))


def nothing_recorded(run_dir: Path) -> bool:
    """True when ``run_dir`` holds no checkpoint, no summary and an empty (or no) ``metrics.jsonl``."""
    metrics = run_dir / "metrics.jsonl"
    return (not any((run_dir / name).exists() for name in _RESULT_FILES)
            and not (metrics.exists() and metrics.read_text().strip()))


def checkpoint_to_continue(run: RunToResume, *, quiet: bool = False) -> Path | None:
    """The ``last.pt`` to continue from, after deleting the temporary files of a checkpoint write that was
    killed; None when the run was killed before (or during) its first checkpoint: nothing to continue, it
    starts afresh in its folder. ValueError when it has results but no ``last.pt``."""
    removed = remove_stale_temp_files(run.run_dir)
    if removed and not quiet:
        print(f"removed {len(removed)} temporary file(s) of an interrupted checkpoint write in {run.run_dir}")
    last = run.run_dir / "last.pt"
    if last.exists():
        return last
    if not nothing_recorded(run.run_dir):
        raise ValueError(f"{run.run_dir} has no last.pt to resume from (but has results: evaluate it with "
                         "sparsegt eval, or start a new run)")
    return None


def record_config(run_dir: Path, config: RunConfig) -> Path | None:
    """Make ``run_dir/config.yaml`` describe ``config`` (what runs from now on). When that changes it (a resume
    with overrides) the earlier file is kept as ``config.before-resume-<stamp>.yaml``, whose path is returned."""
    text = dump_config(config)
    current = run_dir / "config.yaml"
    if current.exists() and current.read_text() == text:
        return None
    kept = None
    if current.exists():
        kept = run_dir / f"config.before-resume-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}.yaml"
        current.rename(kept)
    dump_config(config, current)
    return kept
