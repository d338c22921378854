"""`sparsegt sparsify`: a sparsification method on a trained run, measured on its validation split.

``--method zero-tprune --ratio R``: Zero-TPrune node pruning at inference
(`sparsegt.train.sparsify_run.zero_tprune_run`), a table of the metric before and after, the nodes that reach the
readout and the time per graph of both passes.
``--method activation-density``: the fraction of nonzero FFN activations per layer
(`sparsegt.train.sparsify_run.activation_density_run`).
"""

from __future__ import annotations

import argparse

from .common import _console


def cmd_sparsify(args: argparse.Namespace) -> int:
    if args.method == "zero-tprune":
        return _zero_tprune(args)
    return _activation_density(args)


def _zero_tprune(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..train.progress import format_metric
    from ..train.sparsify_run import zero_tprune_run

    if args.ratio is None:
        raise ValueError("--method zero-tprune needs --ratio R, the fraction of each graph's nodes pruned after "
                         "each chosen layer, in [0, 1) (e.g. --ratio 0.3)")
    report = zero_tprune_run(args.run_dir, args.ratio, layers=args.layers, split=args.split,
                             checkpoint=args.checkpoint, device=args.device, limit=args.limit,
                             batch_size=args.batch_size)
    layers = ", ".join(str(layer) for layer in report.prune_after)
    table = Table(title=f"{report.run}: Zero-TPrune, ratio {args.ratio} after layer(s) {layers}; "
                        f"{report.split} split, {report.graphs} graphs", title_justify="left")
    for column in ("", report.metric, "nodes at readout", "nodes kept", "ms per graph"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row("before", format_metric(report.metric, report.metric_before), str(report.nodes_before),
                  "100.0%", f"{report.ms_per_graph(report.seconds_before):.2f}")
    table.add_row("after", format_metric(report.metric, report.metric_after), str(report.nodes_after),
                  f"{100 * report.nodes_kept:.1f}%", f"{report.ms_per_graph(report.seconds_after):.2f}")
    _console().print(table)
    return 0


def _activation_density(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ..train.sparsify_run import activation_density_run

    if args.ratio is not None or args.layers is not None:
        raise ValueError("--ratio and --layers are options of --method zero-tprune; activation-density measures "
                         "the model as it is")
    density = activation_density_run(args.run_dir, split=args.split, checkpoint=args.checkpoint,
                                     device=args.device, limit=args.limit, batch_size=args.batch_size)
    table = Table(title=f"FFN activation density: {args.run_dir} ({args.split} split)", title_justify="left")
    for column in ("feed-forward block", "nonzero fraction", "sparsity"):
        table.add_column(column, justify="left" if column.startswith("feed") else "right")
    for name, fraction in density.items():
        table.add_row(name, f"{fraction:.4f}", f"{100 * (1 - fraction):.1f}%")
    _console().print(table)
    return 0
