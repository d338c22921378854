"""`sparsegt eval`, `predict` and `show-attention`: what a trained run (or a pretrained model) does."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import _console


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from ..train.progress import format_metric
    from ..train.run import evaluate_run

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

    from ..train.distributed import resolve_device
    from ..train.pretrained import evaluate_pretrained, list_pretrained
    from ..train.progress import format_metric

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
    from ..data import prediction_inputs

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

    from ..train.predict import predict, write_predictions
    from ..train.trained import load_trained

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
    from ..train.attention_maps import show_attention

    written = show_attention(args.run_dir, pretrained=args.pretrained, graph=args.graph, split=args.split,
                             checkpoint=args.checkpoint, output=args.output)
    _console().print(f"wrote {written}")
    return 0
