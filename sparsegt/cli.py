"""The `sparsegt` command line: train, eval, predict, show-attention, datasets, bench, patterns.

Every sub-command is a thin layer over a library call (`sparsegt.train.run.train_run`,
`evaluate_run`, `sparsegt.data.print_dataset_table`, `sparsegt.patterns.show_pattern`), so what the CLI
does can always be done from Python too.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

DESCRIPTION = """\
sparsegt: sparse attention on graphs. Graph transformers (GT, GraphGPS, GRIT, Exphormer, ...) on one
fast CSR attention kernel, offline datasets, and a trainer.
"""

EPILOG = """\
examples:
  sparsegt train                                   the built-in demo: GPS with and without attention/PE, ~2-4 min
  sparsegt train --preset gps-pattern              GraphGPS on full PATTERN, published hyperparameters
  sparsegt train --preset gps-pattern train.epochs=10 data.batch_size=64
  sparsegt train --config my.yaml --seeds 0 1 2 3  four seeds, mean +- std
  sparsegt train --resume runs/gps-pattern-20261130-031500
  torchrun --nproc_per_node=2 -m sparsegt train --preset gps-cluster
  sparsegt eval runs/gps-pattern-20261130-031500
  sparsegt predict runs/gps-pattern-20261130-031500 --folder my_graphs/ -o predictions.csv
  sparsegt show-attention runs/gps-pattern-20261130-031500 --graph 3
  sparsegt datasets                                what can be trained on, offline
  sparsegt patterns show expander degree=4 -o expander.png

run `sparsegt COMMAND --help` for a command's options.
"""

TRAIN_EPILOG = """\
overrides:
  Any config field can be set as section.field=value, values parsed as YAML:
    model.hidden=64  train.epochs=3  train.lr=1e-3  data.name=cluster-small  data.options.target=gap
  An unknown key is an error that lists the closest keys. `sparsegt train --show-config` prints the
  resolved config (all keys) without training.

run directory (runs/NAME-TIMESTAMP/):
  config.yaml  model_inputs.json  metrics.jsonl  last.pt  best.pt  summary.json  curves.png
  confusion.png/.json/.csv (classification)  events.out.tfevents.* (TensorBoard: tensorboard --logdir runs)
  last.pt is written every epoch and every train.checkpoint_every_s seconds mid-epoch: a run killed at
  any moment continues with --resume, with the same data order and random state.

with no arguments at all, `sparsegt train` runs the built-in demo (what `make demo` runs).

memory: on Linux, training keeps large freed blocks in the heap for reuse instead of returning them
  to the kernel (per-edge tensors of 32+ MiB are otherwise page-faulted in again every layer; GatedGCN
  models train up to 1.7x faster). SPARSEGT_DEFAULT_MALLOC=1 keeps glibc's defaults.
"""


PREDICT_EPILOG = """\
examples:
  sparsegt predict runs/demo-gps-20261203-101500 --folder my_graphs/ -o predictions.csv
  sparsegt predict --pretrained gps-pattern --folder my_graphs/
  sparsegt predict runs/gps-qm9-20261203-101500 --smiles CCO c1ccccc1 -o gap.parquet
  sparsegt predict runs/gps-qm9-20261203-101500 --smiles-file molecules.csv
  sparsegt predict runs/my-run --pyg graphs.pt

columns: id (graph id: its number in the folder or file, or the SMILES' name), node (node-level tasks), then
  prob_0..prob_C-1 and predicted (classes), prob_NAME (binary), or one column per regression target.
SMILES are featurised as the model's molecules were (the featuriser recorded in the run); a model not trained
on molecules refuses them, and graphs whose features differ in kind, width or category range are refused.
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=min(110, max(80, _terminal_width())))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


def _preset_help() -> str:
    from .train.presets import RUN_PRESETS

    return "presets:\n" + "\n".join(f"  {name:<22} {preset.description}" for name, preset in RUN_PRESETS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsegt", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"sparsegt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train a model (no arguments: the built-in demo)",
        description="Train a graph model and write a run directory.",
        epilog=_preset_help() + "\n\n" + TRAIN_EPILOG,
        formatter_class=_Formatter,
    )
    source = train.add_mutually_exclusive_group()
    source.add_argument("--preset", metavar="NAME", help="start from a named run preset (listed below)")
    source.add_argument("--config", metavar="FILE", help="start from a YAML run config (e.g. a run's config.yaml)")
    source.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="override config fields (see below)")
    train.add_argument("--seeds", nargs="+", type=int, metavar="S", help="train once per seed, report mean +- std")
    train.add_argument("--quiet", "-q", action="store_true", help="plain log lines instead of progress bars")
    train.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    train.add_argument("--out-dir", metavar="DIR", help="parent folder of run directories (default: runs)")

    ev = sub.add_parser(
        "eval",
        help="score a run's best (or last) checkpoint on val and test",
        description="Rebuild a run's data and model from its config.yaml and score a checkpoint.",
        formatter_class=_Formatter,
    )
    ev.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory (or use --pretrained)")
    ev.add_argument("--checkpoint", default="best.pt", choices=("best.pt", "last.pt"))
    ev.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    ev.add_argument("--pretrained", metavar="NAME",
                    help="score a pretrained model (pretrained/NAME) on its regenerated test split; 'list' lists them")
    ev.add_argument("--limit", type=int, metavar="N", help="with --pretrained: only the first N test graphs")

    pr = sub.add_parser(
        "predict",
        help="predict with a trained model on new graphs (a folder, a PyG file, SMILES) -> CSV/Parquet",
        description="Predict with a trained run (or a pretrained model) on new graphs. The graphs are checked "
                    "against what the model was trained on (model_inputs.json in the run) and get the same "
                    "encodings; the model runs in eval mode. One row per graph (graph-level tasks) or per node.",
        epilog=PREDICT_EPILOG,
        formatter_class=_Formatter,
    )
    pr.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory (or use --pretrained)")
    pr.add_argument("--pretrained", metavar="NAME", help="a pretrained model (sparsegt eval --pretrained list)")
    graphs = pr.add_mutually_exclusive_group(required=True)
    graphs.add_argument("--folder", metavar="DIR", help="a user-data folder (graphs.npz, or graphs.csv + edges.csv)")
    graphs.add_argument("--pyg", metavar="FILE.pt", help="a saved list of PyG Data, or an InMemoryDataset file")
    graphs.add_argument("--smiles", nargs="+", metavar="SMILES", help="molecules, for models trained on molecules")
    graphs.add_argument("--smiles-file", metavar="FILE",
                        help="one 'SMILES [name]' a line, or a CSV file with a smiles (and id/name) column")
    pr.add_argument("-o", "--output", default="predictions.csv", metavar="FILE",
                    help="FILE.csv (default predictions.csv) or FILE.parquet (needs pyarrow)")
    pr.add_argument("--checkpoint", default="best.pt", choices=("best.pt", "last.pt"))
    pr.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")
    pr.add_argument("--batch-size", type=int, metavar="N", help="graphs per batch (default: the run's)")

    att = sub.add_parser(
        "show-attention",
        help="draw a trained model's attention weights on one validation graph (PNG per layer and head)",
        description="Run a trained model on graph I of its validation split and draw the attention weights of "
                    "every layer and head (rows: queries, columns: keys), with the pattern outlined.",
        formatter_class=_Formatter,
    )
    att.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run directory (or use --pretrained)")
    att.add_argument("--pretrained", metavar="NAME", help="a pretrained model instead of a run")
    att.add_argument("--graph", type=int, default=0, metavar="I", help="index in the split (default 0)")
    att.add_argument("--split", default="val", choices=("train", "val", "test"))
    att.add_argument("--checkpoint", default="best.pt", choices=("best.pt", "last.pt"))
    att.add_argument("-o", "--output", metavar="FILE.png",
                     help="default: RUN_DIR/attention-SPLIT-I.png (pretrained: ./NAME-attention-SPLIT-I.png)")

    ds = sub.add_parser(
        "datasets",
        help="list the datasets, or show one's statistics",
        description="Datasets that work offline: task, size, metric, source, licence.",
        formatter_class=_Formatter,
    )
    ds.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    ds.add_argument("name", nargs="?", help="dataset name (for show)")

    bench = sub.add_parser(
        "bench",
        help="run the benchmarks in bench/ (all, or one by name)",
        description="Run bench/NAME.py scripts; each prints a table and writes bench/results/NAME.json.",
        formatter_class=_Formatter,
    )
    bench.add_argument("names", nargs="*", metavar="NAME", help="e.g. attention encodings training")

    sweep = sub.add_parser(
        "sweep",
        help="train many runs over a space of config values; table and plot at the end",
        description="A sweep: one normal run directory per trial under OUT_DIR/sweeps/NAME, resumable (run the "
                    "same command, or --resume the folder). Trials run one after the other.",
        epilog="examples:\n"
               "  sparsegt sweep --preset gps-pattern --param train.lr=1e-3,5e-4 --param model.dropout=0,0.1\n"
               "  sparsegt sweep --preset gps-pattern --method random --trials 8 \\\n"
               "      --param train.lr=loguniform:1e-4:3e-3 --param model.hidden=int:32:96 train.epochs=20\n"
               "  sparsegt sweep --resume runs/sweeps/gps-pattern-lr",
        formatter_class=_Formatter,
    )
    sweep.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="fixed config overrides for every trial")
    sweep.add_argument("--preset", help="the base configuration (as in train)")
    sweep.add_argument("--config", metavar="FILE.yaml", help="the base configuration from a YAML file")
    sweep.add_argument("--param", action="append", default=[], metavar="KEY=SPEC",
                       help="a swept key: a,b,c (choices) or uniform|loguniform|int:LOW:HIGH")
    sweep.add_argument("--method", choices=("grid", "random", "optuna"), default="grid")
    sweep.add_argument("--trials", type=int, help="number of trials (random, optuna)")
    sweep.add_argument("--seed", type=int, default=0, help="seed of the random or optuna search")
    sweep.add_argument("--name", help="the sweep's folder name (default: the preset's name)")
    sweep.add_argument("--resume", metavar="SWEEP_DIR", help="continue a sweep folder")
    sweep.add_argument("--out-dir", metavar="DIR", help="parent of sweeps/ (default: the config's out_dir, runs)")
    sweep.add_argument("--quiet", "-q", action="store_true", help="plain log lines instead of progress bars")

    runs = sub.add_parser(
        "runs",
        help="list runs and their results, or one run's epochs",
        description="Read run directories back: one row per run (status, epochs, best validation, test), "
                    "or with --epochs each epoch of a run (also as Markdown, for a results page).",
        formatter_class=_Formatter,
    )
    runs.add_argument("paths", nargs="*", metavar="PATH", help="run directories or folders of runs (default: runs)")
    runs.add_argument("--epochs", action="store_true", help="each epoch of the run(s): lr, losses, val, test")
    runs.add_argument("--markdown", action="store_true", help="print Markdown tables instead of terminal tables")

    patterns = sub.add_parser(
        "patterns",
        help="draw an attention pattern to a PNG",
        description="Build a named attention pattern and draw it.",
        formatter_class=_Formatter,
    )
    psub = patterns.add_subparsers(dest="action", metavar="ACTION")
    show = psub.add_parser("show", help="draw pattern NAME with parameters k=v to a PNG", formatter_class=_Formatter)
    show.add_argument("name", metavar="NAME")
    show.add_argument("params", nargs="*", metavar="KEY=VALUE")
    show.add_argument("-o", "--output", default=None, metavar="FILE.png", help="default: NAME.png")
    return parser


# ---------------------------------------------------------------------------------------------- commands
def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # logs and pipes: wide tables rather than rich's 80-column default
        console = Console(stderr=stderr, highlight=False, width=140)
    return console


def _resolve_train_config(args: argparse.Namespace):
    from .train.config import apply_overrides, load_config
    from .train.presets import DEFAULT_PRESET, get_preset

    if args.config:
        config = load_config(args.config)
    else:
        config = get_preset(args.preset or DEFAULT_PRESET)
    apply_overrides(config, args.overrides)
    if args.out_dir:
        config.out_dir = args.out_dir
    return config


def cmd_train(args: argparse.Namespace) -> int:
    from .train.allocator import keep_large_allocations
    from .train.config import dump_config
    from .train.report import print_run_table, print_seeds_table
    from .train.resume import open_run
    from .train.run import train_run, train_seeds

    keep_large_allocations()  # per-edge tensors of 32+ MiB: reuse them instead of page-faulting them in
    console = _console()
    no_arguments = not (args.preset or args.config or args.resume or args.overrides or args.seeds or args.show_config)
    if no_arguments:
        from .train.demo import run_demo

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


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from .train.progress import format_metric
    from .train.run import evaluate_run

    if args.pretrained:
        return _eval_pretrained(args)
    if not args.run_dir:
        raise ValueError("sparsegt eval needs a RUN_DIR or --pretrained NAME (sparsegt eval --pretrained list)")
    scores = evaluate_run(args.run_dir, checkpoint=args.checkpoint, device=args.device)
    summary_path = Path(args.run_dir) / "summary.json"
    metric = json.loads(summary_path.read_text())["metric"] if summary_path.exists() else "metric"
    table = Table(title=f"{Path(args.run_dir).name}: {args.checkpoint}", title_justify="left")
    table.add_column("split")
    table.add_column("loss", justify="right")
    table.add_column(metric, justify="right")
    for split, values in scores.items():
        table.add_row(split, f"{values['loss']:.4f}", format_metric(metric, values["metric"]))
    _console().print(table)
    return 0


def _eval_pretrained(args: argparse.Namespace) -> int:
    import time

    from rich.table import Table

    from .train.distributed import resolve_device
    from .train.pretrained import evaluate_pretrained, list_pretrained
    from .train.progress import format_metric

    console = _console()
    if args.pretrained == "list":
        table = Table(title="pretrained models", title_justify="left")
        for column in ("name", "status", "metric", "test (recorded)", "published", "source"):
            table.add_column(column)
        for name, card in list_pretrained().items():
            table.add_row(name, card["status"], str(card["metric"]), format_metric(card["metric"], card["test_metric"]),
                          format_metric(card["metric"], card["published"]), card["published_source"])
        console.print(table)
        return 0
    start = time.monotonic()
    result = evaluate_pretrained(args.pretrained, limit=args.limit, device=str(resolve_device(args.device)))
    metric, measured = result["metric"], result["measured"]
    table = Table(title=f"{args.pretrained} ({result['status']}): test split, {measured['graphs']} graphs, "
                        f"{time.monotonic() - start:.0f} s", title_justify="left")
    for column in ("", metric, "per batch (Benchmarking-GNNs)"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row("measured now", format_metric(metric, measured["metric"]),
                  format_metric(metric, measured["metric_per_batch"]))
    table.add_row(f"recorded (epoch {result['epoch']})", format_metric(metric, result["test_metric"]),
                  format_metric(metric, result.get("test_metric_per_batch")))
    table.add_row("published", format_metric(metric, result["published"]), "")
    console.print(table)
    if result["published_source"]:
        console.print(f"published: {result['published_source']}")
    return 0


def _read_prediction_graphs(args: argparse.Namespace, trained) -> tuple[list[str], list, str]:
    """(ids, graphs, source) of the graphs ``sparsegt predict`` was given."""
    from .data import prediction_inputs

    if args.folder:
        return (*prediction_inputs.folder_graphs(args.folder), args.folder)
    if args.pyg:
        return (*prediction_inputs.pyg_file_graphs(args.pyg), args.pyg)
    featurizer = trained.inputs.featurizer
    if featurizer is None:
        raise ValueError(f"{trained.name} was not trained on molecules ({trained.inputs.dataset}: "
                         f"{trained.inputs.describe_features()}), so it cannot read SMILES; give its kind of graphs "
                         "with --folder or --pyg, or use a model trained on a molecular dataset (e.g. --preset "
                         "gps-qm9)")
    if args.smiles_file:
        ids, smiles = prediction_inputs.read_smiles_file(args.smiles_file)
        source = args.smiles_file
    else:
        ids, smiles, source = list(args.smiles), list(args.smiles), "--smiles"
    return ids, prediction_inputs.smiles_graphs(smiles, featurizer), source


def cmd_predict(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .train.predict import predict, write_predictions
    from .train.trained import load_trained

    trained = load_trained(args.run_dir, pretrained=args.pretrained, checkpoint=args.checkpoint,
                           device=args.device)
    ids, graphs, source = _read_prediction_graphs(args, trained)
    table = predict(trained, ids, graphs, source=source, batch_size=args.batch_size)
    path = write_predictions(table, args.output)
    console = _console()
    task = trained.inputs.task
    console.print(f"{trained.name} ({trained.inputs.dataset}, {task.level} {task.kind}): {len(graphs)} graphs "
                  f"-> {len(table.rows)} rows in {path}", soft_wrap=True)
    preview = Table()
    for column in table.columns:
        preview.add_column(column, justify="left" if column == "id" else "right")
    for row in table.rows[:8]:
        preview.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row))
    console.print(preview)
    if len(table.rows) > 8:
        console.print(f"... {len(table.rows) - 8} more rows in {path}")
    return 0


def cmd_show_attention(args: argparse.Namespace) -> int:
    from .train.attention_maps import show_attention

    written = show_attention(args.run_dir, pretrained=args.pretrained, graph=args.graph, split=args.split,
                             checkpoint=args.checkpoint, output=args.output)
    _console().print(f"wrote {written}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from . import data

    console = _console()
    if args.action == "show" or args.name:
        if not args.name:
            raise ValueError("sparsegt datasets show NAME: which dataset? (sparsegt datasets lists them)")
        data.print_dataset_stats(args.name, console)
    else:
        data.print_dataset_table(console)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    folder = Path.cwd() / "bench"
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[1] / "bench"
    if not folder.is_dir():
        raise ValueError("no bench/ folder here: run sparsegt bench from the repository root")
    available = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    names = args.names or available
    for name in names:
        if name not in available:
            import difflib

            close = difflib.get_close_matches(name, available, n=3)
            raise ValueError(
                f"no benchmark {name!r} in {folder}"
                + (f"; did you mean {', '.join(close)}?" if close else f"; have {', '.join(available)}")
            )
    failed = []
    for name in names:
        _console().rule(f"bench/{name}.py")
        rc = subprocess.call([sys.executable, str(folder / f"{name}.py")])
        if rc:
            failed.append(name)
    if failed:
        _console(stderr=True).print(f"[red]failed: {', '.join(failed)}[/]")
        return 1
    return 0


def _parse_params(items: list[str]) -> dict:
    import yaml

    params = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"pattern parameter {item!r} must look like key=value (e.g. degree=4)")
        key, value = item.split("=", 1)
        params[key] = yaml.safe_load(value) if value.strip() else ""
    return params


def cmd_sweep(args: argparse.Namespace) -> int:
    from .train.run import train_run
    from .train.sweep import Sweep, parse_dimension

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

    from .train.progress import format_metric
    from .train.report import format_seconds

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
    from .train.report import print_run_table
    from .train.run_records import epoch_rows, find_runs, markdown_table, print_epoch_table, read_history, read_summary

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


def cmd_patterns(args: argparse.Namespace) -> int:
    if args.action != "show":
        raise ValueError("usage: sparsegt patterns show NAME [key=value ...] -o FILE.png")
    from .patterns import show_pattern

    out = args.output or f"{args.name}.png"
    show_pattern(args.name, _parse_params(args.params), out)
    _console().print(f"wrote {out}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "show-attention": cmd_show_attention,
    "datasets": cmd_datasets,
    "bench": cmd_bench,
    "sweep": cmd_sweep,
    "runs": cmd_runs,
    "patterns": cmd_patterns,
}
COMPUTING_COMMANDS = ("train", "eval")  # the ones whose speed depends on how idle OpenMP threads wait


def restart_with_sleeping_openmp_threads() -> None:
    """Start this command again with ``OMP_WAIT_POLICY=PASSIVE``, unless the variable is set already.

    Idle OpenMP threads (torch's and numba's) that spin while waiting starve the main thread whenever the
    cores are shared: 2.9 s -> 0.05 s per training step, measured on a busy 2-core machine. OpenMP reads
    the variable once, when torch loads it, which is before any of sparsegt runs; so the command that owns
    the process sets it and replaces itself with a fresh interpreter running the same command line (same
    process id, so torchrun and shells see no difference). A library import sets nothing: a program that
    imports sparsegt sets the variable itself (README, "Threads and OpenMP"). POSIX only.
    """
    if "OMP_WAIT_POLICY" in os.environ or os.name != "posix":
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main(argv: list[str] | None = None) -> int:
    """The `sparsegt` command. ``argv`` None: the process's own command line (the process is ours: see
    `restart_with_sleeping_openmp_threads`); a list: called from Python, the process is left as it is."""
    from rich.markup import escape

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come after an option (`train --preset demo train.epochs=3 -q train.lr=1e-3`):
    # argparse stops collecting the positional list at the first option, so gather the rest here
    overrides_only = all("=" in a and not a.startswith("-") for a in extra)
    if extra and getattr(args, "overrides", None) is not None and overrides_only:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    if argv is None and args.command in COMPUTING_COMMANDS:
        restart_with_sleeping_openmp_threads()
    err_console = _console(stderr=True)
    try:
        return COMMANDS[args.command](args)
    except ValueError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except ImportError as err:
        err_console.print(f"[bold red]missing package:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 3
    except OSError as err:  # a file that cannot be read or written (the error names it): a message, not a traceback
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: continue a run with sparsegt train --resume RUN_DIR")
        return 130
    except RuntimeError as err:
        from .train.trainer import TrainingDiverged

        if isinstance(err, TrainingDiverged):
            err_console.print(f"[bold red]training stopped:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
