"""Sparse attention on a GPU: the Triton backend against PyG's edge softmax, FlexAttention and dense SDPA, in
one run (what `bench/gpu.sh` prints).

    python bench/gpu_attention.py                      # ER N=262,144 degree 16, window N=16,384 w=128; H=4, D=32
    python bench/gpu_attention.py --er-nodes 65536 --window-nodes 8192 --repeats 5
    TRITON_INTERPRET=1 python bench/gpu_attention.py --device cpu --er-nodes 64 --window-nodes 64 --window 4 \\
        --repeats 1 --methods triton,pyg,sdpa          # a smoke run of this script without a GPU

Methods: ``triton`` this library (``sparse_attention(..., backend="triton")``); ``pyg`` the edge-softmax
path of PyG's TransformerConv (gather q_i, k_j per edge, ``torch_geometric.utils.softmax``, multiply v_j,
``index_add``): O(E*H*D) memory; ``flex`` FlexAttention compiled with a block mask (window only: an
arbitrary graph needs its N x N adjacency in the mask function); ``sdpa`` dense
``scaled_dot_product_attention`` with an N x N boolean mask (skipped when the mask and scores would not fit).

Per method: median milliseconds of a forward and of a forward + backward (CUDA events after a warm-up), and
the peak memory above the inputs (``torch.cuda.max_memory_allocated``), with ``x PyG`` = PyG's time over
the method's, same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsegt import Graph, sparse_attention  # noqa: E402
from sparsegt.patterns import window  # noqa: E402

METHODS = ("triton", "pyg", "flex", "sdpa")
DENSE_BUDGET = 40 * 2**30  # bytes a dense method may need (mask + scores) before it is skipped


def er_pattern(n: int, degree: int, device: str) -> Graph:
    gen = torch.Generator().manual_seed(0)
    edges = torch.randint(0, n, (2, n * degree), generator=gen)
    return Graph.from_edge_index(edges, n, remove_duplicates=True).to(device)


def pyg_attention(q, k, v, pattern: Graph):
    from torch_geometric.utils import softmax

    row, col = pattern.row_index(), pattern.indices
    scores = (q[row] * k[col]).sum(-1) * q.shape[-1] ** -0.5
    alpha = softmax(scores, row, num_nodes=q.shape[0])
    return torch.zeros_like(v).index_add_(0, row, alpha[..., None] * v[col])


def dense_mask(pattern: Graph) -> torch.Tensor:
    mask = torch.zeros(pattern.num_nodes, pattern.num_cols, dtype=torch.bool, device=pattern.device)
    mask[pattern.row_index(), pattern.indices] = True
    return mask


def sdpa_attention(mask):
    def run(q, k, v, pattern):
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1),
                                                               v.transpose(0, 1), attn_mask=mask)
        return out.transpose(0, 1)
    return run


def flex_attention_window(n: int, w: int, device: str):
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    block_mask = create_block_mask(lambda b, h, q_idx, kv_idx: (q_idx - kv_idx).abs() <= w, None, None, n, n,
                                   device=device)
    compiled = torch.compile(flex_attention)

    def run(q, k, v, pattern):
        out = compiled(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                       block_mask=block_mask)
        return out[0].transpose(0, 1)
    return run


def ours(q, k, v, pattern):
    return sparse_attention(q, k, v, pattern, backend="triton")


def measure(run, pattern: Graph, heads: int, dim: int, repeats: int, device: str) -> dict[str, float]:
    gen = torch.Generator(device=device).manual_seed(1)
    q, k, v = (torch.randn(pattern.num_nodes, heads, dim, device=device, generator=gen).requires_grad_()
               for _ in range(3))
    grad = torch.randn(pattern.num_nodes, heads, dim, device=device, generator=gen)

    def forward():
        with torch.no_grad():
            run(q, k, v, pattern)

    def forward_backward():
        out = run(q, k, v, pattern)
        torch.autograd.grad(out, (q, k, v), grad)

    result = {}
    for name, step in (("fwd", forward), ("fwd+bwd", forward_backward)):
        step()  # warm-up: compilation, autotuning, plans
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        result[name + " ms"] = statistics.median(times) * 1e3
        if device == "cuda":
            result[name + " MiB"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return result


def table(title: str, rows: dict[str, dict[str, float]]) -> str:
    columns = ["fwd ms", "fwd+bwd ms", "fwd MiB", "fwd+bwd MiB"]
    lines = [f"\n{title}", "| method | " + " | ".join(columns) + " | x PyG (fwd+bwd) |",
             "|---" * (len(columns) + 2) + "|"]
    pyg = rows.get("pyg", {}).get("fwd+bwd ms")
    for method, values in rows.items():
        if isinstance(values, str):
            lines.append(f"| {method} | {values} |" + " |" * len(columns))
            continue
        cells = [f"{values[c]:.2f}" if c in values else "-" for c in columns]
        ratio = f"{pyg / values['fwd+bwd ms']:.1f}x" if pyg else "-"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def run_case(title: str, pattern: Graph, methods: list[str], args, flex=None) -> None:
    rows: dict[str, dict[str, float] | str] = {}
    dense_bytes = pattern.num_nodes * pattern.num_cols * (1 + 4 * args.heads)
    for method in methods:
        if method == "flex" and flex is None:
            rows[method] = "skipped: an arbitrary graph needs its N x N adjacency inside the mask function"
            continue
        if method == "sdpa" and dense_bytes > DENSE_BUDGET:
            rows[method] = f"skipped: mask and scores need {dense_bytes / 2**30:.0f} GiB"
            continue
        run = {"triton": ours, "pyg": pyg_attention, "flex": flex,
               "sdpa": sdpa_attention(dense_mask(pattern)) if method == "sdpa" else None}[method]
        try:
            rows[method] = measure(run, pattern, args.heads, args.dim, args.repeats, args.device)
        except (RuntimeError, torch.OutOfMemoryError) as err:  # report and go on: one table per run
            rows[method] = f"failed: {str(err).splitlines()[0][:100]}"
            if args.device == "cuda":
                torch.cuda.empty_cache()
    print(table(title, rows), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--er-nodes", type=int, default=262_144)
    parser.add_argument("--degree", type=int, default=16)
    parser.add_argument("--window-nodes", type=int, default=16_384)
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (Triton interpreter)"
    print(f"sparse attention on {where}, torch {torch.__version__}, H={args.heads}, D={args.dim}, float32, "
          f"medians of {args.repeats}")
    er = er_pattern(args.er_nodes, args.degree, args.device)
    run_case(f"Erdos-Renyi N={args.er_nodes:,}, degree {args.degree} (E={er.num_edges:,})", er, methods, args)
    band = window(args.window_nodes, args.window).to(args.device)
    flex = flex_attention_window(args.window_nodes, args.window, args.device) if "flex" in methods else None
    run_case(f"window N={args.window_nodes:,}, |i-j| <= {args.window} (E={band.num_edges:,})", band, methods, args,
             flex)


if __name__ == "__main__":
    main()
