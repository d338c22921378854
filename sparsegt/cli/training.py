"""`sparsegt train`, `sweep` and `runs`: training runs, searches over config values, runs read back."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import _console, _is_main_process, _resolve_train_config


def cmd_train(args: argparse.Namespace) -> int:
    from ..train.allocator import keep_large_allocations
    from ..train.config import dump_config
    from ..train.report import print_run_table, print_seeds_table
    from ..train.resume import open_run
    from ..train.run import train_run, train_seeds

    keep_large_allocations()  # per-edge tensors of 32+ MiB: reuse them instead of page-faulting them in
    console = _console()
    no_arguments = not (args.preset or args.config or args.resume or args.overrides or args.seeds or args.show_config)
    if no_arguments:
        from ..train.demo import run_demo

        run_demo(quiet=args.quiet, console=console, out_dir=args.out_dir or "runs")
        return 0
    if args.resume:
        if args.seeds:
            raise ValueError("--resume continues one run; resume each seed's folder (RUN_DIR/seed-S) on its own")
        run = open_run(args.resume, args.overrides)
        if run.overrides:
            console.print(f"[yellow]resuming with overrides {' '.join(run.overrides)}[/]")
        result = train_run(resume=run, quiet=args.quiet, console=console)
        print_run_table([result.summary], console)
        return 0
    config = _resolve_train_config(args)
    if args.show_config:
        print(dump_config(config), end="")
        return 0
    if args.seeds:
        parent, _, summary = train_seeds(config, args.seeds, quiet=args.quiet, console=console)
        print_seeds_table(summary, console)
        console.print(f"runs in {parent}")
        return 0
    result = train_run(config, quiet=args.quiet, console=console)
    if result.summary is not None and _is_main_process():
        print_run_table([result.summary], console)
    return 0



def cmd_sweep(args: argparse.Namespace) -> int:
    from ..train.run import train_run
    from ..train.sweep import Sweep, parse_dimension

    console = _console()
    if args.resume:
        if args.param or args.preset or args.config or args.overrides:
            raise ValueError("--resume continues a sweep as it was defined; leave out --param, --preset, --config "
                             "and overrides")
        sweep = Sweep.open(args.resume)
    else:
        if not args.param:
            raise ValueError("a sweep needs at least one --param KEY=SPEC (e.g. --param train.lr=1e-3,5e-4)")
        config = _resolve_train_config(args)
        folder = Path(args.out_dir or config.out_dir) / "sweeps" / (args.name or config.name)
        sweep = Sweep.create(folder, config, [parse_dimension(p) for p in args.param], args.method, args.trials,
                             args.seed)
    console.print(f"sweep {sweep.folder}: {sweep.record['method']}, {sweep.record['trials']} trials")

    def train(config, run_dir, resume):
        return train_run(config, run_dir=run_dir, resume=run_dir if resume else None, quiet=args.quiet,
                         console=console).summary

    rows = sweep.run(train, log=lambda text: console.print(f"[bold]{text}[/]"))
    _print_sweep_table(sweep, rows, console)
    plot = sweep.plot(rows)
    if plot:
        console.print(f"plot: {plot}")
    return 0


def _print_sweep_table(sweep, rows: list, console) -> None:
    from rich.table import Table

    from ..train.progress import format_metric
    from ..train.report import format_seconds

    metric = rows[0].get("metric") if rows else "metric"
    table = Table(title=f"{sweep.folder.name}: best validation first", title_justify="left")
    for name in ("trial", *(d.key for d in sweep.dimensions), "status", f"val {metric}", f"test {metric}", "time"):
        table.add_column(name, justify="left" if name in ("trial", "status") else "right")
    for r in rows:
        table.add_row(f"{r['trial']:03d}", *(str(r["values"][d.key]) for d in sweep.dimensions), str(r["status"]),
                      format_metric(metric, r["val_metric"]), format_metric(metric, r["test_metric"]),
                      format_seconds(r["train_time_s"]))
    console.print(table)


def cmd_runs(args: argparse.Namespace) -> int:
    from ..train.report import print_run_table
    from ..train.run_records import epoch_rows, find_runs, markdown_table, print_epoch_table, read_history, read_summary

    console = _console()
    run_dirs = [run for path in (args.paths or ["runs"]) for run in find_runs(path)]
    if not run_dirs:
        console.print(f"no runs under {', '.join(args.paths or ['runs'])} (a run directory holds metrics.jsonl)")
        return 0
    summaries = [read_summary(run) for run in run_dirs]
    if not args.epochs:
        by_metric: dict[str, list] = {}
        for summary in summaries:
            by_metric.setdefault(summary.get("metric", "value"), []).append(summary)
        for group in by_metric.values():
            print_run_table(group, console)
        return 0
    for run, summary in zip(run_dirs, summaries, strict=True):
        metric = summary.get("metric", "value")
        title = f"{summary.get('name', run.name)} ({run}): {summary.get('status', '?')}"
        if args.markdown:
            print(f"\n{title}\n\n" + markdown_table(*epoch_rows(read_history(run), metric)))
        else:
            print_epoch_table(read_history(run), metric, console, title)
    return 0
