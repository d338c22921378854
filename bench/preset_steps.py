"""Training step time of the published run presets, old code against new, steps interleaved (issue #20).

    # the code as it was at a commit, beside the current tree:
    git worktree add /tmp/sparsegt-baseline <commit>
    .venv/bin/python bench/preset_steps.py --baseline /tmp/sparsegt-baseline
    .venv/bin/python bench/preset_steps.py --presets gt-pattern --variants current,compiled --steps 5

Each (preset, variant) lives in its own worker process: ``baseline`` imports sparsegt from ``--baseline``
(a checkout of an older commit), ``current`` from this tree, ``compiled`` from this tree with the model
under ``torch.compile`` (inductor, dynamic shapes: the warm-up includes the compilation), ``bf16`` from this
tree with the forward under bfloat16 autocast (``train.precision=bf16``: matrix products in bfloat16,
attention and the fused kernels in float32; a different precision, not the published one). The coordinator
asks the workers of one preset for one step each, round after round, so a change in the machine's load
hits every variant alike; the medians and the ratio to the first variant are printed and written to
``bench/results/preset_steps.json``.

A step is what `sparsegt train` does for one batch, in a process set up as the trainer sets up its own
(`keep_large_allocations`): forward, the preset's loss on the node labels,
backward, gradient clipping where the preset clips, the optimizer step. Data: regenerated PATTERN (or
CLUSTER) graphs with the encodings the preset needs, computed once before timing; the batches cycle
through ``--batches`` fixed batches of the preset's batch size (so shapes vary as in training).
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
RESULTS = ROOT / "bench" / "results" / "preset_steps.json"
PRESETS = ("gps-pattern", "gt-pattern", "exphormer-pattern", "gps-cluster")
VARIANTS = ("baseline", "current", "compiled", "bf16")


# ---------------------------------------------------------------- worker: one preset, one variant
def worker(preset_name: str, variant: str, batches: int, batch_size: int | None) -> None:
    """Build the preset's model and data, then answer "step" lines on stdin with the step's seconds."""
    import torch

    from sparsegt.train.allocator import keep_large_allocations

    keep_large_allocations()  # as `sparsegt train` does: large tensors from the heap, not fresh mmaps

    from sparsegt import Graph
    from sparsegt.data.sbm import ClusterConfig, PatternConfig, generate_cluster, generate_pattern
    from sparsegt.data.spec import FeatureSpec, TaskSpec
    from sparsegt.encodings import add_encodings
    from sparsegt.models import GraphTransformer, required_encodings
    from sparsegt.train.presets import get_preset

    config = get_preset(preset_name)
    size = batch_size or config.data.batch_size
    count = size * batches
    if "cluster" in preset_name:
        graphs = generate_cluster(ClusterConfig(num_train=count, num_val=0, num_test=0), seed=0)["train"]
        classes, node_spec = 6, FeatureSpec("categorical", (7,))
    else:
        per = 16
        graphs = generate_pattern(PatternConfig(num_patterns=-(-count // per), train_per_pattern=per,
                                                eval_per_pattern=0), seed=0)["train"][:count]
        classes, node_spec = 2, FeatureSpec("categorical", (3,))
    needed = required_encodings(config.model)
    if needed:
        graphs = add_encodings(graphs, **needed)
    batch_list = [Graph.batch(graphs[i * size:(i + 1) * size]) for i in range(batches)]
    torch.manual_seed(0)
    model = GraphTransformer(config.model, TaskSpec("node", "multiclass", classes, "weighted_accuracy"),
                             node_spec, FeatureSpec())
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.train.lr)
    run = torch.compile(model, dynamic=True) if variant == "compiled" else model
    # the trainer's `Trainer._autocast`: only the forward (and the loss) under autocast
    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16")
    clip = config.train.grad_clip
    print(json.dumps({"ready": True, "nodes": batch_list[0].num_nodes, "edges": batch_list[0].num_edges,
                      "batch_size": size}), flush=True)
    index = 0
    for line in sys.stdin:
        if line.strip() != "step":
            break
        batch = batch_list[index % batches]
        index += 1
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with precision:
            loss = torch.nn.functional.cross_entropy(run(batch), batch.y)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        print(json.dumps({"seconds": time.perf_counter() - start}), flush=True)


# ---------------------------------------------------------------- coordinator
def start_worker(preset: str, variant: str, args) -> subprocess.Popen:
    code = Path(args.baseline).resolve() if variant == "baseline" else ROOT
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONSAFEPATH": "1",
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
           "OMP_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": str(args.threads)}
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", preset, "--batches", str(args.batches)]
    if variant in ("compiled", "bf16"):
        command += ["--variant", variant]
    if args.batch_size:
        command += ["--batch-size", str(args.batch_size)]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def ask(proc: subprocess.Popen, preset: str, variant: str) -> dict:
    proc.stdin.write("step\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the {variant} worker of {preset} stopped (its error is above)")
    return json.loads(line)


def measure(preset: str, variants: list[str], args) -> dict[str, dict]:
    procs = {v: start_worker(preset, v, args) for v in variants}
    info = {}
    for variant, proc in procs.items():
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {variant} worker of {preset} did not start (its error is above)")
        info[variant] = json.loads(line)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for round_ in range(args.warmup + args.steps):
        for variant, proc in procs.items():
            seconds = ask(proc, preset, variant)["seconds"]
            if round_ >= args.warmup:
                times[variant].append(seconds)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    return {v: {**info[v], "step_ms_median": 1e3 * statistics.median(ts), "step_ms_all": [1e3 * t for t in ts]}
            for v, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--variants", default=None, help="default: baseline,current,compiled with --baseline, "
                        "else current,compiled")
    parser.add_argument("--baseline", metavar="DIR", help="a checkout of the older code (git worktree)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3, help="rounds before timing (the compiled variant "
                        "compiles in its first rounds)")
    parser.add_argument("--batches", type=int, default=4, help="fixed batches the steps cycle through")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. machine load)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--variant", default="current", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.variant, args.batches, args.batch_size)
        return
    variants = (args.variants or ("baseline,current,compiled" if args.baseline else "current,compiled")).split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        parser.error(f"--variants: unknown {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    if "baseline" in variants and not args.baseline:
        parser.error("the baseline variant needs --baseline DIR (a git worktree of the older commit)")
    load = os.getloadavg()[0]
    print(f"preset training steps, {args.threads} threads, load average {load:.2f} at start; medians of "
          f"{args.steps} interleaved steps after {args.warmup} warm-up rounds")
    results = {}
    header = ["preset", "nodes / edges per batch", *(f"{v} ms" for v in variants),
              *(f"{variants[0]} / {v}" for v in variants[1:])]
    print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for preset in args.presets.split(","):
        rows = measure(preset, variants, args)
        results[preset] = rows
        first = rows[variants[0]]["step_ms_median"]
        print(f"| {preset} | {rows[variants[0]]['nodes']:,} / {rows[variants[0]]['edges']:,} | "
              + " | ".join([*(f"{rows[v]['step_ms_median']:.0f}" for v in variants),
                            *(f"{first / rows[v]['step_ms_median']:.2f}x" for v in variants[1:])]) + " |", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                                   "load_at_start": load, "load_at_end": os.getloadavg()[0], "note": args.note,
                                   "baseline": args.baseline, "results": results}, indent=1))


if __name__ == "__main__":
    main()
