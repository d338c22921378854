"""Fuzz campaign (issue #14): every backend of `sparse_attention` against the fp64 reference on random graphs.

For each random pattern (full attention per graph, windows, random edge lists) and each mode, each backend
runs in float32 (and the reference `torch` in float64). We count outputs, log-sum-exps and gradients (q, k, v,
bias) that differ from the fp64 reference by more than the tolerance, and NaN where the reference has none.
The tolerance is ``1e-4 * (1 + |reference|)`` plus the error of the float32 `torch` reference on the same call
(its own rounding). Modes:

- ``ordinary``: unit-normal q, k, v, bias;
- ``masked``: a third of the rows have every score at ``-inf`` (zeros and lse ``-inf`` expected);
- ``large``: logits up to ~1e4 (q and k scaled);
- ``offset``: a constant up to 1e6 added to every score (changes nothing mathematically);
- ``nan``: one NaN in k (NaN expected in exactly the rows that see that key; any other NaN counts). The
  gradients are NaN exactly where the reference's are (the NaN key's entries of dk and dv, the edges to it in
  dbias, the queries of the rows that see it); the other edges of a NaN row pass no finite gradient, so the
  finite entries are compared with the reference run with the upstream gradients of its NaN rows set to 0
  (the reference's own finite numbers there come from its stand-in denominator).

A backend that cannot run a call (`Backend.unsupported_reasons`) is counted under "n/a".

    .venv/bin/python bench/fuzz.py --graphs 20        # smoke run
    .venv/bin/python bench/fuzz.py --graphs 10000     # the campaign of issue #14 (long: run on an idle machine)

Writes bench/results/fuzz.json (``--json`` renames it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sparsegt import Graph, sparse_attention  # noqa: E402
from sparsegt.attention.api import BACKENDS, choose_backend  # noqa: E402
from sparsegt.attention.backend import AttentionInputs  # noqa: E402
from sparsegt.patterns import full, window  # noqa: E402

MODES = ("ordinary", "masked", "large", "offset", "nan")
BACKEND_NAMES = ("auto", *(b.name for b in BACKENDS))


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
    return {"q": q, "k": k, "v": v, "bias": bias, "grad_out": grads[0], "grad_lse": grads[1]}


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


def compare(got: dict, ref: dict, ref32: dict, names: tuple[str, ...]) -> tuple[int, int]:
    """(mismatches, NaN where the reference has none) over the outputs and gradients ``names``."""
    mismatches = nans = 0
    for name in names:
        expected = ref[name]
        value = got[name]
        nans += int((torch.isnan(value) & ~torch.isnan(expected)).any())
        same_inf = (value == expected) | (torch.isnan(value) & torch.isnan(expected))
        own = (ref32[name] - expected).abs().nan_to_num(0.0, posinf=0.0)
        tolerance = 1e-4 * (1 + expected.abs().nan_to_num(0.0, posinf=0.0)) + own
        bad = ~same_inf & ~((value - expected).abs() <= tolerance)
        mismatches += int(bad.any())
    return mismatches, nans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--graphs", type=int, default=200, help="random patterns per mode (issue #14: 10000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="fuzz.json")
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(args.seed)
    table = {(b, m): {"cases": 0, "mismatch": 0, "nan": 0, "n/a": 0} for b in BACKEND_NAMES for m in MODES}
    for mode in MODES:
        for _ in range(args.graphs):
            g = random_pattern(gen)
            t = make_inputs(g, mode, gen)
            ref = run(g, t, "torch", torch.float64), run(g, t, "torch", torch.float32)
            kernel_ref = ref
            if mode == "nan":  # a kernel's NaN row passes no finite gradient (see the module docstring)
                quiet = with_quiet_nan_rows(t, torch.isnan(ref[0]["lse"]))
                kernel_ref = run(g, quiet, "torch", torch.float64), run(g, quiet, "torch", torch.float32)
            probe = {n: t[n].float() for n in ("q", "k", "v", "bias")}
            inputs = AttentionInputs(probe["q"], probe["k"], probe["v"], g, probe["bias"])
            for backend in BACKEND_NAMES:
                row = table[(backend, mode)]
                chosen = choose_backend(inputs) if backend == "auto" else next(b for b in BACKENDS if b.name == backend)
                if backend != "auto" and chosen.unsupported_reasons(inputs):
                    row["n/a"] += 1
                    continue
                expected, expected32 = ref if chosen.name == "torch" else kernel_ref
                mismatches, nans = compare(run(g, t, backend, torch.float32), expected, expected32, tuple(expected))
                row["cases"] += 1
                row["mismatch"] += int(mismatches > 0)
                row["nan"] += int(nans > 0)
    print(f"{'backend':<8} {'mode':<9} {'cases':>7} {'mismatch':>9} {'NaN':>5} {'n/a':>6}")
    for (backend, mode), row in table.items():
        print(f"{backend:<8} {mode:<9} {row['cases']:>7} {row['mismatch']:>9} {row['nan']:>5} {row['n/a']:>6}")
    out = Path(__file__).resolve().parent / "results" / args.json
    out.write_text(json.dumps({"graphs_per_mode": args.graphs, "seed": args.seed,
                               "rows": [{"backend": b, "mode": m, **r} for (b, m), r in table.items()]}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
