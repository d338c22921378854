"""k-hop neighbour sampling throughput: `NeighborSampler` (numba) against PyG's ``NeighborLoader``.

    .venv/bin/python bench/sampler.py [--nodes 1000000] [--fanouts 15 10] [--batch-size 1024] [--batches 30]
                                      [--repeats 3] [--quick] [--no-save]

Graph: DCSBM (`sparsegt.data.large_sbm`, ~12 directed edges per node, power-law degrees), generated in the run
(not timed). Both samplers take the same seed batches (a fixed permutation of the nodes) with the same fan-outs
and sample incoming edges (PyG's ``edge_index`` is [source, target]; our CSR rows are the targets). Reports, per
sampler, seed nodes/s and sampled edges/s (medians over ``--repeats`` passes over ``--batches`` batches; the
first batch of each sampler runs once before timing: numba compilation, PyG's CSC conversion) and the ratio
ours / PyG.

PyG's ``NeighborLoader`` samples with pyg-lib or torch-sparse and has no pure-Python path: when neither is
installed the script says so and reports ours alone. Writes bench/results/sampler.json unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from sparsegt.data.hash_random import derive_key
from sparsegt.data.large_sbm import DCSBMConfig, generate_dcsbm
from sparsegt.data.neighbor_sampler import NeighborSampler


def seed_batches(num_nodes: int, batch_size: int, batches: int) -> list[np.ndarray]:
    order = np.random.default_rng(0).permutation(num_nodes)
    return [order[b * batch_size:(b + 1) * batch_size] for b in range(min(batches, num_nodes // batch_size))]


def time_ours(graph, batches, fanouts, repeats) -> tuple[float, int]:
    sampler = NeighborSampler(graph)
    sampler.sample(batches[0], fanouts, derive_key(0))  # compile / load the numba cache
    times, edges = [], 0
    for r in range(repeats):
        start, edges = time.perf_counter(), 0
        for b, seeds in enumerate(batches):
            edges += sampler.sample(seeds, fanouts, derive_key(r, b)).graph.num_edges
        times.append(time.perf_counter() - start)
    return statistics.median(times), edges


def pyg_unavailable() -> str | None:
    try:
        import torch_geometric.typing as pyg_typing
        from torch_geometric.loader import NeighborLoader  # noqa: F401
    except ImportError as err:
        return f"PyTorch Geometric is not installed ({err}): pip install 'sparsegt[pyg]'"
    if not (pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE):
        return ("PyG's NeighborLoader needs pyg-lib or torch-sparse for its sampling kernels and neither is "
                "installed (PyG has no pure-Python sampler); install pyg-lib for this PyTorch version "
                "(https://data.pyg.org/whl/) to compare")
    return None


def time_pyg(graph, batches, fanouts, repeats) -> tuple[float, int]:
    from torch_geometric.data import Data
    from torch_geometric.loader import NeighborLoader

    targets = graph.row_index()
    data = Data(edge_index=torch.stack([graph.indices, targets]), num_nodes=graph.num_nodes)
    seeds = torch.from_numpy(np.concatenate(batches))
    loader = NeighborLoader(data, num_neighbors=list(fanouts), input_nodes=seeds, batch_size=len(batches[0]),
                            shuffle=False)
    next(iter(loader))  # CSC conversion happens here
    times, edges = [], 0
    for _ in range(repeats):
        start, edges = time.perf_counter(), 0
        for batch in loader:
            edges += batch.edge_index.shape[1]
        times.append(time.perf_counter() - start)
    return statistics.median(times), edges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=1_000_000)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[15, 10])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="10^4 nodes, 3 batches of 256 (a smoke run)")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.batches, args.batch_size, args.repeats = 10_000, 3, 256, 1
    start = time.perf_counter()
    graph, info = generate_dcsbm(DCSBMConfig(num_nodes=args.nodes, num_communities=min(256, args.nodes // 40)))
    print(f"graph: {graph.num_nodes:,} nodes, {graph.num_edges:,} edges (generated in "
          f"{time.perf_counter() - start:.1f} s); fan-outs {args.fanouts}, {args.batches} batches of "
          f"{args.batch_size} seeds")
    batches = seed_batches(graph.num_nodes, args.batch_size, args.batches)
    seeds = sum(len(b) for b in batches)
    rows = {}
    seconds, edges = time_ours(graph, batches, args.fanouts, args.repeats)
    rows["sparsegt"] = {"seed_nodes_per_s": seeds / seconds, "edges_per_s": edges / seconds, "edges": edges}
    reason = pyg_unavailable()
    if reason is None:
        seconds, edges = time_pyg(graph, batches, args.fanouts, args.repeats)
        rows["pyg"] = {"seed_nodes_per_s": seeds / seconds, "edges_per_s": edges / seconds, "edges": edges}
    else:
        print(f"PyG skipped: {reason}")
    print(f"{'sampler':<10} {'seed nodes/s':>14} {'sampled edges/s':>16} {'edges/batch':>12}")
    for name, row in rows.items():
        print(f"{name:<10} {row['seed_nodes_per_s']:>14,.0f} {row['edges_per_s']:>16,.0f} "
              f"{row['edges'] / len(batches):>12,.0f}")
    if "pyg" in rows:
        ratio = rows["sparsegt"]["seed_nodes_per_s"] / rows["pyg"]["seed_nodes_per_s"]
        print(f"ratio sparsegt / PyG (seed nodes/s): {ratio:.2f}")
    if not args.no_save and not args.quick:
        out = Path(__file__).resolve().parent / "results" / "sampler.json"
        out.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                   "threads": torch.get_num_threads(), "args": vars(args), "rows": rows,
                                   "pyg_skipped": reason, "graph_edges": graph.num_edges}, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
