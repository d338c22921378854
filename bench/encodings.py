"""Benchmark: positional/structural encodings against PyG's transforms, measured in the same run.

(a) PATTERN-sized graphs (SBM: 5 blocks of randint(5, 35) nodes, p = 0.5 inside, 0.35 between, plus one
    planted pattern of randint(5, 35) nodes joined to each background node with probability 0.5; ~117
    nodes, mean degree ~48): LapPE k = 8 and RWSE K = 16, ours (`add_encodings`) vs PyG's
    ``AddLaplacianEigenvectorPE(k=8, is_undirected=True)`` and ``AddRandomWalkPE(16)``.
(b) One sparse graph of 100,000 nodes (Erdos-Renyi, mean degree ~10): time and peak memory of each
    encoding, each in a fresh process (peak RSS above the RSS before the call, via /proc VmHWM).
(c) A full PATTERN-sized dataset (14,000 graphs): LapPE + RWSE without cache, then from the disk cache.

    python bench/encodings.py                       # everything, default sizes
    python bench/encodings.py --graphs 200 --full 2000 --big 20000   # a quick run

Prints a table with ratios (PyG time / our time) and writes bench/results/encodings.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsegt import Graph  # noqa: E402
from sparsegt.encodings import (  # noqa: E402
    add_encodings,
    laplacian_pe,
    rrwp,
    rwse,
    shortest_path_distance,
)
from sparsegt.encodings.adjacency import adjacency  # noqa: E402
from sparsegt.encodings.random_walk import rwse_estimate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "encodings.json"


# ---------------------------------------------------------------------------------------------- data
def pattern_like_graph(rng: np.random.Generator) -> Graph:
    sizes = list(rng.integers(5, 35, size=5)) + [int(rng.integers(5, 35))]
    n = int(sum(sizes))
    block = np.repeat(np.arange(6), sizes)
    prob = np.where(block[:, None] == block[None, :], 0.5, 0.35)
    planted = block == 5
    prob[np.ix_(planted, ~planted)] = 0.5
    prob[np.ix_(~planted, planted)] = 0.5
    upper = np.triu(rng.random((n, n)) < prob, 1)
    perm = rng.permutation(n)
    adj = (upper | upper.T)[np.ix_(perm, perm)]
    rows, cols = np.nonzero(adj)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(rows, minlength=n))
    return Graph(torch.from_numpy(indptr), torch.from_numpy(cols.astype(np.int64)))


def sparse_random_graph(n: int, degree: float, seed: int) -> Graph:
    rng = np.random.default_rng(seed)
    m = int(n * degree / 2)
    a, b = rng.integers(0, n, size=(2, int(m * 1.05)))
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    key = np.unique(lo * n + hi)[:m]
    lo, hi = key // n, key % n
    edge_index = torch.from_numpy(np.stack([np.r_[lo, hi], np.r_[hi, lo]]))
    return Graph.from_edge_index(edge_index, n)


# ---------------------------------------------------------------------------------------------- timing
CPU_SECONDS: dict[str, float] = {}  # process CPU time (all threads) of the last timed() call, by label


def timed(fn, repeats: int = 1, label: str | None = None) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls (and the CPU seconds of the median call under ``label``:
    on a busy machine wall time mostly measures the wait for a core, CPU time does not)."""
    times, cpus, out = [], [], None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    if label:
        CPU_SECONDS[label] = statistics.median(cpus)
    return statistics.median(times), out


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(task: str, n: int, queue) -> None:
    torch.set_num_threads(1)
    graph = sparse_random_graph(n, 10.0, seed=0)
    small = sparse_random_graph(200, 10.0, seed=1)
    setup = BIG_SETUP.get(task, lambda g: g)
    if task.startswith("ours"):
        BIG_TASKS[task](setup(small))  # numba compilation / cache load is not part of the measurement
    prepared = setup(graph)  # inputs (e.g. the attention pattern) are not part of the measurement
    with open("/proc/self/clear_refs", "w") as handle:  # reset the peak-RSS mark (Linux >= 4.0)
        handle.write("5")
    base = _status_mib("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    try:
        extra = BIG_TASKS[task](prepared)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        queue.put({"seconds": seconds, "cpu_seconds": cpu, "peak_mib": _status_mib("VmHWM") - base,
                   **(extra or {})})
    except Exception as err:  # report, do not hang the parent
        queue.put({"error": f"{type(err).__name__}: {err}"[:200]})


def in_child(task: str, n: int, timeout: float) -> dict:
    """Run a big-graph task in a fresh (spawned) process: wall time and peak RSS growth (``timeout`` s).

    Spawned, not forked: numba's and OpenMP's thread pools do not survive a fork."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(task, n, queue))
    proc.start()
    deadline = time.perf_counter() + timeout
    while proc.is_alive() and queue.empty() and time.perf_counter() < deadline:
        time.sleep(0.2)
    if queue.empty():
        proc.terminate()
        proc.join()
        return {"error": f"timeout after {timeout:.0f} s"}
    result = queue.get()
    proc.join()
    return result


# ---------------------------------------------------------------------------------------------- (a)
def bench_small(graphs: list[Graph], repeats: int) -> dict:
    from threadpoolctl import threadpool_limits
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE

    datas = [Data(edge_index=g.to_edge_index(), num_nodes=g.num_nodes) for g in graphs]
    pyg_lap = AddLaplacianEigenvectorPE(k=8, is_undirected=True)
    pyg_rw = AddRandomWalkPE(16)
    out: dict[str, float] = {}
    # PyG in its best setting on this machine: one BLAS/torch thread (threads only spin on small matrices)
    with threadpool_limits(1):
        out["pyg_lappe_s"], _ = timed(lambda: [pyg_lap(d.clone()) for d in datas], label="pyg_lappe")
        out["pyg_rwse_s"], pyg_rw_out = timed(lambda: [pyg_rw(d.clone()) for d in datas], label="pyg_rwse")
    torch.set_num_threads(2)
    out["pyg_rwse_2threads_s"], _ = timed(lambda: [pyg_rw(d.clone()) for d in datas])
    torch.set_num_threads(1)
    for w in (1, 2):
        out[f"ours_lappe_w{w}_s"], _ = timed(lambda w=w: add_encodings(graphs, lap_pe=8, num_workers=w),
                                             repeats, label=f"ours_lappe_w{w}")
        out[f"ours_rwse_w{w}_s"], _ = timed(lambda w=w: add_encodings(graphs, rwse=16, num_workers=w),
                                            repeats, label=f"ours_rwse_w{w}")
        out[f"ours_both_w{w}_s"], ours = timed(
            lambda w=w: add_encodings(graphs, lap_pe=8, rwse=16, num_workers=w), repeats,
            label=f"ours_both_w{w}")
    out["cpu_seconds"] = dict(CPU_SECONDS)
    out["pyg_rwse_s"] = min(out["pyg_rwse_s"], out["pyg_rwse_2threads_s"])
    out["pyg_both_s"] = out["pyg_lappe_s"] + out["pyg_rwse_s"]
    diff = max(float((o.node_data["rwse"] - d.random_walk_pe).abs().max())
               for o, d in zip(ours, pyg_rw_out, strict=True))
    out["rwse_max_abs_diff_vs_pyg"] = diff
    return out


# ---------------------------------------------------------------------------------------------- (b)
def _ours_lappe(graph: Graph) -> dict:
    _, val, _ = laplacian_pe(graph, 8)
    return {"eigenvalues": [round(float(v), 6) for v in val[0]]}


def _ours_rwse_estimate(graph: Graph) -> dict:
    adj = adjacency(graph)
    n = graph.num_nodes
    est, stderr = rwse_estimate(adj, 16, num_probes=128)
    # error against exact diagonals for 100 sampled nodes (one walk each, O(E K) per node)
    sample = np.random.default_rng(1).choice(n, 100, replace=False)
    p_t = (adj.multiply(1.0 / np.maximum(np.asarray(adj.sum(axis=1)).reshape(-1, 1), 1e-300))).T.tocsr()
    exact = np.zeros((len(sample), 16))
    for i, node in enumerate(sample):
        x = np.zeros(n)
        x[node] = 1.0
        for t in range(16):
            x = p_t @ x  # (P^T)^(t+1) e_node: its entry at node is P^(t+1)[node, node]
            exact[i, t] = x[node]
    err = np.abs(est[sample] - exact)
    return {"mean_abs_error_by_t": [float(f"{e:.2e}") for e in err.mean(0)],
            "mean_value_by_t": [float(f"{v:.2e}") for v in exact.mean(0)],
            "mean_stderr_by_t": [float(f"{s:.2e}") for s in stderr[sample].mean(0)]}


def _two_hop(graph: Graph) -> tuple[Graph, Graph]:
    from sparsegt.patterns import khop

    return graph, khop(graph, 2)


def _ours_spd(prepared: tuple[Graph, Graph]) -> dict:
    graph, pattern = prepared
    distance = shortest_path_distance(graph, pattern, 8)
    return {"pattern": "2-hop", "pattern_entries": pattern.num_edges,
            "distance_counts": torch.bincount(distance).tolist()}


def _ten_thousand(graph: Graph) -> Graph:
    return sparse_random_graph(10_000 if graph.num_nodes > 1000 else 200, 10.0, seed=2)


def _ours_rwse_exact(graph: Graph) -> dict:
    out = rwse(graph, 16, method="exact")
    return {"nodes": graph.num_nodes, "edges": graph.num_edges, "mean_t4": float(out[:, 3].mean())}


def _ours_rrwp(graph: Graph) -> dict:
    out = rrwp(graph, graph, 5)
    return {"pattern": "graph edges", "steps": 5, "mean": out.mean(0).tolist()}


def _pyg_lappe(graph: Graph) -> dict:
    from threadpoolctl import threadpool_limits
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE

    with threadpool_limits(1):
        AddLaplacianEigenvectorPE(k=8, is_undirected=True)(Data(edge_index=graph.to_edge_index(),
                                                                num_nodes=graph.num_nodes))
    return {}


def _pyg_rwse(graph: Graph) -> dict:
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddRandomWalkPE

    AddRandomWalkPE(16)(Data(edge_index=graph.to_edge_index(), num_nodes=graph.num_nodes))
    return {}


BIG_TASKS = {"ours_lappe_k8": _ours_lappe, "ours_rwse16_estimate_128probes": _ours_rwse_estimate,
             "ours_rwse16_exact_on_10k_nodes": _ours_rwse_exact,
             "ours_spd_2hop_pattern": _ours_spd, "ours_rrwp5_on_edges": _ours_rrwp,
             "pyg_lappe_k8": _pyg_lappe, "pyg_rwse16": _pyg_rwse}
BIG_SETUP = {"ours_spd_2hop_pattern": _two_hop, "ours_rwse16_exact_on_10k_nodes": _ten_thousand}


def bench_big(n: int, timeout: float) -> dict:
    graph = sparse_random_graph(n, 10.0, seed=0)
    results: dict[str, dict] = {"graph": {"nodes": n, "edges": graph.num_edges}}
    for name in BIG_TASKS:
        results[name] = in_child(name, n, timeout)
        print(f"  (b) {name}: {results[name]}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------- (c)
def bench_full(graphs: list[Graph]) -> dict:
    with tempfile.TemporaryDirectory() as cache_dir:
        first, _ = timed(lambda: add_encodings(graphs, lap_pe=8, rwse=16, cache_key="bench-pattern",
                                               cache_dir=cache_dir, num_workers=2), label="full_compute")
        cached, _ = timed(lambda: add_encodings(graphs, lap_pe=8, rwse=16, cache_key="bench-pattern",
                                                cache_dir=cache_dir), 3, label="full_cached")
        size = sum(f.stat().st_size for f in Path(cache_dir).iterdir())
    return {"graphs": len(graphs), "compute_s": first, "compute_cpu_s": CPU_SECONDS["full_compute"],
            "cached_s": cached, "cached_cpu_s": CPU_SECONDS["full_cached"], "cache_mib": size / 2**20}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=1000, help="PATTERN-sized graphs for (a)")
    parser.add_argument("--full", type=int, default=14000, help="graphs for the dataset run (c); 0 skips")
    parser.add_argument("--big", type=int, default=100_000, help="nodes of the sparse graph (b); 0 skips")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per big-graph measurement")
    args = parser.parse_args()
    # One torch thread: on a busy 2-core machine torch's OpenMP threads spin, and small tensor ops run 10-20x
    # slower with 2 threads than with 1 (measured). Our dense work runs on our own worker threads instead.
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
                    "load_average_at_start": os.getloadavg(), "torch": torch.__version__}
    graphs = [pattern_like_graph(rng) for _ in range(max(args.graphs, args.full))]
    sizes = np.array([g.num_nodes for g in graphs[:args.graphs]])
    degrees = [g.num_edges / g.num_nodes for g in graphs[:args.graphs]]
    result["small"] = {"graphs": args.graphs, "mean_nodes": float(sizes.mean()),
                       "mean_degree": float(np.mean(degrees))}
    print(f"(a) {args.graphs} PATTERN-sized graphs ...", flush=True)
    result["small"].update(bench_small(graphs[:args.graphs], args.repeats))
    if args.big:
        print(f"(b) one {args.big}-node graph ...", flush=True)
        result["big"] = bench_big(args.big, args.timeout)
    if args.full:
        print(f"(c) {args.full} PATTERN-sized graphs, LapPE + RWSE, then cached ...", flush=True)
        result["full"] = bench_full(graphs[:args.full])
    result["load_average_at_end"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print_tables(result)
    print(f"wrote {RESULTS}")


def print_tables(result: dict) -> None:
    small = result["small"]
    cpu = small["cpu_seconds"]
    rows = [("LapPE k=8", "pyg_lappe", "ours_lappe"), ("RWSE K=16", "pyg_rwse", "ours_rwse"),
            ("LapPE + RWSE", None, "ours_both")]
    print(f"\n(a) {small['graphs']} PATTERN-sized graphs (mean {small['mean_nodes']:.0f} nodes, degree "
          f"{small['mean_degree']:.0f}); load average {result['load_average_at_start'][0]:.1f} at start, "
          f"{result['load_average_at_end'][0]:.1f} at end. Wall s (CPU s); ratio = PyG / ours")
    print(f"{'encoding':<14}{'PyG':>16}{'ours 1 thread':>16}{'ours 2 threads':>16}{'ratio 1 thr':>12}"
          f"{'ratio 2 thr':>12}{'CPU ratio':>10}")
    for name, pyg_key, ours_key in rows:
        if pyg_key is None:
            pyg, pyg_cpu = small["pyg_both_s"], cpu["pyg_lappe"] + cpu["pyg_rwse"]
        else:
            pyg, pyg_cpu = small[pyg_key + "_s"], cpu[pyg_key]
        one, two = small[ours_key + "_w1_s"], small[ours_key + "_w2_s"]
        print(f"{name:<14}{pyg:>8.2f} ({pyg_cpu:>5.2f}){one:>8.2f} ({cpu[ours_key + '_w1']:>5.2f})"
              f"{two:>8.2f} ({cpu[ours_key + '_w2']:>5.2f}){pyg / one:>11.1f}x{pyg / two:>11.1f}x"
              f"{pyg_cpu / cpu[ours_key + '_w1']:>9.1f}x")
    print(f"RWSE max |ours - PyG| (unweighted): {small['rwse_max_abs_diff_vs_pyg']:.1e}; "
          f"PyG RWSE with 2 torch threads: {small['pyg_rwse_2threads_s']:.2f} s (the table uses PyG's best)")
    if "big" in result:
        big = result["big"]
        print(f"\n(b) one graph, {big['graph']['nodes']} nodes, {big['graph']['edges']} directed edges")
        print(f"{'encoding':<34}{'wall s':>10}{'CPU s':>10}{'peak MiB':>10}")
        for name, rec in big.items():
            if name == "graph":
                continue
            if "error" in rec:
                print(f"{name:<34}{rec['error']:>30}")
            else:
                print(f"{name:<34}{rec['seconds']:>10.2f}{rec['cpu_seconds']:>10.2f}{rec['peak_mib']:>10.0f}")
    if "full" in result:
        full = result["full"]
        print(f"\n(c) {full['graphs']} graphs LapPE k=8 + RWSE K=16 (2 worker threads): "
              f"{full['compute_s']:.1f} s wall ({full['compute_cpu_s']:.1f} s CPU); "
              f"from the cache {full['cached_s']:.2f} s wall "
              f"({full['cached_cpu_s']:.2f} s CPU, {full['cache_mib']:.0f} MiB file)")


if __name__ == "__main__":
    main()
