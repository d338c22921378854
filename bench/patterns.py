"""Benchmark: attention patterns on long sequences, against dense SDPA measured in the same run.

For each sequence length L (H=8 heads, D=64, float32): pattern build time, then attention forward
and forward+backward through ``sparse_attention`` (backend auto), against dense SDPA with the
equivalent boolean mask (where L x L fits) and causal SDPA (the anchor). ``--recall`` instead prints
the recall-of-attention-mass table of docs/patterns.md.

    .venv/bin/python bench/patterns.py                          # quick: L=4096
    .venv/bin/python bench/patterns.py --sizes 4096,16384,65536 # the full table (minutes)
    .venv/bin/python bench/patterns.py --recall                 # docs/patterns.md recall table

Writes bench/results/patterns.json (``--json`` renames it; ``--recall``: patterns_recall.json).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsegt import Graph, sparse_attention  # noqa: E402
from sparsegt.attention.api import choose_backend  # noqa: E402
from sparsegt.attention.backend import AttentionInputs  # noqa: E402
from sparsegt.patterns import (  # noqa: E402
    bigbird,
    bilevel_routing,
    block_diagonal,
    block_select,
    full,
    routing,
    threshold_topk,
    topk,
    window,
)
from sparsegt.patterns.draw import demo_qk  # noqa: E402

HEADS, DIM = 8, 64


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in ms of ``repeats`` calls (after one warm-up call when repeats > 1)."""
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def attention_times(q, k, v, pattern: Graph, repeats: int, backend: str) -> tuple[float, float]:
    def fwd():
        with torch.no_grad():
            sparse_attention(q, k, v, pattern, backend=backend)

    def fwd_bwd():
        out = sparse_attention(q, k, v, pattern, backend=backend)
        out.sum().backward()

    return timed(fwd, repeats), timed(fwd_bwd, repeats)


def sdpa_times(q, k, v, repeats: int, mask: torch.Tensor | None = None, causal: bool = False):
    qs, ks, vs = (t.detach().transpose(0, 1)[None].requires_grad_(True) for t in (q, k, v))

    def fwd():
        with torch.no_grad():
            F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, is_causal=causal)

    def fwd_bwd():
        F.scaled_dot_product_attention(qs, ks, vs, attn_mask=mask, is_causal=causal).sum().backward()

    return timed(fwd, repeats), timed(fwd_bwd, repeats)


def dense_mask(pattern: Graph) -> torch.Tensor:
    mask = torch.zeros(pattern.num_nodes, pattern.num_cols, dtype=torch.bool)
    mask[pattern.row_index(), pattern.indices] = True
    return mask


def builders(L: int, q, k) -> dict[str, Callable[[], Graph]]:
    window_candidates = window(L, 256)
    return {
        "window w=256": lambda: window(L, 256),
        "window w=256 causal": lambda: window(L, 256, causal=True),
        "bigbird w=128 g=32 r=32": lambda: bigbird(L, 128, 32, 32, seed=0),
        "block_diagonal b=512": lambda: block_diagonal(L, 512),
        "topk k=64 of window 256": lambda: topk(q, k, window_candidates, 64),
        "threshold_topk k=64 of window 256": lambda: threshold_topk(q, k, window_candidates, 64),
        "routing C=L/256 cap 256": lambda: routing(q, k, max(1, L // 256), max_keys_per_cluster=256),
        "bilevel_routing 256 x top4": lambda: bilevel_routing(q, k, 256, 4),
        "block_select 128/16 t=0.9": lambda: block_select(q, k, 128, 16, 0.9),
    }


def run_speed(args) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for L in args.sizes:
        q, k, v = (torch.randn(L, HEADS, DIM, requires_grad=True) for _ in range(3))
        causal = (math.nan, math.nan)
        if L <= args.causal_max:
            causal = sdpa_times(q, k, v, args.repeats if L <= 16384 else 1, causal=True)
            rows.append({"L": L, "pattern": "causal SDPA (anchor)", "edges": L * (L + 1) // 2,
                         "build_ms": 0.0, "fwd_ms": causal[0], "fwd_bwd_ms": causal[1], "backend": "sdpa"})
            print(f"  L={L} {rows[-1]}", flush=True)
        for name, build in builders(L, q.detach(), k.detach()).items():
            if args.only and not any(s in name for s in args.only):
                continue
            pattern = build()
            start = time.perf_counter()  # choosing the backend plans it (tiles), once per pattern
            backend = args.backend if args.backend != "auto" else choose_backend(AttentionInputs(q, k, v, pattern)).name
            row = {"L": L, "pattern": name, "edges": pattern.num_edges,
                   "build_ms": timed(build, args.repeats), "backend": backend,
                   "plan_ms": 1e3 * (time.perf_counter() - start)}
            need_gb = pattern.num_edges * HEADS * DIM * 4 * 6 / 2**30
            if backend == "torch" and need_gb > args.max_gb:
                row.update(fwd_ms=math.nan, fwd_bwd_ms=math.nan,
                           note=f"skipped: torch reference needs ~{need_gb:.0f} GB")
            else:
                row["fwd_ms"], row["fwd_bwd_ms"] = attention_times(q, k, v, pattern, args.repeats, backend)
            if L <= args.dense_max and name in ("window w=256", "bigbird w=128 g=32 r=32"):
                masked = sdpa_times(q, k, v, args.repeats, mask=dense_mask(pattern))
                row["masked_sdpa_fwd_ms"], row["masked_sdpa_fwd_bwd_ms"] = masked
            row["speedup_fwd_bwd_vs_causal_sdpa"] = causal[1] / row["fwd_bwd_ms"]
            rows.append(row)
            print(f"  L={L} {name}: {row}", flush=True)
    return rows


def clustered_inputs(L: int, shuffle: bool, seed: int = 0):
    """Queries/keys in topic runs (see draw.demo_qk); ``shuffle`` scatters the topics over positions."""
    q, k = demo_qk(L, clusters=max(4, L // 128), dim=DIM // 2, heads=2, noise=0.8, seed=seed)
    if shuffle:
        perm = torch.randperm(L, generator=torch.Generator().manual_seed(seed))
        q, k = q[perm], k[perm]
    return q.double(), k.double()


def mass_recall(q, k, pattern: Graph) -> float:
    """Mean over rows and heads of the dense softmax mass that the pattern keeps (dense: bench-only)."""
    prob = torch.softmax(torch.einsum("ihd,jhd->hij", q, k) * q.shape[-1] ** -0.5, dim=-1)   # [H, L, L]
    kept = prob[:, pattern.row_index(), pattern.indices].sum(1)                            # [H]
    return float(kept.mean() / q.shape[0])


def run_recall(args) -> list[dict]:
    L = args.recall_length
    rows = []
    for shuffle in (False, True):
        q, k = clustered_inputs(L, shuffle)
        for name, build in recall_builders(L, q, k).items():
            p = build()
            rows.append({"inputs": "shuffled topics" if shuffle else "topic runs", "pattern": name,
                         "density": p.num_edges / L**2, "mass_kept": mass_recall(q, k, p)})
            print(f"  {rows[-1]}", flush=True)
    return rows


def recall_builders(L: int, q, k) -> dict[str, Callable[[], Graph]]:
    cand = full(Graph.empty(L))
    out: dict[str, Callable[[], Graph]] = {}
    for keep in (32, 128):
        out[f"topk k={keep}"] = lambda keep=keep: topk(q, k, None, keep)
        out[f"threshold_topk k={keep}"] = lambda keep=keep: threshold_topk(q, k, cand, keep)
        out[f"window w={keep // 2}"] = lambda keep=keep: window(L, keep // 2)
        out[f"bigbird w={keep // 4} g=4 r={keep // 4}"] = lambda b=keep // 4: bigbird(L, b, 4, b)
    for clusters in (8, 32):
        out[f"routing C={clusters}"] = lambda c=clusters: routing(q, k, c)
    for top_r in (1, 4):
        out[f"bilevel_routing 64 x top{top_r}"] = lambda r=top_r: bilevel_routing(q, k, 64, r)
    for threshold in (0.8, 0.95):
        out[f"block_select 64/8 t={threshold}"] = lambda t=threshold: block_select(q, k, 64, 8, t)
    return out


def print_table(rows: list[dict], columns: list[str]) -> None:
    """A markdown table (pastes into docs; readable in any terminal width)."""
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c)) for c in columns) + " |")


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="4096", help="comma-separated sequence lengths (4096,16384,65536)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "cpu"])
    parser.add_argument("--dense-max", type=int, default=16384, help="largest L for masked dense SDPA")
    parser.add_argument("--causal-max", type=int, default=65536, help="largest L for the causal SDPA anchor")
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip torch-reference runs needing more")
    parser.add_argument("--only", default="", help="comma-separated substrings of pattern names to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--recall", action="store_true", help="print the recall-of-attention-mass table")
    parser.add_argument("--recall-length", type=int, default=2048)
    parser.add_argument("--json", default="patterns.json", help="file name under bench/results/")
    args = parser.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.only = [s for s in args.only.split(",") if s]
    torch.set_num_threads(args.threads)
    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    if args.recall:
        rows = run_recall(args)
        print_table(rows, ["inputs", "pattern", "density", "mass_kept"])
        (results / "patterns_recall.json").write_text(json.dumps(rows, indent=1))
        return 0
    rows = run_speed(args)
    print_table(rows, ["L", "pattern", "edges", "build_ms", "backend", "plan_ms", "fwd_ms", "fwd_bwd_ms",
                       "masked_sdpa_fwd_ms", "masked_sdpa_fwd_bwd_ms", "speedup_fwd_bwd_vs_causal_sdpa"])
    meta = {"threads": args.threads, "torch": torch.__version__, "heads": HEADS, "dim": DIM}
    (results / args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
