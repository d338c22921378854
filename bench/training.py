"""Training throughput (graphs/s) and memory of sparsegt's graph transformers on PATTERN-sized graphs,
side by side with PyG's ``GPSConv`` model of the same shape, measured in the same run.

    .venv/bin/python bench/training.py [--steps 5] [--batch-size 32] [--models gps,pyg-gps,gt,grit,exphormer]

Graphs: regenerated PATTERN (`sparsegt.data.sbm.generate_pattern`, SBM, ~117 nodes, ~5,800 directed
edges each). One training step = forward, cross-entropy on the node labels, backward, AdamW step.
Memory is measured with each model in its own subprocess, so that its peak is its own. Every run sets
``OMP_WAIT_POLICY=PASSIVE`` unless the caller set it (spinning OpenMP threads on a shared machine make
steps 5-10x slower at random, for every model):

- ``graphs/s``: batch size / median step time (after warm-up steps); ``gps`` and ``pyg-gps`` run with
  their steps interleaved round by round in one process, so that a shared machine's changing load hits
  both alike (the other models run alone); ``cpu ms``: the process CPU time of a step (median);
- ``peak MiB``: growth of the process's peak resident memory over the training steps (allocator and
  all), measured after the data and the model exist;
- ``saved MiB``: bytes of the tensors autograd saves for backward in one forward (activation memory).

Models: ``gps`` (GINE local + full attention, 4 layers, hidden 64, 4 heads, attention dropout 0.5)
and ``pyg-gps`` (PyG ``GPSConv`` with ``GINEConv`` and dense multi-head attention, same shape); ``gt``,
``grit``, ``exphormer``: the PATTERN presets of `sparsegt.models.presets` without LapPE (the PE is
precomputed, not part of a step). GRIT keeps a pair state per (i, j) of each graph, so it runs with a
smaller batch by default (``--grit-batch-size``). Results: bench/results/training.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "training.json"
HIDDEN, HEADS, LAYERS = 64, 4, 4


def pattern_graphs(count: int, seed: int = 0):
    from sparsegt.data.sbm import PatternConfig, generate_pattern

    per_pattern = 16
    cfg = PatternConfig(num_patterns=max(1, -(-count // per_pattern)), train_per_pattern=per_pattern,
                        eval_per_pattern=0)
    return generate_pattern(cfg, seed=seed)["train"][:count]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def saved_tensor_mib(run_forward) -> float:
    total = 0
    seen = set()

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype, tuple(t.shape))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = run_forward()
    del out
    return total / 2**20


# ---------------------------------------------------------------- models
def sparsegt_model(name: str):
    from sparsegt.data.spec import FeatureSpec, TaskSpec
    from sparsegt.models import GraphTransformer, ModelConfig, preset

    if name == "gps":
        config = ModelConfig(layer="gps", local="gine", attention="full", num_layers=LAYERS, hidden=HIDDEN,
                             num_heads=HEADS, attn_dropout=0.5)
    else:
        config = preset(f"{name}-pattern")
        config.lap_pe = None
    task = TaskSpec("node", "multiclass", 2, "weighted_accuracy")
    return GraphTransformer(config, task, FeatureSpec("categorical", (3,)), FeatureSpec())


def pyg_gps_model():
    from torch import nn
    from torch_geometric.nn import GINEConv, GPSConv

    class PyGGPS(nn.Module):
        """Embedding -> 4 x GPSConv(GINE + multi-head attention) -> 3-layer MLP, as our ``gps``."""

        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(3, HIDDEN)
            self.edge_constant = nn.Parameter(torch.zeros(1, HIDDEN))  # GraphGPS's "DummyEdge"
            self.convs = nn.ModuleList(
                GPSConv(HIDDEN, GINEConv(nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                                                       nn.Linear(HIDDEN, HIDDEN))),
                        heads=HEADS, attn_type="multihead", attn_kwargs={"dropout": 0.5})
                for _ in range(LAYERS))
            self.head = nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN),
                                      nn.ReLU(), nn.Linear(HIDDEN, 2))

        def forward(self, data):
            x = self.embed(data.x[:, 0])
            edge_attr = self.edge_constant.expand(data.edge_index.shape[1], HIDDEN)
            for conv in self.convs:
                x = conv(x, data.edge_index, data.batch, edge_attr=edge_attr)
            return self.head(x)

    return PyGGPS()


def to_pyg(batch):
    from torch_geometric.data import Batch, Data

    return Batch.from_data_list([Data(x=g.x, edge_index=g.to_edge_index(), y=g.y, num_nodes=g.num_nodes)
                                 for g in batch.unbatch()])


# ---------------------------------------------------------------- one model, in its own process
def build(name: str, batch_size: int):
    """(model, inputs, labels, optimizer, step function) for one model on ``batch_size`` PATTERN graphs."""
    from sparsegt import Graph

    torch.manual_seed(0)
    batch = Graph.batch(pattern_graphs(batch_size))
    if name == "pyg-gps":
        model, inputs = pyg_gps_model(), to_pyg(batch)
    else:
        model, inputs = sparsegt_model(name), batch
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(inputs), batch.y)
        loss.backward()
        optimizer.step()

    info = {"model": name, "batch_size": batch_size, "nodes": batch.num_nodes, "edges": batch.num_edges,
            "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    return model, inputs, step, info


def memory_worker(name: str, batch_size: int, steps: int) -> dict:
    """Peak-RSS growth over ``steps`` training steps and autograd's saved bytes, in a fresh process."""
    model, inputs, step, info = build(name, batch_size)
    saved = saved_tensor_mib(lambda: model(inputs))
    base_rss = peak_rss_mib()
    for _ in range(steps):
        step()
    return {**info, "peak_rss_growth_mib": peak_rss_mib() - base_rss, "saved_for_backward_mib": saved}


def _environment() -> dict[str, str]:
    # OpenMP threads that spin while waiting (libgomp's default) turn a shared, oversubscribed machine into
    # a lottery: every process burns the cores the others need, and steps get 5-10x slower at random.
    # Passive waiting is the same setting for every model and makes runs repeatable; set
    # OMP_WAIT_POLICY yourself to measure another setting.
    return {**os.environ, "PYTHONPATH": str(ROOT.parent),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def run_in_subprocess(args: list[str]) -> dict:
    command = [sys.executable, __file__, *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=_environment())
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(names: list[str], sizes: dict[str, int], steps: int, warmup: int) -> dict[str, dict]:
    """Median step time of every model, their steps interleaved round by round in one process, so that
    a change in the load of a shared machine hits all of them alike."""
    runs = {name: build(name, sizes[name]) for name in names}
    for _, _, step, _ in runs.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu_times: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(steps):
        for name, (_, _, step, _) in runs.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            step()
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)
    out = {}
    for name, ts in times.items():
        median = statistics.median(ts)
        out[name] = {"step_ms_median": 1e3 * median, "step_ms_all": [1e3 * t for t in ts],
                     "graphs_per_s": sizes[name] / median,
                     "cpu_ms_per_step_median": 1e3 * statistics.median(cpu_times[name])}
    return out


def print_table(rows: list[dict], anchor: dict | None) -> None:
    header = f"{'model':<12} {'batch':>5} {'params':>8} {'step ms':>9} {'cpu ms':>8} {'graphs/s':>9} " \
             f"{'vs PyG GPS':>10} {'peak MiB':>9} {'saved MiB':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        if "error" in r:
            print(f"{r['model']:<12} error: {r['error']}")
            continue
        ratio = "-"
        if anchor and "error" not in anchor:
            ratio = f"{r['graphs_per_s'] / anchor['graphs_per_s']:.2f}x"
        print(f"{r['model']:<12} {r['batch_size']:>5} {r['parameters']:>8} {r['step_ms_median']:>9.1f} "
              f"{r['cpu_ms_per_step_median']:>8.1f} {r['graphs_per_s']:>9.1f} {ratio:>10} "
              f"{r['peak_rss_growth_mib']:>9.1f} "
              f"{r['saved_for_backward_mib']:>10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="gps,pyg-gps,gt,grit,exphormer")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grit-batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--throughput", help=argparse.SUPPRESS)
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. machine load)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.models.split(",")
    sizes = {name: args.grit_batch_size if name == "grit" else args.batch_size for name in names}
    if args.worker:
        print(json.dumps(memory_worker(args.worker, args.batch_size, args.steps)))
        return
    if args.throughput:
        print(json.dumps(throughput(args.throughput.split(","), sizes, args.steps, args.warmup)))
        return
    rows = []
    for name in names:
        row = run_in_subprocess(["--worker", name, "--batch-size", str(sizes[name]), "--steps", "2",
                                 "--threads", str(args.threads)])
        rows.append({"model": name, **row})
        print(f"  memory measured: {name}", file=sys.stderr, flush=True)
    ok = [r["model"] for r in rows if "error" not in r]
    # The GPS pair is interleaved in one process (the comparison that matters); every other model runs in
    # a process of its own, so that one model's gigabytes of activations (GRIT) do not slow another.
    pair = [name for name in ("gps", "pyg-gps") if name in ok]
    groups = ([pair] if pair else []) + [[name] for name in ok if name not in pair]
    speed: dict[str, dict] = {}
    for group in groups:
        result = run_in_subprocess(["--throughput", ",".join(group), "--models", ",".join(group),
                                    "--batch-size", str(args.batch_size),
                                    "--grit-batch-size", str(args.grit_batch_size),
                                    "--steps", str(args.steps), "--warmup", str(args.warmup),
                                    "--threads", str(args.threads)])
        if "error" in result:
            raise SystemExit(f"throughput run of {group} failed: {result['error']}")
        speed.update(result)
        print(f"  throughput measured: {', '.join(group)}", file=sys.stderr, flush=True)
    rows = [{**r, **speed.get(r["model"], {})} for r in rows]
    anchor = next((r for r in rows if r["model"] == "pyg-gps"), None)
    print_table(rows, anchor)
    ours = next((r for r in rows if r["model"] == "gps"), None)
    summary = {}
    if ours and anchor and "error" not in ours and "error" not in anchor:
        summary = {"gps_vs_pyg_gps_throughput": ours["graphs_per_s"] / anchor["graphs_per_s"],
                   "gps_vs_pyg_gps_saved_memory":
                       ours["saved_for_backward_mib"] / anchor["saved_for_backward_mib"]}
        print(f"\nGPS vs PyG GPSConv: {summary['gps_vs_pyg_gps_throughput']:.2f}x graphs/s, "
              f"{summary['gps_vs_pyg_gps_saved_memory']:.2f}x activation memory")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__, "threads": args.threads,
            "cpu": platform.processor() or platform.machine(), "load_average": os.getloadavg(),
            "note": args.note, "steps": args.steps, "warmup": args.warmup,
            "omp_wait_policy": _environment()["OMP_WAIT_POLICY"]}
    RESULTS.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
