"""Issue #18's measurements on one large graph: LargeGT against the same model without its global module and a
sampled GNN, each for the same wall-clock budget; then two processes (torchrun, METIS partitions) against one.

    .venv/bin/python bench/large_graph_runs.py [--nodes 2000000] [--minutes 30] [--ddp-minutes 10]
                                               [--batches-per-epoch 200] [--only NAME ...] [--smoke]

Every run is a plain ``sparsegt train`` in its own process (so each one's peak resident memory is its own:
``os.wait4``'s ``ru_maxrss``), on the DCSBM graph of ``--nodes`` nodes (`sparsegt.data.large_sbm`, ~12 directed
edges a node: 2.4·10^7 edges at 2·10^6 nodes), generated once into ``--root`` by the first run and read from
there by the others. The runs:

- ``largegt``: the ``largegt-dcsbm`` preset (local module over 2 sampled hops + global codebook of 4,096
  centroids), ``--minutes`` of training and evaluation;
- ``largegt-local``: the same with ``model.num_centroids=0`` (LargeGT's local module only: the paper's claim is
  that local + global beats it);
- ``gnn``: a 2-layer GINE of the same width over the same sampler and fan-outs, no attention;
- ``ddp-1`` / ``ddp-2``: ``largegt`` for ``--ddp-minutes`` in one process with batches of 1024 seeds, and in two
  (``torchrun --nproc_per_node=2``, one thread each, ``data.partition=metis``, 512 seeds a rank: the same 1024 a
  step), to compare their loss curves step for step.

Then the sampler's throughput on a graph of the same size and fan-outs (`bench/sampler.py`, its own process;
PyG's ``NeighborLoader`` beside it when pyg-lib or torch-sparse is installed, which it says when not).

An "epoch" is ``--batches-per-epoch`` batches (``train.batches_per_epoch``), so that each budget holds several
evaluations; validation and test are 1% and 2% of the nodes (``data.options``), so that an evaluation is a
small part of the budget. Both are stated in the output. Writes ``bench/results/large_graph_runs.json``
(``--out``) and prints a Markdown table. A measurement: run it alone on the idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_specs(args: argparse.Namespace) -> dict[str, dict]:
    """{name: {"overrides": [...], "processes": 1 or 2}} of every run (module docstring)."""
    data = [f"data.options.num_nodes={args.nodes}", "data.options.val_fraction=0.01",
            "data.options.test_fraction=0.02", f"data.root={args.root}", "train.chance_check_epochs=0"]
    if args.smoke:
        data.append("data.options.num_communities=16")
    budget = [f"train.batches_per_epoch={args.batches_per_epoch}", f"train.time_limit_min={args.minutes}"]
    ddp = [f"train.batches_per_epoch={args.batches_per_epoch}", f"train.time_limit_min={args.ddp_minutes}"]
    largegt = ["--preset", "largegt-dcsbm", *data]
    gnn = ["--preset", "largegt-dcsbm", *data, "model.layer=gine", "model.num_layers=2"]
    return {
        "largegt": {"overrides": [*largegt, *budget, "train.threads=2"], "processes": 1},
        "largegt-local": {"overrides": [*largegt, *budget, "train.threads=2", "model.num_centroids=0"],
                          "processes": 1},
        "gnn": {"overrides": [*gnn, *budget, "train.threads=2"], "processes": 1},
        "ddp-1": {"overrides": [*largegt, *ddp, "train.threads=2"], "processes": 1},
        "ddp-2": {"overrides": [*largegt, *ddp, "train.threads=1", "data.batch_size=512",
                                "data.partition=metis"], "processes": 2},
    }


def launch(name: str, spec: dict, runs_dir: Path) -> dict:
    """Run one ``sparsegt train`` to its end; its summary, per-epoch records, wall time and peak memory."""
    out_dir = runs_dir / name  # the run folder is the one `sparsegt train` creates in it
    train = ["-m", "sparsegt", "train", "-q", "--out-dir", str(out_dir), *spec["overrides"]]
    if spec["processes"] == 1:
        command = [sys.executable, *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={spec['processes']}", *train]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    print(f"[{time.strftime('%H:%M:%S')}] {name}: {' '.join(command[1:])}", flush=True)
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    # ru_maxrss of a waited child: KiB on Linux; under torchrun the largest of the rank processes it waited for
    result = {"command": command, "wall_s": wall, "exit_status": os.waitstatus_to_exitcode(status),
              "peak_rss_gib": usage.ru_maxrss / 2**20}
    if result["exit_status"] != 0:
        print(f"{name}: exit status {result['exit_status']}", flush=True)
        return result
    run_dir = next(path for path in out_dir.iterdir() if (path / "summary.json").exists())
    result["run_dir"] = str(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epoch_times = [r["epoch_time_s"] for r in history if r.get("epoch_time_s") and not r.get("partial_batches")]
    result.update(summary=summary, train_loss=[r["train_loss"] for r in history],
                  val_metric=[r.get("val_metric") for r in history],
                  median_epoch_s=statistics.median(epoch_times) if epoch_times else None)
    return result


def sampler_throughput(args: argparse.Namespace) -> dict:
    """`bench/sampler.py` on a graph of ``--nodes`` nodes with the runs' fan-outs and batch: its printed table
    and its JSON (seed nodes/s, sampled edges/s; PyG's beside them when it can sample)."""
    out = ROOT / "bench" / "results" / "sampler.json"  # where bench/sampler.py writes (not with --quick)
    command = [sys.executable, str(ROOT / "bench" / "sampler.py"), "--nodes", str(args.nodes), "--fanouts", "10",
               "9", "--batch-size", "1024"]
    if args.smoke:
        command.append("--quick")
    print(f"[{time.strftime('%H:%M:%S')}] sampler: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout, end="", flush=True)
    result = {"command": command, "exit_status": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-2000:]}
    if done.returncode == 0 and not args.smoke and out.exists():
        result["measured"] = json.loads(out.read_text())
    return result


def compare_curves(one: list[float], two: list[float]) -> dict:
    """The two training-loss curves over their common epochs: largest and mean absolute difference."""
    common = min(len(one), len(two))
    gaps = [abs(a - b) for a, b in zip(one[:common], two[:common], strict=True)]
    return {"epochs_compared": common, "max_abs_gap": max(gaps, default=None),
            "mean_abs_gap": statistics.fmean(gaps) if gaps else None}


def table(results: dict, batches_per_epoch: int) -> str:
    lines = [f"| run | test accuracy | best val (epoch) | epochs of {batches_per_epoch} batches | "
             "median epoch min | peak RSS GiB | wall min |", "|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = r.get("summary")
        if s is None:
            lines.append(f"| {name} | failed (exit {r['exit_status']}) | - | - | - | {r['peak_rss_gib']:.1f} | "
                         f"{r['wall_s'] / 60:.1f} |")
            continue
        epoch_min = "-" if r["median_epoch_s"] is None else f"{r['median_epoch_s'] / 60:.1f}"
        lines.append(f"| {name} | {100 * s['test_metric']:.2f} | {100 * s['val_metric']:.2f} ({s['best_epoch']}) | "
                     f"{s['epochs_run']} | {epoch_min} | {r['peak_rss_gib']:.1f} | {r['wall_s'] / 60:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2_000_000)
    parser.add_argument("--minutes", type=float, default=30.0, help="budget of each of the three compared runs")
    parser.add_argument("--ddp-minutes", type=float, default=10.0, help="budget of each of the two DDP runs")
    parser.add_argument("--batches-per-epoch", type=int, default=200)
    parser.add_argument("--root", default=".cache/data", help="the data cache (the graph is generated once)")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: runs/large-graph-<time>")
    parser.add_argument("--only", nargs="+", default=None,
                        help="run these of: largegt largegt-local gnn ddp-1 ddp-2 sampler")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "large_graph_runs.json")
    parser.add_argument("--smoke", action="store_true", help="10^4 nodes, 0.2-minute budgets, 5 batches an epoch")
    args = parser.parse_args(argv)
    if args.smoke:
        args.nodes, args.minutes, args.ddp_minutes, args.batches_per_epoch = 10_000, 0.2, 0.2, 5
    runs_dir = args.runs_dir or ROOT / "runs" / f"large-graph-{time.strftime('%Y%m%d-%H%M%S')}"
    specs = run_specs(args)
    unknown = set(args.only or []) - set(specs) - {"sampler"}
    if unknown:
        parser.error(f"--only: unknown run(s) {sorted(unknown)}; choose from {', '.join(specs)}")
    load_before = os.getloadavg()
    results = {name: launch(name, spec, runs_dir) for name, spec in specs.items()
               if args.only is None or name in args.only}
    report = {"machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
              "load_average_start": load_before, "load_average_end": os.getloadavg(), "args": {
                  k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True).stdout.strip(), "runs": results}
    if args.only is None or "sampler" in args.only:
        report["sampler"] = sampler_throughput(args)
    if "ddp-1" in results and "ddp-2" in results and "train_loss" in results["ddp-1"] and \
            "train_loss" in results["ddp-2"]:
        report["ddp_loss_curves"] = compare_curves(results["ddp-1"]["train_loss"], results["ddp-2"]["train_loss"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results, args.batches_per_epoch))
    if "ddp_loss_curves" in report:
        print(f"DDP (2 processes) vs 1 process, training loss per epoch: {report['ddp_loss_curves']}")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
