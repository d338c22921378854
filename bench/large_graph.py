"""Peak memory of one large graph: data, sampler and a LargeGT training step, per 10^6 nodes.

    .venv/bin/python bench/large_graph.py [--nodes 2000000] [--fanouts 10 9] [--batch-size 1024] [--hidden 128]
                                          [--num-centroids 4096] [--no-save]

Generates a DCSBM graph (`sparsegt.data.large_sbm`, ~12 directed edges per node) in the process, then measures the
process's peak resident set size (``getrusage`` ``ru_maxrss``, which only grows) after each phase:

1. ``data``: the graph (CSR, features, labels, splits) and its hop aggregates ÂX, Â²X (`data.hop_features`);
2. ``sampler``: a `NeighborLoader` over the training nodes and one sampled batch of ``--batch-size`` seeds;
3. ``train step``: the `largegt-dcsbm` model (width ``--hidden``, ``--num-centroids``) built, one forward,
   backward and Adam step on that batch.

The baseline is the peak after the imports and after numba compiled the generator and the sampler on a tiny
graph, so compilation is not counted as data. Each phase is reported as its peak, the growth over the previous
phase and over the baseline, the RSS left after it (what stays, e.g. the sampler's scratch array, hidden under
an earlier transient peak), and the peak's growth over the baseline per 10^6 nodes (memory that scales with
the graph; the training step's share depends on the batch, not on N). Writes bench/results/large_graph.json
unless ``--no-save``. Peak RSS is a statement about this process on this machine: run it alone.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from sparsegt.data.hop_features import HOP_FEATURES, propagated_features
from sparsegt.data.large_sbm import DCSBMConfig, generate_dcsbm
from sparsegt.data.neighbor_loader import NeighborLoader
from sparsegt.data.node_splits import split_views
from sparsegt.data.spec import FeatureSpec, TaskSpec
from sparsegt.models import GraphTransformer, preset
from sparsegt.train.trainer import select_prediction


def peak_mib() -> float:
    """The process's peak resident set size so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_mib() -> float:
    """The process's resident set size now, MiB (``/proc/self/statm``; the peak if that file is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return peak_mib()
    return pages * resource.getpagesize() / 2**20


def communities_for(nodes: int) -> int:
    """~4,000 nodes a community (the default dcsbm: 10^6 nodes, 256 communities), at least 16."""
    return max(16, nodes // 4000)


def warm_up(fanouts: list[int]) -> None:
    """Compile the numba generator and sampler on a tiny graph, so compilation lands in the baseline."""
    graph, _ = generate_dcsbm(DCSBMConfig(num_nodes=2000, num_communities=16))
    train, _, _ = split_views(graph, graph.node_data["split"])
    next(iter(NeighborLoader([train], 64, fanouts=fanouts).batches(0)))


def measure(nodes: int, fanouts: list[int], batch_size: int, hidden: int, num_centroids: int) -> dict:
    warm_up(fanouts)
    rows = [("baseline", peak_mib(), current_mib())]
    started = time.perf_counter()
    cfg = DCSBMConfig(num_nodes=nodes, num_communities=communities_for(nodes))
    graph, info = generate_dcsbm(cfg)
    graph = graph.with_data(node_data={HOP_FEATURES: propagated_features(graph, 2)}, validate=False)
    train, _, _ = split_views(graph, graph.node_data["split"])
    rows.append(("data", peak_mib(), current_mib()))

    loader = NeighborLoader([train], batch_size, fanouts=fanouts, shuffle=True)
    batch = next(iter(loader.batches(0)))
    rows.append(("sampler", peak_mib(), current_mib()))

    config = preset("largegt-dcsbm")
    config.hidden, config.num_centroids = hidden, num_centroids
    task = TaskSpec("node", "multiclass", cfg.num_classes, "accuracy", True)
    model = GraphTransformer(config, task, FeatureSpec("continuous", dim=cfg.feature_dim + 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    prediction, target = select_prediction(model(batch), batch, task)
    loss = torch.nn.functional.cross_entropy(prediction, target)
    loss.backward()
    optimizer.step()
    rows.append(("train step", peak_mib(), current_mib()))

    baseline = rows[0][1]
    phases = []
    for (name, peak, now), (_, before, _) in zip(rows[1:], rows[:-1], strict=True):
        phases.append({"phase": name, "peak_mib": round(peak, 1), "rss_after_mib": round(now, 1),
                       "growth_mib": round(peak - before, 1),
                       "over_baseline_mib": round(peak - baseline, 1),
                       "over_baseline_mib_per_1e6_nodes": round((peak - baseline) / (nodes / 1e6), 1)})
    return {"nodes": nodes, "edges": info["num_edges"], "fanouts": fanouts, "batch_size": batch_size,
            "batch_nodes": batch.num_nodes, "batch_edges": batch.num_edges, "hidden": hidden,
            "num_centroids": num_centroids, "baseline_mib": round(baseline, 1), "phases": phases,
            "loss": loss.item(), "elapsed_s": round(time.perf_counter() - started, 1),
            "machine": f"{platform.machine()}, {platform.processor() or platform.system()}",
            "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=2_000_000)
    parser.add_argument("--fanouts", type=int, nargs="+", default=[10, 9])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--num-centroids", type=int, default=4096)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    result = measure(args.nodes, args.fanouts, args.batch_size, args.hidden, args.num_centroids)
    print(f"DCSBM {result['nodes']:,} nodes, {result['edges']:,} directed edges; batch of {args.batch_size} seeds "
          f"-> {result['batch_nodes']:,} nodes, {result['batch_edges']:,} edges; baseline {result['baseline_mib']} MiB")
    print(f"{'phase':<12}{'peak MiB':>10}{'RSS after':>11}{'growth':>10}{'over base':>11}{'per 1e6 nodes':>15}")
    for p in result["phases"]:
        print(f"{p['phase']:<12}{p['peak_mib']:>10}{p['rss_after_mib']:>11}{p['growth_mib']:>10}{p['over_baseline_mib']:>11}"
              f"{p['over_baseline_mib_per_1e6_nodes']:>15}")
    if not args.no_save:
        out = Path(__file__).resolve().parent / "results" / "large_graph.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"saved {out}")


if __name__ == "__main__":
    main()
