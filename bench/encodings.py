"""Benchmark: positional/structural encodings against PyG's transforms, measured in the same run.

(a) PATTERN-sized graphs (SBM: 5 blocks of randint(5, 35) nodes, p = 0.5 inside, 0.35 between, plus one
    planted pattern of randint(5, 35) nodes joined to each background node with probability 0.5; ~117
    nodes, mean degree ~48): LapPE k = 8 and RWSE K = 16, ours (`add_encodings`) vs PyG's
    ``AddLaplacianEigenvectorPE(k=8, is_undirected=True)`` and ``AddRandomWalkPE(16)``.
(b) One sparse graph of 100,000 nodes (Erdos-Renyi, mean degree ~10): time and peak memory of each
    encoding, each measured in a forked child process (peak RSS above the child's starting RSS).
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
import resource
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


# ---------------------------------------------------------------------------------------------- timing helpers
def timed(fn, repeats: int = 1) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(fn, queue) -> None:
    base = _rss_bytes()
    start = time.perf_counter()
    try:
        extra = fn()
        seconds = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        queue.put({"seconds": seconds, "peak_mib": max(peak - base, 0) / 2**20, **(extra or {})})
    except Exception as err:  # report, do not hang the parent
        queue.put({"error": f"{type(err).__name__}: {err}"[:200]})


def in_child(fn, timeout: float) -> dict:
    """Run ``fn`` in a forked process: wall time and peak RSS growth; ``timeout`` seconds at most."""
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return {"error": f"timeout after {timeout:.0f} s"}
    return queue.get() if not queue.empty() else {"error": f"exit code {proc.exitcode}"}


# ---------------------------------------------------------------------------------------------- (a)
def bench_small(graphs: list[Graph], repeats: int) -> dict:
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE

    datas = [Data(edge_index=g.to_edge_index(), num_nodes=g.num_nodes) for g in graphs]
    pyg_lap = AddLaplacianEigenvectorPE(k=8, is_undirected=True)
    pyg_rw = AddRandomWalkPE(16)
    out: dict[str, float] = {}
    out["pyg_lappe_s"], _ = timed(lambda: [pyg_lap(d.clone()) for d in datas])
    out["pyg_rwse_s"], pyg_rw_out = timed(lambda: [pyg_rw(d.clone()) for d in datas])
    for workers in (1, 2):
        out[f"ours_lappe_w{workers}_s"], _ = timed(lambda w=workers: add_encodings(graphs, lap_pe=8, num_workers=w),
                                                   repeats)
        out[f"ours_rwse_w{workers}_s"], _ = timed(lambda w=workers: add_encodings(graphs, rwse=16, num_workers=w),
                                                  repeats)
        out[f"ours_both_w{workers}_s"], ours = timed(
            lambda w=workers: add_encodings(graphs, lap_pe=8, rwse=16, num_workers=w), repeats)
    out["pyg_both_s"] = out["pyg_lappe_s"] + out["pyg_rwse_s"]
    diff = max(float((o.node_data["rwse"] - d.random_walk_pe).abs().max()) for o, d in zip(ours, pyg_rw_out,
                                                                                          strict=True))
    out["rwse_max_abs_diff_vs_pyg"] = diff
    return out


# ---------------------------------------------------------------------------------------------- (b)
def bench_big(n: int, timeout: float) -> dict:
    graph = sparse_random_graph(n, 10.0, seed=0)
    adj = adjacency(graph)
    results: dict[str, dict] = {"graph": {"nodes": n, "edges": graph.num_edges}}

    def ours_lappe():
        vec, val, mask = laplacian_pe(graph, 8)
        return {"eigenvalues": [round(float(v), 6) for v in val[0]]}

    def ours_rwse_estimate():
        est, stderr = rwse_estimate(adj, 16, num_probes=128)
        # error against exact columns of P^t for 100 sampled nodes (one walk each: O(E K) per node)
        sample = np.random.default_rng(1).choice(n, 100, replace=False)
        p = adj.multiply(1.0 / np.asarray(adj.sum(axis=1))).tocsr()
        pt = p.T.tocsr()
        exact = np.zeros((len(sample), 16))
        for i, node in enumerate(sample):
            x = np.zeros(n)
            x[node] = 1.0
            for t in range(16):
                x = pt @ x  # x = (P^T)^(t+1) e_node, whose entry 'node' is P^(t+1)[node, node]
                exact[i, t] = x[node]
        err = np.abs(est[sample] - exact)
        return {"mean_abs_error_by_t": [float(f"{e:.2e}") for e in err.mean(0)],
                "mean_value_by_t": [float(f"{v:.2e}") for v in exact.mean(0)],
                "mean_stderr_by_t": [float(f"{s:.2e}") for s in stderr[sample].mean(0)]}

    def ours_spd_edges():
        shortest_path_distance(graph, graph, 8)

    def ours_rrwp_edges():
        rrwp(graph, graph, 8)

    def pyg_lappe():
        from torch_geometric.data import Data
        from torch_geometric.transforms import AddLaplacianEigenvectorPE

        AddLaplacianEigenvectorPE(k=8, is_undirected=True)(Data(edge_index=graph.to_edge_index(), num_nodes=n))

    def pyg_rwse():
        from torch_geometric.data import Data
        from torch_geometric.transforms import AddRandomWalkPE

        AddRandomWalkPE(16)(Data(edge_index=graph.to_edge_index(), num_nodes=n))

    for name, fn in (("ours_lappe_k8", ours_lappe), ("ours_rwse16_estimate_128probes", ours_rwse_estimate),
                     ("ours_spd_on_edges_max8", ours_spd_edges), ("ours_rrwp8_on_edges", ours_rrwp_edges),
                     ("pyg_lappe_k8", pyg_lappe), ("pyg_rwse16", pyg_rwse)):
        results[name] = in_child(fn, timeout)
        print(f"  (b) {name}: {results[name]}", flush=True)
    return results


# ---------------------------------------------------------------------------------------------- (c)
def bench_full(graphs: list[Graph]) -> dict:
    with tempfile.TemporaryDirectory() as cache_dir:
        first, _ = timed(lambda: add_encodings(graphs, lap_pe=8, rwse=16, cache_key="bench-pattern",
                                               cache_dir=cache_dir))
        cached, _ = timed(lambda: add_encodings(graphs, lap_pe=8, rwse=16, cache_key="bench-pattern",
                                                cache_dir=cache_dir), 3)
        size = sum(f.stat().st_size for f in Path(cache_dir).iterdir())
    return {"graphs": len(graphs), "compute_s": first, "cached_s": cached, "cache_mib": size / 2**20}


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=1000, help="PATTERN-sized graphs for (a)")
    parser.add_argument("--full", type=int, default=14000, help="graphs for the dataset run (c); 0 skips")
    parser.add_argument("--big", type=int, default=100_000, help="nodes of the sparse graph (b); 0 skips")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per big-graph measurement")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    result: dict = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
                    "load_average_at_start": os.getloadavg(), "torch": torch.__version__}
    graphs = [pattern_like_graph(rng) for _ in range(max(args.graphs, args.full))]
    sizes = np.array([g.num_nodes for g in graphs[:args.graphs]])
    result["small"] = {"graphs": args.graphs, "mean_nodes": float(sizes.mean()),
                       "mean_degree": float(np.mean([g.num_edges / g.num_nodes for g in graphs[:args.graphs]]))}
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
    rows = [("LapPE k=8", small["pyg_lappe_s"], small["ours_lappe_w1_s"], small["ours_lappe_w2_s"]),
            ("RWSE K=16", small["pyg_rwse_s"], small["ours_rwse_w1_s"], small["ours_rwse_w2_s"]),
            ("LapPE + RWSE", small["pyg_both_s"], small["ours_both_w1_s"], small["ours_both_w2_s"])]
    print(f"\n(a) {small['graphs']} PATTERN-sized graphs (mean {small['mean_nodes']:.0f} nodes, degree "
          f"{small['mean_degree']:.0f}); load average {result['load_average_at_start'][0]:.1f} at start")
    print(f"{'encoding':<14}{'PyG s':>9}{'ours 1 thr s':>14}{'ours 2 thr s':>14}{'ratio 1 thr':>13}{'ratio 2 thr':>13}")
    for name, pyg, one, two in rows:
        print(f"{name:<14}{pyg:>9.2f}{one:>14.2f}{two:>14.2f}{pyg / one:>12.1f}x{pyg / two:>12.1f}x")
    print(f"RWSE max |ours - PyG| (unweighted): {small['rwse_max_abs_diff_vs_pyg']:.1e}")
    if "big" in result:
        big = result["big"]
        print(f"\n(b) one graph, {big['graph']['nodes']} nodes, {big['graph']['edges']} directed edges")
        print(f"{'encoding':<34}{'time s':>10}{'peak MiB':>10}")
        for name, rec in big.items():
            if name == "graph":
                continue
            if "error" in rec:
                print(f"{name:<34}{rec['error']:>20}")
            else:
                print(f"{name:<34}{rec['seconds']:>10.2f}{rec['peak_mib']:>10.0f}")
    if "full" in result:
        full = result["full"]
        print(f"\n(c) {full['graphs']} graphs LapPE k=8 + RWSE K=16: {full['compute_s']:.1f} s computed, "
              f"{full['cached_s']:.2f} s from cache ({full['cache_mib']:.0f} MiB)")


if __name__ == "__main__":
    main()
