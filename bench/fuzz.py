"""Fuzz campaign (issue #14): every backend of `sparse_attention` against the fp64 reference on random graphs.

For each random pattern (full attention per graph, windows, random edge lists) and each mode, each backend
runs in float32 and the reference `torch` runs in float64 on the same inputs. We count, per backend and mode,
the cases where an output, log-sum-exp or gradient (q, k, v, bias) differs from the fp64 reference by more than
the tolerance, and the cases with a NaN where the reference has none. Modes:

- ``ordinary``: unit-normal q, k, v, bias;
- ``masked``: a third of the rows have every score at ``-inf`` (zeros and lse ``-inf`` expected);
- ``large``: logits up to ~1e4 (q and k scaled);
- ``offset``: a constant up to 1e6 added to every score (changes nothing mathematically);
- ``nan``: one NaN in k (NaN expected in exactly the rows that see that key; any other NaN counts). The
  gradients are NaN exactly where the reference's are (the NaN key's entries of dk and dv, the edges to it in
  dbias, the queries of the rows that see it); the other edges of a NaN row pass no finite gradient, so the
  finite entries are compared with the reference run with the upstream gradients of its NaN rows set to 0
  (the reference's own finite numbers there come from its stand-in denominator).

**The yardstick** (issue #14: "fp32: 1e-4 relative to the fp64 reference plus its own rounding"). The inputs
are drawn in float64 and rounded to float32 once, so every backend and the fp64 reference see the same numbers:
what is measured is the arithmetic of a backend, not the rounding of its inputs. An entry ``y`` of a backend
passes where

    |y - ref64| <= 1e-4 * (1 + |ref64|) + B(y)

``B`` is the fp32 rounding of the scores carried to ``y``. A float32 score ``s_e = scale * q.k + bias`` is off
by up to ``rho * m_e``, with ``m_e = scale * sum_d |q_d k_d| + |bias_e|`` (the size of the terms it sums) and
``rho`` the fp32 reference's own relative score rounding, measured per call as the largest
``|s32_e - s64_e| / m_e`` over all edges and heads, doubled (a kernel sums in another order), and at least
``2 * sqrt(D + 3) * 2**-24``. The reference's rounding is taken per tensor, not per element: at 1e4 logits a
score is off by ~1e-3 in any float32 code, and which rows that lands on differs from one code to another; an
element-wise "reference error" is small by chance exactly where another code's rounding shows. Which rows it
matters on is not chance: a score error ``delta_e`` moves the outputs to first order by
``d out_r = sum_e p_e (v_e - out_r) delta_e``, ``d lse_r = sum_e p_e delta_e``,
``|d p_e| <= p_e (eps_e + sum_f p_f eps_f)`` and, through ``ds_e = p_e (g_r.(v_e - out_r) + glse_r)``, the
gradients (``dbias = ds``, ``dq = scale sum ds k``, ``dk = scale sum ds q``, ``dv = sum p g``); ``B`` is that
first-order bound with ``|delta_e| <= eps_e = rho * m_e``, computed in float64 from the reference. It is large
only on rows whose top scores are near-tied and large (logits of 1e4, offsets of 1e6, where float32 itself
cannot do better); on ordinary inputs it is ~1e-6 and the 1e-4 term decides.

Beside the pass/fail count, ``worse2x`` counts the cases where a backend's largest error on some tensor is more
than twice the fp32 reference's largest error on it (plus 1e-6 * (1 + max |ref64|)): a measure of how far a
kernel is from the reference's own accuracy, reported, not failed.

A backend that cannot run a call (`Backend.unsupported_reasons`) is counted under "n/a". The modes interleave
(graph i of every mode before graph i + 1), so a run stopped by ``--minutes`` covers every mode alike.

    .venv/bin/python bench/fuzz.py --graphs 20        # smoke run
    .venv/bin/python bench/fuzz.py --graphs 10000     # the campaign of issue #14 (20 min on one core of a loaded VM)

Writes bench/results/fuzz.json (``--json`` renames it), also every 100 graphs while it runs.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsegt import Graph, sparse_attention  # noqa: E402
from sparsegt.attention.api import BACKENDS, choose_backend  # noqa: E402
from sparsegt.attention.backend import AttentionInputs  # noqa: E402
from sparsegt.patterns import full, window  # noqa: E402

MODES = ("ordinary", "masked", "large", "offset", "nan")
BACKEND_NAMES = ("auto", *(b.name for b in BACKENDS))
FP32_UNIT = 2.0**-24


def random_pattern(gen: torch.Generator) -> Graph:
    kind = int(torch.randint(0, 3, (1,), generator=gen))
    if kind == 0:
        sizes = torch.randint(1, 48, (int(torch.randint(1, 4, (1,), generator=gen)),), generator=gen).tolist()
        return full(Graph.batch([Graph.empty(n) for n in sizes]))
    n = int(torch.randint(1, 300, (1,), generator=gen))
    if kind == 1:
        return window(n, int(torch.randint(1, 40, (1,), generator=gen)))
    edges = int(torch.randint(0, 8 * n, (1,), generator=gen))
    return Graph.from_edge_index(torch.randint(0, n, (2, edges), generator=gen), n, remove_duplicates=True)


def make_inputs(g: Graph, mode: str, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """q, k, v, bias and the upstream gradients, float64 holding float32 values (rounded once, here)."""
    heads, dim = int(torch.randint(1, 4, (1,), generator=gen)), int(torch.randint(1, 40, (1,), generator=gen))
    q = torch.randn(g.num_nodes, heads, dim, generator=gen, dtype=torch.float64)
    k = torch.randn(g.num_cols, heads, dim, generator=gen, dtype=torch.float64)
    v = torch.randn(g.num_cols, heads, dim, generator=gen, dtype=torch.float64)
    bias = torch.randn(g.num_edges, heads, generator=gen, dtype=torch.float64)
    if mode == "masked":
        rows = torch.rand(g.num_nodes, generator=gen) < 1 / 3
        bias[rows[g.row_index()]] = float("-inf")
    elif mode == "large":
        scale = (1e4 * dim**0.5 / dim) ** 0.5 * float(torch.rand(1, generator=gen))
        q, k = q * scale, k * scale
    elif mode == "offset":
        bias = bias + float(10 ** (6 * torch.rand(1, generator=gen)))
    elif mode == "nan" and k.numel():
        k[int(torch.randint(0, g.num_cols, (1,), generator=gen)), 0, 0] = float("nan")
    grads = (torch.randn(g.num_nodes, heads, dim, generator=gen, dtype=torch.float64),
             torch.randn(g.num_nodes, heads, generator=gen, dtype=torch.float64))
    tensors = {"q": q, "k": k, "v": v, "bias": bias, "grad_out": grads[0], "grad_lse": grads[1]}
    return {name: value.float().double() for name, value in tensors.items()}


def run(g: Graph, t: dict[str, torch.Tensor], backend: str, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    leaves = {name: t[name].detach().to(dtype).clone().requires_grad_() for name in ("q", "k", "v", "bias")}
    out, lse = sparse_attention(leaves["q"], leaves["k"], leaves["v"], g, bias=leaves["bias"], return_lse=True,
                                backend=backend)
    finite_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    (out * t["grad_out"].to(dtype)).sum().add((finite_lse * t["grad_lse"].to(dtype)).sum()).backward()
    result = {"out": out.detach(), "lse": lse.detach()}
    result.update({f"d{name}": leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                   for name, leaf in leaves.items()})
    return {name: value.double() for name, value in result.items()}


def with_quiet_nan_rows(t: dict[str, torch.Tensor], nan_rows: torch.Tensor) -> dict[str, torch.Tensor]:
    """``t`` with the upstream gradients of the rows ``nan_rows`` [Nq, H] set to 0: what the reference's gradient
    is compared with in mode ``nan``."""
    return {**t, "grad_out": t["grad_out"].masked_fill(nan_rows[..., None], 0.0),
            "grad_lse": t["grad_lse"].masked_fill(nan_rows, 0.0)}


def score_rounding_bound(g: Graph, t: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``B`` of the module docstring for each of ``out, lse, dq, dk, dv, dbias``: the first-order effect of float32
    score rounding, in float64 (NaN inputs count as 0; their rows are compared NaN for NaN)."""
    q, k, v, bias = (t[n].nan_to_num(0.0, 0.0, 0.0) for n in ("q", "k", "v", "bias"))
    g_out, g_lse = t["grad_out"], t["grad_lse"]
    rows, cols = g.row_index(), g.indices.long()
    dim = q.shape[-1]
    scale = dim**-0.5
    terms = q[rows] * k[cols]  # [E, H, D]
    s64 = terms.sum(-1) * scale + bias
    s32 = (q[rows].float() * k[cols].float()).sum(-1) * scale + bias.float()  # as the fp32 reference computes it
    size = terms.abs().sum(-1) * scale + bias.abs()  # m_e [E, H]
    measured = ((s32.double() - s64).abs() / size.clamp_min(1e-300)).amax().item() if size.numel() else 0.0
    rho = 2 * max(measured, math.sqrt(dim + 3) * FP32_UNIT)
    eps = rho * size
    lse = ref["lse"].nan_to_num(0.0)
    p = torch.exp(s64 - lse[rows]).nan_to_num(0.0, 0.0, 0.0)  # -inf rows and scores: 0
    out = ref["out"].nan_to_num(0.0)
    n_rows, n_cols = q.shape[0], k.shape[0]

    def per_row(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((n_rows, *x.shape[1:]), dtype=x.dtype).index_add_(0, rows, x)

    def per_col(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((n_cols, *x.shape[1:]), dtype=x.dtype).index_add_(0, cols, x)

    b_lse = per_row(p * eps)  # [N, H]
    b_out = per_row((p * eps)[..., None] * (v[cols] - out[rows]).abs())  # [N, H, D]
    dp = p * (eps + b_lse[rows])  # bound on |d p_e|
    a = (g_out[rows] * (v[cols] - out[rows])).sum(-1) + g_lse[rows]
    b_ds = dp * a.abs() + p * (g_out.abs() * b_out).sum(-1)[rows]  # [E, H]
    bounds = {"out": b_out, "lse": b_lse, "dbias": b_ds,
              "dq": scale * per_row(b_ds[..., None] * k[cols].abs()),
              "dk": scale * per_col(b_ds[..., None] * q[rows].abs()),
              "dv": per_col(dp[..., None] * g_out.abs()[rows])}
    return {name: value.nan_to_num(0.0, 0.0, 0.0) for name, value in bounds.items()}


def compare(got: dict, ref: dict, ref32: dict, bound: dict) -> tuple[bool, bool, bool, str]:
    """(mismatch, NaN where the reference has none, worse than 2x the fp32 reference, worst tensor) over all
    outputs and gradients; the worst tensor is the one furthest beyond its tolerance (for the record)."""
    mismatch = nan = worse = False
    worst, worst_excess = "", 0.0
    for name, expected in ref.items():
        value = got[name]
        nan |= bool((torch.isnan(value) & ~torch.isnan(expected)).any())
        same = (value == expected) | (torch.isnan(value) & torch.isnan(expected))
        magnitude = expected.abs().nan_to_num(0.0, posinf=0.0)
        tolerance = 1e-4 * (1 + magnitude) + bound[name]
        error = (value - expected).abs().masked_fill(same, 0.0)
        bad = ~same & ~(error <= tolerance)
        mismatch |= bool(bad.any())
        if bad.any():
            excess = float(((error - tolerance) / tolerance).nan_to_num(float("inf")).amax())
            if excess > worst_excess:
                worst, worst_excess = name, excess
        if expected.numel():
            own = (ref32[name] - expected).abs().masked_fill(same | torch.isnan(expected), 0.0)
            ours = error.nan_to_num(float("inf"))
            floor = 1e-6 * (1 + float(magnitude.amax()))
            worse |= float(ours.amax()) > 2 * float(own.nan_to_num(0.0, 0.0, 0.0).amax()) + floor
    return mismatch, nan, worse, worst


def write(path: Path, args: argparse.Namespace, done: int, seconds: float, table: dict, failures: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "graphs_per_mode_requested": args.graphs, "graphs_per_mode_done": done, "seed": args.seed,
        "seconds": round(seconds, 1), "torch": torch.__version__, "machine": platform.platform(),
        "tolerance": "|y - ref64| <= 1e-4 * (1 + |ref64|) + B(y) (bench/fuzz.py docstring)",
        "rows": [{"backend": b, "mode": m, **r} for (b, m), r in table.items()],
        "failures": failures[:200]}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--graphs", type=int, default=200, help="random patterns per mode (issue #14: 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop after this many minutes (at a whole graph of every mode) and record how many ran")
    parser.add_argument("--json", default="fuzz.json", help="file name under bench/results (or a path)")
    args = parser.parse_args()
    out_path = Path(__file__).resolve().parent / "results" / args.json
    gen = torch.Generator().manual_seed(args.seed)
    table = {(b, m): {"cases": 0, "mismatch": 0, "nan": 0, "worse2x": 0, "n/a": 0}
             for b in BACKEND_NAMES for m in MODES}
    failures: list[dict] = []
    start, done = time.monotonic(), 0
    for index in range(args.graphs):
        if args.minutes is not None and time.monotonic() - start > 60 * args.minutes:
            break
        for mode in MODES:
            g = random_pattern(gen)
            t = make_inputs(g, mode, gen)
            ref = run(g, t, "torch", torch.float64), run(g, t, "torch", torch.float32)
            kernel_t, kernel_ref = t, ref
            if mode == "nan":  # a kernel's NaN row passes no finite gradient (see the module docstring)
                kernel_t = with_quiet_nan_rows(t, torch.isnan(ref[0]["lse"]))
                kernel_ref = run(g, kernel_t, "torch", torch.float64), run(g, kernel_t, "torch", torch.float32)
            bounds = {"torch": score_rounding_bound(g, t, ref[0])}
            bounds["kernel"] = bounds["torch"] if mode != "nan" else score_rounding_bound(g, kernel_t, kernel_ref[0])
            probe = {n: t[n].float() for n in ("q", "k", "v", "bias")}
            inputs = AttentionInputs(probe["q"], probe["k"], probe["v"], g, probe["bias"])
            for backend in BACKEND_NAMES:
                row = table[(backend, mode)]
                chosen = choose_backend(inputs) if backend == "auto" else next(b for b in BACKENDS if b.name == backend)
                if backend != "auto" and chosen.unsupported_reasons(inputs):
                    row["n/a"] += 1
                    continue
                kind = "torch" if chosen.name == "torch" else "kernel"
                expected, expected32 = ref if kind == "torch" else kernel_ref
                got = ref[1] if backend == "torch" else run(g, t, backend, torch.float32)
                mismatch, nan, worse, worst = compare(got, expected, expected32, bounds[kind])
                row["cases"] += 1
                row["mismatch"] += mismatch
                row["nan"] += nan
                row["worse2x"] += worse
                if mismatch or nan:
                    failures.append({"backend": backend, "mode": mode, "graph": index, "nan": nan, "worst": worst,
                                     "nodes": g.num_nodes, "edges": g.num_edges, "shape": list(t["q"].shape[1:])})
        done = index + 1
        if done % 100 == 0:
            write(out_path, args, done, time.monotonic() - start, table, failures)
            print(f"{done} graphs per mode, {time.monotonic() - start:.0f} s", flush=True)
    seconds = time.monotonic() - start
    print(f"{done} graphs per mode (of {args.graphs} asked), {seconds:.0f} s")
    print(f"{'backend':<8} {'mode':<9} {'cases':>7} {'mismatch':>9} {'NaN':>5} {'>2x fp32':>9} {'n/a':>6}")
    for (backend, mode), row in table.items():
        print(f"{backend:<8} {mode:<9} {row['cases']:>7} {row['mismatch']:>9} {row['nan']:>5} {row['worse2x']:>9}"
              f" {row['n/a']:>6}")
    write(out_path, args, done, seconds, table, failures)
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
