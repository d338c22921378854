"""Dataset generation and cache speed: full PATTERN / CLUSTER, against the notebooks' loop procedure.

    .venv/bin/python bench/data_generation.py [--quick]

Anchor (measured in the same run): the Benchmarking-GNNs notebooks generate a graph with Python
loops over node pairs (one ``np.random.binomial`` call per pair); we time it on a sample of graphs and
extrapolate to the full set. Writes bench/results/data_generation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sparsegt.data import load_dataset
from sparsegt.data.cache import load_graph_splits
from sparsegt.data.sbm import ClusterConfig, PatternConfig


def notebook_block_model(c, p, q):
    n = len(c)
    W = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            if np.random.binomial(1, p if c[i] == c[j] else q) == 1:
                W[i, j] = W[j, i] = 1
    return W


def notebook_pattern_graph():
    """One PATTERN graph exactly as generate_SBM_PATTERN.ipynb builds it (loops)."""
    c = np.concatenate([np.repeat(r, np.random.randint(5, 35)) for r in range(5)])
    W = notebook_block_model(c, 0.5, 0.35)
    size = np.random.randint(5, 35)
    W0 = notebook_block_model(np.zeros(size), 0.5, 0.5)
    V = (np.random.rand(size, W.shape[0]) < 0.5).astype(float)
    W = np.concatenate([np.concatenate([W, V.T], 1), np.concatenate([V, W0], 1)], 0)
    idx = np.random.permutation(W.shape[0])
    return W[idx][:, idx]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="small sets only (pattern-small, cluster-small)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for name, total in ((("pattern-small", 1400), ("cluster-small", 1400)) if args.quick else
                            (("pattern", 14_000), ("cluster", 12_000))):
            generate_s, dataset = timed(lambda n=name: load_dataset(n, root=root))
            cache_file = Path(dataset.info["cache_file"])
            load_s, _ = timed(lambda n=name: load_dataset(n, root=root))
            raw_s, _ = timed(lambda f=cache_file: load_graph_splits(f))
            rows.append({"dataset": name, "graphs": total, "generate_and_cache_s": generate_s,
                         "cached_load_s": load_s, "cache_read_only_s": raw_s,
                         "cache_mib": cache_file.stat().st_size / 2**20})
    np.random.seed(0)
    sample = 20
    loop_s, _ = timed(lambda: [notebook_pattern_graph() for _ in range(sample)])
    per_graph = loop_s / sample
    for row in rows:
        if row["dataset"].startswith("pattern"):
            row["notebook_loops_extrapolated_s"] = per_graph * row["graphs"]
            row["speedup_vs_notebook"] = row["notebook_loops_extrapolated_s"] / row["generate_and_cache_s"]
    header = f"{'dataset':<15}{'graphs':>8}{'generate+cache s':>18}{'cached load s':>15}{'cache MiB':>11}" \
             f"{'notebook loops s (extrap.)':>28}{'speedup':>9}"
    print(header)
    for r in rows:
        extra = (f"{r['notebook_loops_extrapolated_s']:>28.1f}{r['speedup_vs_notebook']:>8.1f}x"
                 if "speedup_vs_notebook" in r else f"{'-':>28}{'-':>9}")
        print(f"{r['dataset']:<15}{r['graphs']:>8}{r['generate_and_cache_s']:>18.2f}{r['cached_load_s']:>15.2f}"
              f"{r['cache_mib']:>11.1f}{extra}")
    out = Path(__file__).parent / "results" / "data_generation.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "notebook_seconds_per_graph": per_graph,
                               "python": sys.version.split()[0], "cpus": os.cpu_count(),
                               "load_average_at_end": os.getloadavg(),
                               "configs": {"pattern": str(PatternConfig()), "cluster": str(ClusterConfig())}},
                              indent=2))
    print(f"wrote {out} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
