"""The `sparsegt` command's argument parser: every sub-command, its options and examples."""

from __future__ import annotations

import argparse
import os

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
  sparsegt sparsify runs/gps-pattern-20261130-031500 --method zero-tprune --ratio 0.3
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
  best_moving.pt (train.val_with_moving_stats=true: the epoch GraphGPS's evaluation, with moving-average
  BatchNorm statistics, would select)
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
    from ..train.presets import RUN_PRESETS

    return "presets:\n" + "\n".join(f"  {name:<22} {preset.description}" for name, preset in RUN_PRESETS.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sparsegt", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    from .. import __version__

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

    sp = sub.add_parser(
        "sparsify",
        help="apply a sparsification method to a trained run and measure it (Zero-TPrune, FFN activation density)",
        description="Run a sparsification method on a trained run's validation split (docs/sparsify.md). "
                    "zero-tprune: prune --ratio of each graph's nodes after each of --layers (default: every layer "
                    "but the last), zero-shot; prints the metric before/after, the nodes kept and the time per "
                    "graph. activation-density: the fraction of nonzero FFN activations of each layer.",
        formatter_class=_Formatter,
    )
    sp.add_argument("run_dir", metavar="RUN_DIR", help="a run directory")
    sp.add_argument("--method", required=True, choices=("zero-tprune", "activation-density"))
    sp.add_argument("--ratio", type=float, metavar="R", help="zero-tprune: fraction of nodes pruned per layer, [0, 1)")
    sp.add_argument("--layers", type=int, nargs="+", metavar="L",
                    help="zero-tprune: prune after these layers (0-based; default: all but the last)")
    sp.add_argument("--split", default="val", choices=("train", "val", "test"))
    sp.add_argument("--limit", type=int, metavar="N", help="only the first N graphs of the split")
    sp.add_argument("--batch-size", type=int, metavar="N", help="graphs per batch (default: the run's)")
    sp.add_argument("--checkpoint", default="best.pt", choices=("best.pt", "last.pt"))
    sp.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")

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
