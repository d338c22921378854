"""What a run prints: a rich progress bar per epoch on a terminal, plain log lines otherwise.

`make_reporter(quiet, console)` picks one. Both take the same calls from the trainer:
``start_epoch`` / ``update`` (after every batch) / ``end_epoch`` (with the epoch's record) / ``message``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["Reporter", "PlainReporter", "RichReporter", "SilentReporter", "make_reporter", "format_metric"]


def format_metric(name: str, value: float | None) -> str:
    """Accuracies as percentages (``86.69``), errors with 4 significant digits."""
    if value is None:
        return "-"
    if name in ("accuracy", "weighted_accuracy"):
        return f"{100 * value:.2f}"
    return f"{value:.4g}"


def _epoch_line(record: dict[str, Any], metric: str, epochs: int) -> str:
    parts = [
        f"epoch {record['epoch'] + 1:>3}/{epochs}",
        f"loss {record['train_loss']:.4f}",
        f"train {format_metric(metric, record.get('train_metric'))}",
    ]
    if record.get("val_metric") is not None:
        parts.append(f"val {format_metric(metric, record['val_metric'])}")
    if record.get("test_metric") is not None:
        parts.append(f"test {format_metric(metric, record['test_metric'])}")
    if record.get("val_metric_moving_stats") is not None:  # GraphGPS's evaluation (train.val_with_moving_stats)
        moving = f"moving-BN val {format_metric(metric, record['val_metric_moving_stats'])}"
        if record.get("test_metric_moving_stats") is not None:
            moving += f" test {format_metric(metric, record['test_metric_moving_stats'])}"
        parts.append(moving)
    parts += [
        f"lr {record['lr']:.2e}",
        f"{record['graphs_per_s']:.0f} graphs/s",
        f"{record['epoch_time_s']:.1f}s",
    ]
    if record.get("best"):
        parts.append("*best*")
    return " | ".join(parts)


class Reporter:
    """Base class: does nothing (non-zero ranks use it)."""

    def __init__(self, metric: str = "", epochs: int = 0) -> None:
        self.metric, self.epochs = metric, epochs

    def configure(self, metric: str, epochs: int) -> None:
        self.metric, self.epochs = metric, epochs

    def start_epoch(self, epoch: int, num_batches: int, start_batch: int = 0) -> None:
        pass

    def update(self, batch: int, loss: float, train_metric: float | None, graphs_per_s: float) -> None:
        pass

    def end_epoch(self, record: dict[str, Any]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


SilentReporter = Reporter


class PlainReporter(Reporter):
    """One line per epoch (for logs, pipes and ``--quiet``)."""

    def __init__(self, console: Console | None = None, metric: str = "", epochs: int = 0, prefix: str = "") -> None:
        super().__init__(metric, epochs)
        self.console = console
        self.prefix = prefix

    def _print(self, text: str) -> None:
        text = self.prefix + text
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            print(text, flush=True)

    def end_epoch(self, record: dict[str, Any]) -> None:
        self._print(_epoch_line(record, self.metric, self.epochs))

    def message(self, text: str) -> None:
        self._print(text)


class RichReporter(PlainReporter):
    """A live bar per epoch: batches done, running loss and train metric, graphs/s, time left."""

    def __init__(self, console: Console, metric: str = "", epochs: int = 0) -> None:
        super().__init__(console, metric, epochs)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self.task = None
        self.started = False
        self.last_refresh = 0.0

    def start_epoch(self, epoch: int, num_batches: int, start_batch: int = 0) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"epoch {epoch + 1}/{self.epochs}", total=num_batches, completed=start_batch, stats=""
        )

    def update(self, batch: int, loss: float, train_metric: float | None, graphs_per_s: float) -> None:
        now = time.monotonic()
        stats = f"loss {loss:.4f}"
        if train_metric is not None:
            stats += f" {self.metric} {format_metric(self.metric, train_metric)}"
        stats += f" {graphs_per_s:.0f} graphs/s"
        self.progress.update(self.task, completed=batch + 1, stats=stats, refresh=now - self.last_refresh > 1.0)
        self.last_refresh = now

    def end_epoch(self, record: dict[str, Any]) -> None:
        self.progress.console.print(_epoch_line(record, self.metric, self.epochs), markup=False, highlight=False)

    def message(self, text: str) -> None:
        self.progress.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        if self.started:
            self.progress.stop()
            self.started = False


def make_reporter(
    *, quiet: bool = False, console: Console | None = None, is_main: bool = True, prefix: str = ""
) -> Reporter:
    """Rich bar on an interactive terminal, plain lines when piped, ``quiet`` or ``prefix``ed (several runs
    printing at once), nothing off rank 0."""
    if not is_main:
        return Reporter()
    console = console or Console(file=sys.stdout)
    if quiet or prefix or not console.is_terminal:
        return PlainReporter(console, prefix=prefix)
    return RichReporter(console)
