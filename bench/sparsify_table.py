"""docs/sparsify.md's Results table (issue #19): every sparsification method trained on one real task, same seed
and same budget as a plain baseline, with the sparsity it reached, the FLOPs and the wall-clock time it saved, the
metric before and after and the paper's claim beside it.

    .venv/bin/python bench/sparsify_table.py [--epochs 15] [--finetune-epochs 5] [--methods teddy,gtsp,...]
    .venv/bin/python bench/sparsify_table.py --smoke --out /tmp/s.json      # pattern-tiny, 2-layer model, 1 epoch

Writes bench/results/sparsify_table.json (``--out``) and prints the rows in the format of the docs table.

Task: PATTERN (``pattern-small``: 1,000 / 200 / 200 graphs of ~117 nodes; weighted accuracy, in %) with the
``gps-pattern`` preset's model (GraphGPS: 6 layers of GatedGCN + full attention, 64 wide, 4 heads, LapPE 16) and
optimiser, for ``--epochs`` epochs (warm-up 1 epoch, the rate updated every step), seed 0. The baseline and every
method train for the same epochs from the same seed (the top-k rows and GTSP from the baseline's very initial
weights: their activations have no parameters and GTSP's gates start open). Rows:

- TEDDY (edges + weights): the train options ``data.trim_edges=0.7 train.weight_sparsity=0.5`` (`train_run`);
- Top-k FFN (exact): ``model.ffn_topk=0.08``; Statistical top-k (FFN, attention): ``model.ffn_topk=0.08
  model.ffn_topk_rule=statistical model.attention=topk model.topk=16 model.topk_rule=statistical`` (every
  attention keeps ~16 of its full pattern's keys per query by Spark's statistical top-k);
- GTSP: the train option ``train.gtsp`` (targets edges 0.3, heads 0.5, layers 0.25, weights 0.5; the `Trainer`
  adds ``masked.penalty()`` to the loss and steps the gates at ``--gate-lr-scale`` times the rate), then `prune`d;
- Combiner: ``model.attention=combiner model.combiner_block=11``, every GPS attention `CombinerAttention` over
  contiguous blocks of 11 node ids (PATTERN's node order is random, so the regions are random parts of a graph);
- GIN-Attention / Sparse GIN fine-tuning: the trained baseline, frozen, with GIN adapters of width 8
  (``train.init_from=<baseline> train.gin_adapter=8``), fine-tuned ``--finetune-epochs``; beside it the same
  budget of ordinary full fine-tuning (the paper compares with LoRA, which this library does not have).

- Density-normalised edge loss: an edge-level task, ``pattern-edges-small`` (PATTERN's graphs, an edge labelled
  foreground when both its ends are pattern nodes: 0.1-16% of a graph's edges), the same model trained with the
  usual class-weighted cross-entropy and with ``train.loss=density_normalized_edge``; besides the weighted
  accuracy, the foreground recall on the sparsest third of the test graphs (the graphs the usual loss neglects).

Measured per row, on the model of the best validation epoch (``best.pt``):

- metric: the test split, whole-split weighted accuracy (the trainer's ``test_metric``), and the expected
  calibration error (15 bins) for the top-k claim;
- sparsity: counted from the data or the model: edges kept by the trimmed graphs, zero entries of the weight
  tensors, FFN activations that are zero (`activation_density`), attention entries the kernel received, heads,
  layers and weights left in the pruned model, parameters that train;
- FLOPs per graph over the first ``--time-graphs`` test graphs (eval forward): every matrix product that runs
  (2 M K N, counted at dispatch) plus the attention kernel, 2 E H D for the scores and 2 E H Dv for the weighted
  sum (E: entries of the pattern it received), plus 2 E_c H D for the scores of the E_c candidates a top-k
  selection ranks. "zeros skipped" counts only products of two nonzero operands,
  2 #{(m, k, n): a_mk != 0 and b_kn != 0}: what a kernel that skips zero weights or activations would run. Not
  counted: elementwise work, norms, softmax, the per-edge gating of GatedGCN (all O(N C) or O(E C));
- time: training step (forward, loss, backward, clipping, optimiser step, and the method's own extra work:
  projection, penalty) in ms per batch, and inference in ms per graph; medians over ``--rounds`` rounds, the
  baseline's and the method's calls interleaved round by round in this process, so that a change of load hits
  both alike.

Time on the idle 2-core machine, estimated (not yet measured): a ``gps-pattern`` step of 32 graphs takes ~0.5 s
there (bench/results/preset_steps.json), so an epoch of pattern-small (32 steps, 32 batches of BatchNorm
recalibration, validation, test) ~25 s; GTSP's masked model steps 1.55x slower and the others within 0.97-1.06x of
the baseline (one loaded thread, full-size model, 32 PATTERN graphs). Seven trainings of 15 epochs (five on
pattern-small, two on pattern-edges-small), GTSP's 15, 2 x 5 fine-tuning epochs and ~5 min of data, counting and
timing: about an hour.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads skew timings

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import sparsegt.attention  # noqa: E402
import sparsegt.patterns  # noqa: E402
from sparsegt.graph import Graph  # noqa: E402
from sparsegt.nn import SparseMultiheadAttention, activation_density  # noqa: E402
from sparsegt.sparsify import GTSPTargets, prune  # noqa: E402
from sparsegt.sparsify.gtsp import EdgeGateScorer, GatedLayer  # noqa: E402
from sparsegt.train import apply_overrides, get_preset, train_run  # noqa: E402
from sparsegt.train.checkpoint import load_checkpoint  # noqa: E402
from sparsegt.train.config import GTSPConfig, RunConfig, config_to_dict  # noqa: E402
from sparsegt.train.l0_projection import L0BallProjection, weight_matrices  # noqa: E402
from sparsegt.train.losses import make_loss  # noqa: E402
from sparsegt.train.metrics import compute_metric  # noqa: E402
from sparsegt.train.prediction import predict_batches, select_prediction  # noqa: E402
from sparsegt.train.run import build_dataset, build_model  # noqa: E402
from sparsegt.train.trainer import seed_everything  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "sparsify_table.json"
METHODS = ("teddy", "topk", "statistical", "gtsp", "combiner", "gin", "density")

TEDDY_EDGES_KEPT, TEDDY_WEIGHT_SPARSITY = 0.7, 0.5
FFN_KEEP = 0.08            # Spark's 8% of FFN units; the same k for exact top-k, so the two rules compare
ATTENTION_KEYS = 16        # keys per query of the statistical top-k attention (of ~117 per PATTERN graph)
GTSP_TARGETS = GTSPTargets(edges=0.3, heads=0.5, layers=0.25, weights=0.5)   # docs/sparsify.md's example
COMBINER_BLOCK = 11        # ~sqrt(117): O(N sqrt N) entries
GIN_HIDDEN = 8

# the paper's claim, as docs/sparsify.md's Results table states it
CLAIMS = {
    "teddy": "beats iterative GLT (UGS, WD-GLT) at equal sparsity",
    "topk": "robustness and calibration gains at small k",
    "statistical": "8% FFN active, <= 256 keys, 2.5x fewer FLOPs",
    "gtsp": "-30% FLOPs, +1.8% AUC on OGBG-HIV",
    "combiner": "full attention at O(L sqrt L) / O(L log L) cost",
    "gin": "better generalisation than LoRA at fine-tuning",
    "density": "> 2x on some zero/few-shot SGG metrics",
}
TITLES = {
    "teddy": "TEDDY (edges + weights)",
    "topk": "Top-k FFN (exact)",
    "statistical": "Statistical top-k (FFN, attention)",
    "gtsp": "GTSP (entries, heads, layers, weights)",
    "combiner": "Combiner",
    "gin": "GIN-Attention / Sparse GIN fine-tuning",
    "density": "Density-normalised edge loss",
}
# which time the paper claims to save ("train", "inference"), or None when its claim is not about time
CLAIMED_TIME = {"teddy": "train", "topk": None, "statistical": "inference", "gtsp": "inference",
                "combiner": "inference", "gin": None, "density": None}
# the parts of a claim this run cannot test
NOT_TESTED = {
    "teddy": "not compared: the iterative baselines (UGS, WD-GLT) are not implemented here",
    "topk": "robustness to noisy labels and corrupted inputs not measured; calibration: see the ECE",
    "statistical": "FFN: the zeros are computed, then masked (Spark's predictor is left out), so its FLOPs fall only "
                   "for a kernel that skips them; attention: every candidate's score is computed to select the keys "
                   "(counted)",
    "gtsp": "pruned weights are zeros in dense tensors: their FLOPs fall only for a kernel that skips them",
    "combiner": "regions are random blocks (PATTERN's node order is random), not the paper's structured ones",
    "gin": "LoRA is not implemented: compared with full fine-tuning for the same budget instead",
    "density": "no scene graphs here: an edge task on PATTERN (pattern-edges, foreground density 0.1-16% a graph); "
               "the foreground recall on the sparsest third of the test graphs stands in for the rare cases",
}


# ---------------------------------------------------------------------------------------------- configs
def base_config(args: argparse.Namespace) -> RunConfig:
    """The baseline run: ``gps-pattern`` on pattern-small (or, ``--smoke``, a 2-layer 16-wide model on
    pattern-tiny), ``args.epochs`` epochs, warm-up 1 epoch with the rate set every step (a short budget must not
    spend its first epoch at 1e-6 of the rate, as the preset's per-epoch warm-up does)."""
    config = get_preset("gps-pattern")
    config.name = "sparsify-table"
    config.data.root = args.data_root
    overrides = [f"data.name={'pattern-tiny' if args.smoke else 'pattern-small'}", f"train.epochs={args.epochs}",
                 "train.warmup_epochs=1", "train.lr_update=step", "train.loggers=[]", f"train.seed={args.seed}",
                 "train.device=cpu"]  # the table is the CPU machine's; the timings here do not synchronise a GPU
    if args.smoke:
        overrides += ["model.num_layers=2", "model.hidden=16", "model.lap_pe.k=4", "model.lap_pe.dim=4",
                      "train.bn_recalibration=2", "train.warmup_epochs=0"]
    return apply_overrides(config, overrides)


def with_overrides(config: RunConfig, overrides: list[str]) -> RunConfig:
    return apply_overrides(copy.deepcopy(config), overrides)


# ---------------------------------------------------------------------------------------------- counting
_PRODUCTS = {  # aten op -> its two matrix operands [.., M, K] and [.., K, N]
    torch.ops.aten.mm.default: lambda args: (args[0], args[1]),
    torch.ops.aten.addmm.default: lambda args: (args[1], args[2]),
    torch.ops.aten.bmm.default: lambda args: (args[0], args[1]),
    torch.ops.aten.baddbmm.default: lambda args: (args[1], args[2]),
}


class MatmulFlops(TorchDispatchMode):
    """FLOPs of the matrix products that run while active: ``executed`` 2 M K N (per batch of a bmm), and
    ``nonzero`` 2 #{(m, k, n): a_mk != 0 and b_kn != 0} = 2 sum_k nnz(a[:, k]) nnz(b[k, :]) (zeros skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.executed, self.nonzero = 0, 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        operands = _PRODUCTS.get(func)
        if operands is not None:
            a, b = operands(args)
            self.executed += 2 * a.numel() * b.shape[-1]
            self.nonzero += 2 * int(((a != 0).sum(-2) * (b != 0).sum(-1)).sum())
        return func(*args, **(kwargs or {}))


@dataclass
class AttentionCalls:
    """What the attention kernel received while `counting_attention` was active: entries, the rows (queries) of
    its patterns, and FLOPs: 2 E H D scores + 2 E H Dv weighted sum per kernel call, plus 2 E_c H D for the scores
    of the E_c candidates a content-based selection (`topk`, `threshold_topk`) ranks."""

    entries: int = 0
    rows: int = 0
    flops: int = 0


@contextlib.contextmanager
def _swapped(source: Any, name: str, replacement: Callable[..., Any]) -> Iterator[None]:
    """The function ``source.name``, wherever a sparsegt module holds it under that name, replaced by
    ``replacement(function)`` in the block and restored on exit."""
    original = getattr(source, name)
    modules = [m for key, m in list(sys.modules.items())
               if key.startswith("sparsegt") and getattr(m, name, None) is original]
    for module in modules:
        setattr(module, name, replacement(original))
    try:
        yield
    finally:
        for module in modules:
            setattr(module, name, original)


@contextlib.contextmanager
def counting_attention(calls: AttentionCalls) -> Iterator[AttentionCalls]:
    """Count every call of the attention kernel and of the content-based key selections made by sparsegt's modules
    in the block."""
    def kernel(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(q: Tensor, k: Tensor, v: Tensor, pattern: Graph, **kwargs: Any) -> Any:
            calls.entries += pattern.num_edges
            calls.rows += pattern.num_nodes
            calls.flops += 2 * pattern.num_edges * q.shape[1] * (q.shape[2] + v.shape[2])
            return original(q, k, v, pattern, **kwargs)
        return counted

    def selection(original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(q: Tensor, k: Tensor, candidates: Graph, *args: Any, **kwargs: Any) -> Any:
            calls.flops += 2 * candidates.num_edges * q.shape[1] * q.shape[2]
            return original(q, k, candidates, *args, **kwargs)
        return counted

    with _swapped(sparsegt.attention, "sparse_attention", kernel), _swapped(sparsegt.patterns, "topk", selection), \
            _swapped(sparsegt.patterns, "threshold_topk", selection):
        yield calls


def count_forward(model: nn.Module, batches: list[Graph]) -> dict[str, float]:
    """Per graph, eval mode: FLOPs executed and with zeros skipped (matrix products + attention kernel), attention
    entries and keys per query."""
    graphs = sum(b.num_graphs for b in batches)
    matmul, attention = MatmulFlops(), AttentionCalls()
    model.eval()
    with torch.no_grad(), counting_attention(attention), matmul:
        for batch in batches:
            model(batch)
    return {"flops_executed": (matmul.executed + attention.flops) / graphs,
            "flops_zeros_skipped": (matmul.nonzero + attention.flops) / graphs,
            "attention_entries": attention.entries / graphs,
            "keys_per_query": attention.entries / max(attention.rows, 1)}


def calibration_error(logits: Tensor, target: Tensor, bins: int = 15) -> float:
    """Expected calibration error of the softmax's top class: sum_b |B_b|/n |accuracy_b - confidence_b|."""
    confidence, predicted = torch.softmax(logits.float(), -1).max(-1)
    correct = (predicted == target).float()
    which = torch.clamp((confidence * bins).long(), max=bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += float(members.float().mean() * (correct[members].mean() - confidence[members].mean()).abs())
    return error


def score_test_split(model: nn.Module, graphs: list[Graph], task: Any, batch_size: int) -> dict[str, float]:
    """The test split's metric (whole split, in %) and calibration error of ``model`` (eval mode)."""
    with torch.no_grad():
        batches = (Graph.batch(graphs[i:i + batch_size]) for i in range(0, len(graphs), batch_size))
        predictions, targets, _ = predict_batches(model, batches, task, torch.device("cpu"))
    logits, target = torch.cat(predictions), torch.cat(targets)
    return {"metric": 100 * float(compute_metric(task.metric, logits, target)),
            "calibration_error": calibration_error(logits, target)}


def zero_fraction(tensors: list[Tensor], numel: int | None = None) -> float:
    """Fraction of ``numel`` (default: the tensors' entries) that are not nonzero entries of ``tensors``."""
    total = numel if numel is not None else sum(t.numel() for t in tensors)
    return 1.0 - sum(int(torch.count_nonzero(t)) for t in tensors) / max(total, 1)


def ffn_zero_fraction(model: nn.Module, batches: list[Graph]) -> float:
    density = activation_density(model, batches)
    return 1.0 - statistics.fmean(density.values())


# ---------------------------------------------------------------------------------------------- timing
@dataclass
class Variant:
    """A model as a row times it: ``model`` for inference (eval), ``train_model`` for the training step (default:
    a copy of ``model``), the graphs each uses, and the method's extra work in a step."""

    model: nn.Module
    train_batches: list[Graph]
    eval_batches: list[Graph]
    train_model: nn.Module | None = None
    penalty: Callable[[nn.Module], Tensor] | None = None
    projection: L0BallProjection | None = None
    param_groups: Callable[[nn.Module], list[dict]] | None = None


def train_step(variant: Variant, config: RunConfig, task: Any) -> Callable[[], None]:
    """One trainer-like step per call (forward, loss (+ penalty), backward, clipping, AdamW step (+ projection))
    on a private copy of the variant's training model, cycling through its batches."""
    model = copy.deepcopy(variant.train_model if variant.train_model is not None else variant.model).train()
    groups = variant.param_groups(model) if variant.param_groups else [{"params": [p for p in model.parameters()
                                                                                     if p.requires_grad]}]
    groups = [{**group, "lr": config.train.lr * group.get("lr_scale", 1.0)} for group in groups]  # as the Trainer
    optimizer = torch.optim.AdamW(groups, lr=config.train.lr, weight_decay=config.train.weight_decay)
    _, loss_fn = make_loss(task, config.train.loss, config.train.class_weighted_loss)
    position = [0]

    def step() -> None:
        batch = variant.train_batches[position[0] % len(variant.train_batches)]
        position[0] += 1
        prediction, target = select_prediction(model(batch), batch, task)
        loss = loss_fn(prediction.float(), target, batch=batch)
        if variant.penalty is not None:
            loss = loss + variant.penalty(model)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.train.grad_clip or 1e9)
        optimizer.step()
        if variant.projection is not None:
            variant.projection.project(model)

    return step


def inference_pass(variant: Variant) -> Callable[[], None]:
    model = variant.model

    def run() -> None:
        model.eval()
        with torch.no_grad():
            for batch in variant.eval_batches:
                model(batch)

    return run


def interleaved_medians(calls: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each call, the calls run in turn round after round (a load change hits all alike)."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def time_pair(before: Variant, after: Variant, config: RunConfig, task: Any, rounds: int) -> dict[str, float]:
    """Training step (ms per batch) and inference (ms per graph) of ``before`` and ``after``, interleaved."""
    steps = len(before.train_batches)
    medians = interleaved_medians({
        "train_before": _repeat(train_step(before, config, task), steps),
        "train_after": _repeat(train_step(after, config, task), steps),
        "inference_before": inference_pass(before),
        "inference_after": inference_pass(after),
    }, rounds)
    graphs = sum(b.num_graphs for b in before.eval_batches)
    return {"train_step_ms_before": 1e3 * medians["train_before"] / steps,
            "train_step_ms_after": 1e3 * medians["train_after"] / steps,
            "inference_ms_per_graph_before": 1e3 * medians["inference_before"] / graphs,
            "inference_ms_per_graph_after": 1e3 * medians["inference_after"] / graphs,
            "rounds": rounds, "train_batches": steps, "inference_graphs": graphs}


def _repeat(call: Callable[[], None], times: int) -> Callable[[], None]:
    def run() -> None:
        for _ in range(times):
            call()
    return run


# ---------------------------------------------------------------------------------------------- the bench
@dataclass
class Bench:
    """What every row shares: the baseline's config, data, trained model and measurements, and the settings."""

    args: argparse.Namespace
    config: RunConfig
    dataset: Any
    work: Path
    baseline: nn.Module | None = None
    baseline_summary: dict = field(default_factory=dict)
    baseline_measured: dict = field(default_factory=dict)

    @property
    def task(self) -> Any:
        return self.dataset.task

    @property
    def batch_size(self) -> int:
        return self.config.data.batch_size

    def batches(self, graphs: list[Graph], count: int) -> list[Graph]:
        size = self.batch_size
        return [Graph.batch(graphs[i:i + size]) for i in range(0, min(count, len(graphs)), size)]

    def timing_batches(self, dataset: Any) -> tuple[list[Graph], list[Graph]]:
        """(training batches, test batches) of the graphs every row times and counts on."""
        return (self.batches(dataset.train, self.args.time_batches * self.batch_size),
                self.batches(dataset.test, self.args.time_graphs))

    def train(self, name: str, config: RunConfig, *, model: nn.Module | None = None,
              dataset: Any | None = None) -> dict:
        """`train_run` into ``work/name`` (the library's entry point: train options apply as in `sparsegt train`)."""
        dataset = dataset if dataset is not None else self.dataset
        result = train_run(config, run_dir=self.work / name, model=model, dataset=dataset, quiet=True,
                           console=Console(stderr=True))  # stdout is the table's
        return result.summary

    def best(self, model: nn.Module, name: str) -> nn.Module:
        """``model`` with the weights of its run's best validation epoch, in eval mode."""
        model.load_state_dict(load_checkpoint(self.work / name / "best.pt")["model"])
        return model.eval()

    def measure(self, model: nn.Module, dataset: Any | None = None) -> dict:
        dataset = dataset if dataset is not None else self.dataset
        _, test_batches = self.timing_batches(dataset)
        scores = score_test_split(model, dataset.test, dataset.task, self.batch_size)
        return {**scores, **count_forward(model, test_batches)}

    def baseline_variant(self) -> Variant:
        train_batches, test_batches = self.timing_batches(self.dataset)
        return Variant(self.baseline, train_batches, test_batches)

    def row(self, method: str, setting: str, config: dict, summary: dict, measured: dict, sparsity: dict,
            timing: dict, extra: dict | None = None, before: dict | None = None) -> dict:
        train = self.config.train
        budget = f"{train.epochs} epochs, seed {train.seed}"
        if method == "gin":
            budget = f"{self.args.finetune_epochs} epochs after the baseline's {train.epochs}, seed {train.seed}"
        return {"method": method, "title": TITLES[method], "setting": setting, "budget": budget, "config": config,
                "summary": _summary_fields(summary), "before": before or self.baseline_measured, "after": measured,
                "sparsity": sparsity, "timing": timing, "claim": CLAIMS[method],
                "claimed_time": CLAIMED_TIME[method], "not_tested": NOT_TESTED[method], **(extra or {})}


def _summary_fields(summary: dict) -> dict:
    keys = ("status", "metric", "epochs_run", "best_epoch", "val_metric", "test_metric", "train_time_s",
            "num_parameters", "warnings")
    return {k: summary.get(k) for k in keys}


def run_baseline(bench: Bench) -> None:
    bench.baseline_summary = bench.train("baseline", bench.config)
    seed_everything(bench.config.train.seed)
    bench.baseline = bench.best(build_model(bench.config, bench.dataset), "baseline")
    bench.baseline_measured = {**bench.measure(bench.baseline),
                               "ffn_zero_fraction": ffn_zero_fraction(bench.baseline, bench.timing_batches(
                                   bench.dataset)[1])}


def row_teddy(bench: Bench) -> dict:
    """TEDDY through the run options: edges trimmed before the encodings, weights projected after every step."""
    overrides = [f"data.trim_edges={TEDDY_EDGES_KEPT}", f"train.weight_sparsity={TEDDY_WEIGHT_SPARSITY}"]
    config = with_overrides(bench.config, overrides)
    trimmed = build_dataset(config)
    summary = bench.train("teddy", config, dataset=trimmed)
    seed_everything(config.train.seed)
    model = bench.best(build_model(config, trimmed), "teddy")
    dense_edges = sum(g.num_edges for split in ("train", "val", "test") for g in getattr(bench.dataset, split))
    kept_edges = sum(g.num_edges for split in ("train", "val", "test") for g in getattr(trimmed, split))
    weights = [p.detach() for name, p in model.named_parameters() if weight_matrices(name, p)]
    sparsity = {"edges removed": 1 - kept_edges / dense_edges, "weights zero": zero_fraction(weights)}
    train_batches, test_batches = bench.timing_batches(trimmed)
    after = Variant(model, train_batches, test_batches,
                    projection=L0BallProjection(keep_fraction=1 - TEDDY_WEIGHT_SPARSITY))
    timing = time_pair(bench.baseline_variant(), after, config, bench.task, bench.args.rounds)
    return bench.row("teddy", f"`{' '.join(overrides)}`", config_to_dict(config), summary,
                     bench.measure(model, trimmed), sparsity, timing)


def row_topk(bench: Bench, rule: str) -> dict:
    """Activation top-k in every FFN (``model.ffn_topk``); ``statistical`` also gives every attention Spark's
    statistical top-k over its keys (``model.attention=topk model.topk_rule=statistical``)."""
    keys = ATTENTION_KEYS if not bench.args.smoke else 4
    overrides = [f"model.ffn_topk={FFN_KEEP}", f"model.ffn_topk_rule={rule}"]
    if rule == "statistical":  # the same attention module over the same candidates (the full pattern), selected
        overrides += ["model.attention=topk", f"model.topk={keys}", "model.topk_rule=statistical"]
    config = with_overrides(bench.config, overrides)
    method = "topk" if rule == "exact" else "statistical"
    seed_everything(config.train.seed)
    model = build_model(config, bench.dataset)            # the baseline's initial weights (the activation has none)
    summary = bench.train(method, config, model=model)
    model = bench.best(model, method)
    _, test_batches = bench.timing_batches(bench.dataset)
    measured = bench.measure(model)
    sparsity = {"FFN activations zero": ffn_zero_fraction(model, test_batches)}
    setting = f"`{' '.join(overrides)}`"
    if rule == "statistical":
        sparsity["attention entries removed"] = 1 - measured["attention_entries"] / bench.baseline_measured[
            "attention_entries"]
    timing = time_pair(bench.baseline_variant(), Variant(model, *bench.timing_batches(bench.dataset)), config,
                       bench.task, bench.args.rounds)
    return bench.row(method, setting, {**config_to_dict(config), "attention_keys": keys if method != "topk" else None},
                     summary, measured, sparsity, timing,
                     {"baseline_ffn_zero_fraction": bench.baseline_measured["ffn_zero_fraction"]})


def row_gtsp(bench: Bench) -> dict:
    """GTSP masks trained end to end from the baseline's initial weights (``train.gtsp``: the `Trainer` adds
    ``masked.penalty()`` to the loss and steps the gates at ``gate_lr_scale`` times the rate), then `prune`d."""
    config, args = copy.deepcopy(bench.config), bench.args
    targets = {k: v for k, v in vars(GTSP_TARGETS).items() if v is not None}
    config.train.gtsp = GTSPConfig(**targets, strength=args.gtsp_strength, gate_lr_scale=args.gate_lr_scale)
    seed_everything(config.train.seed)
    masked = build_model(config, bench.dataset)           # a GTSPModel around the baseline's initial weights
    summary = bench.train("gtsp", config, model=masked)
    masked = bench.best(masked, "gtsp")
    with torch.no_grad():
        masked(bench.timing_batches(bench.dataset)[1][0])   # the edge densities are those of the last forward
    densities = masked.densities()
    pruned = prune(masked).eval()
    measured = bench.measure(pruned)
    sparsity = _pruned_sparsity(bench.baseline, pruned)
    sparsity["attention entries removed"] = 1 - measured["attention_entries"] / bench.baseline_measured[
        "attention_entries"]
    train_batches, test_batches = bench.timing_batches(bench.dataset)
    after = Variant(pruned, train_batches, test_batches, train_model=masked,
                    penalty=lambda model: model.penalty(),
                    param_groups=lambda model: model.parameter_groups(args.gate_lr_scale))
    timing = time_pair(bench.baseline_variant(), after, config, bench.task, args.rounds)
    setting = (f"`GTSPTargets({', '.join(f'{k}={v}' for k, v in targets.items())})`, strength {args.gtsp_strength}, "
               f"gates at {args.gate_lr_scale:g}x the rate; then `prune`")
    return bench.row("gtsp", setting, {**config_to_dict(config), "gtsp_targets": targets,
                                       "strength": args.gtsp_strength, "gate_lr_scale": args.gate_lr_scale},
                     summary, measured, sparsity, timing,
                     {"gate_densities": densities,   # heads, layers, weights: open at eval; edges: mean P(open)
                      "layers_kept_as_fixed_mix": sum(isinstance(layer, GatedLayer) for layer in pruned.layers)})


def _pruned_sparsity(baseline: nn.Module, pruned: nn.Module) -> dict[str, float]:
    """Fractions of the heads, layers and layer weights of ``baseline`` that ``pruned`` no longer has (or holds as
    zeros). A layer whose gate ended strictly between 0 and 1 is kept (as a fixed mix): it still runs."""
    def heads(model: nn.Module) -> int:
        return sum(m.num_heads for m in model.layers.modules() if isinstance(m, SparseMultiheadAttention))

    def layer_weights(model: nn.Module) -> list[Tensor]:
        scorers = {id(p) for m in model.layers.modules() if isinstance(m, EdgeGateScorer) for p in m.parameters()}
        return [p.detach() for p in model.layers.parameters() if p.dim() >= 2 and id(p) not in scorers]

    return {"heads removed": 1 - heads(pruned) / heads(baseline),
            "layers removed": 1 - len(pruned.layers) / len(baseline.layers),
            "layer weights zero or removed": zero_fraction(layer_weights(pruned),
                                                           sum(t.numel() for t in layer_weights(baseline)))}


def row_combiner(bench: Bench) -> dict:
    """Combiner as every GPS layer's attention, regions of ``COMBINER_BLOCK`` node ids (the run options
    ``model.attention=combiner model.combiner_block=B``), trained by `train_run`."""
    block = COMBINER_BLOCK if not bench.args.smoke else 4
    overrides = ["model.attention=combiner", f"model.combiner_block={block}"]
    config = with_overrides(bench.config, overrides)
    summary = bench.train("combiner", config)
    seed_everything(config.train.seed)
    model = bench.best(build_model(config, bench.dataset), "combiner")
    measured = bench.measure(model)
    sparsity = {"attention entries removed": 1 - measured["attention_entries"] / bench.baseline_measured[
        "attention_entries"]}
    timing = time_pair(bench.baseline_variant(), Variant(model, *bench.timing_batches(bench.dataset)), config,
                       bench.task, bench.args.rounds)
    return bench.row("combiner", f"`{' '.join(overrides)}`", config_to_dict(config), summary, measured, sparsity,
                     timing)


def row_gin(bench: Bench) -> dict:
    """The trained baseline frozen with Sparse GIN-Attention adapters, fine-tuned ``--finetune-epochs``
    (``train.init_from=<baseline> train.gin_adapter=r``); the control: the same epochs of full fine-tuning from
    the same weights (``train.init_from`` alone)."""
    finetune = [f"train.epochs={bench.args.finetune_epochs}", "train.warmup_epochs=0",
                f"train.init_from={bench.work / 'baseline'}"]
    config = with_overrides(bench.config, [*finetune, f"train.gin_adapter={GIN_HIDDEN}"])
    seed_everything(config.train.seed)                    # the adapters' first layers draw their initial weights
    model = build_model(config, bench.dataset, initial_weights=True)
    summary = bench.train("gin", config, model=model)
    model = bench.best(model, "gin")
    control_config = with_overrides(bench.config, finetune)
    seed_everything(control_config.train.seed)
    control_model = build_model(control_config, bench.dataset, initial_weights=True)
    control_summary = bench.train("gin-control-full-finetune", control_config, model=control_model)
    control = bench.best(control_model, "gin-control-full-finetune")
    total = sum(p.numel() for p in model.parameters())
    sparsity = {"parameters frozen": 1 - sum(p.numel() for p in model.parameters() if p.requires_grad) / total}
    timing = time_pair(bench.baseline_variant(), Variant(model, *bench.timing_batches(bench.dataset)), config,
                       bench.task, bench.args.rounds)
    setting = f"`train.init_from=<baseline> train.gin_adapter={GIN_HIDDEN}`, fine-tuned"
    return bench.row("gin", setting, {**config_to_dict(config), "gin_hidden": GIN_HIDDEN}, summary,
                     bench.measure(model), sparsity, timing,
                     {"control_full_finetune": {"summary": _summary_fields(control_summary),
                                                "after": bench.measure(control)}})


def row_density(bench: Bench) -> dict:
    """The density-normalised edge loss against the usual (class-weighted) one on pattern-edges, an edge-level
    PATTERN with foreground of varying density: same model, seed and epochs, its own baseline run."""
    name = "pattern-edges-tiny" if bench.args.smoke else "pattern-edges-small"
    usual = with_overrides(bench.config, [f"data.name={name}", "train.loss=auto"])
    dataset = build_dataset(usual)
    seed_everything(usual.train.seed)
    base_summary = bench.train("density-baseline", usual, dataset=dataset)
    base_model = bench.best(build_model(usual, dataset), "density-baseline")
    config = with_overrides(usual, ["train.loss=density_normalized_edge"])
    summary = bench.train("density", config, dataset=dataset)
    seed_everything(config.train.seed)
    model = bench.best(build_model(config, dataset), "density")
    before, after = bench.measure(base_model, dataset), bench.measure(model, dataset)
    before["sparse_graph_recall"] = sparse_graph_recall(base_model, dataset.test)
    after["sparse_graph_recall"] = sparse_graph_recall(model, dataset.test)
    labelled = sum(int(g.edge_data["y"].sum()) for g in dataset.test) / sum(g.num_edges for g in dataset.test)
    timing = time_pair(Variant(base_model, *bench.timing_batches(dataset)),
                       Variant(model, *bench.timing_batches(dataset)), config, dataset.task, bench.args.rounds)
    return bench.row("density", f"`data.name={name} train.loss=density_normalized_edge` vs `train.loss=auto` "
                     f"({base_summary['loss']})", config_to_dict(config), summary, after,
                     {"edges labelled foreground (test)": labelled}, timing, before=before)


def sparse_graph_recall(model: nn.Module, graphs: list[Graph]) -> float:
    """Foreground recall (%) over the edges of the sparsest third of ``graphs`` (by foreground density, graphs
    with foreground only): the graphs the usual per-edge average neglects."""
    labelled = [g for g in graphs if int(g.edge_data["y"].sum()) > 0]
    labelled.sort(key=lambda g: float(g.edge_data["y"].float().mean()))
    sparsest = labelled[:max(1, len(labelled) // 3)]
    model.eval()
    with torch.no_grad():
        found = total = 0
        for graph in sparsest:
            batch = Graph.batch([graph])
            predicted = model(batch).argmax(-1)
            foreground = batch.edge_data["y"] == 1
            found += int((predicted[foreground] == 1).sum())
            total += int(foreground.sum())
    return 100.0 * found / max(total, 1)


# ---------------------------------------------------------------------------------------------- the table
def _change(before: float, after: float) -> str:
    return f"{100 * (after / before - 1):+.1f}%" if before else "n/a"


def time_cell(row: dict) -> str:
    t, claimed = row["timing"], row["claimed_time"]
    parts = []
    for kind, label, unit, digits in (("train", "train step", "ms", 0), ("inference", "inference", "ms/graph", 2)):
        key = "train_step_ms" if kind == "train" else "inference_ms_per_graph"
        before, after = t[f"{key}_before"], t[f"{key}_after"]
        text = f"{label} {before:.{digits}f} -> {after:.{digits}f} {unit} ({_change(before, after)})"
        if kind == claimed and after >= before:
            text = f"**none**: {text}"
        parts.append(text)
    return "; ".join(parts)


def flops_cell(row: dict) -> str:
    b, a = row["before"], row["after"]
    executed = (f"executed {b['flops_executed'] / 1e6:.1f} -> {a['flops_executed'] / 1e6:.1f} MFLOP/graph "
                f"({_change(b['flops_executed'], a['flops_executed'])})")
    skipped = (f"zeros skipped {b['flops_zeros_skipped'] / 1e6:.1f} -> {a['flops_zeros_skipped'] / 1e6:.1f} "
               f"({_change(b['flops_zeros_skipped'], a['flops_zeros_skipped'])})")
    return f"{executed}; {skipped}"


def markdown_table(result: dict) -> str:
    default_task = f"PATTERN (`{result['baseline']['config']['data']['name']}`), `gps-pattern`"
    lines = ["| method | task | setting | sparsity reached | FLOPs saved | time saved | metric before | metric after "
             "| paper's claim |", "|---|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        sparsity = ", ".join(f"{name} {100 * value:.1f}%" for name, value in row["sparsity"].items())
        after = f"{row['after']['metric']:.2f}"
        if "control_full_finetune" in row:
            after += f" (full fine-tuning, same budget: {row['control_full_finetune']['after']['metric']:.2f})"
        task = f"pattern-edges (`{row['config']['data']['name']}`), `gps-pattern`" if row["method"] == "density" \
            else default_task
        if "sparse_graph_recall" in row["after"]:
            after += (f" (foreground recall, sparsest third of graphs: {row['before']['sparse_graph_recall']:.1f} "
                      f"-> {row['after']['sparse_graph_recall']:.1f})")
        cells = [row["title"], task, f"{row['setting']}; {row['budget']}", sparsity, flops_cell(row),
                 time_cell(row), f"{row['before']['metric']:.2f}", after, row["claim"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(result: dict) -> list[str]:
    """One line a row: the change of the metric and calibration, whether the FLOPs and the time the paper claims
    fell here, and what the row cannot test."""
    out = []
    for row in result["rows"]:
        b, a, claimed = row["before"], row["after"], row["claimed_time"]
        parts = [f"metric {a['metric'] - b['metric']:+.2f} points",
                 f"calibration error {b['calibration_error']:.4f} -> {a['calibration_error']:.4f}",
                 f"FLOPs executed {_change(b['flops_executed'], a['flops_executed'])} (with zeros skipped "
                 f"{_change(b['flops_zeros_skipped'], a['flops_zeros_skipped'])})",
                 f"keys per query {b['keys_per_query']:.1f} -> {a['keys_per_query']:.1f}"]
        if claimed is not None:
            key = "train_step_ms" if claimed == "train" else "inference_ms_per_graph"
            saved = row["timing"][f"{key}_after"] < row["timing"][f"{key}_before"]
            parts.append(f"{claimed} time {'saved' if saved else 'NOT saved here'} "
                         f"({_change(row['timing'][f'{key}_before'], row['timing'][f'{key}_after'])})")
        out.append(f"- {row['title']}: {'; '.join(parts)}; {row['not_tested']}.")
    for left in result["left_out"]:
        out.append(f"- {left['method']}: not run; {left['why']}.")
    return out


# ---------------------------------------------------------------------------------------------- main
def machine() -> dict:
    def git(*command: str) -> str:
        try:
            done = subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True, check=True)
            return done.stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return "unknown"

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "commit": git("rev-parse", "HEAD"),
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=15, help="training epochs of the baseline and every method")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs (GIN and its control)")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {METHODS}")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (medians)")
    parser.add_argument("--time-batches", type=int, default=2, help="training batches timed per round")
    parser.add_argument("--time-graphs", type=int, default=64, help="test graphs timed and counted per round")
    parser.add_argument("--gtsp-strength", type=float, default=10.0, help="GTSP penalty strength")
    parser.add_argument("--gate-lr-scale", type=float, default=100.0, help="GTSP gates' rate / the weights' rate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data-root", default=None, help="dataset cache folder (default: sparsegt's)")
    parser.add_argument("--work-dir", type=Path, default=None, help="run folders (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--smoke", action="store_true",
                        help="pattern-tiny, a 2-layer 16-wide model, 1 epoch, 1 timing round: checks the script")
    args = parser.parse_args(argv)
    if args.smoke:
        args.epochs, args.finetune_epochs, args.rounds, args.time_batches, args.time_graphs = 1, 1, 1, 1, 16
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    started, load_start = time.time(), os.getloadavg()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = base_config(args)
    with contextlib.ExitStack() as stack:
        work = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sparsify-table-")))
        bench = Bench(args, config, build_dataset(config), work)
        log(f"baseline: {config.data.name}, {config.train.epochs} epochs", started)
        run_baseline(bench)
        rows = []
        builders = {"teddy": row_teddy, "topk": lambda b: row_topk(b, "exact"),
                    "statistical": lambda b: row_topk(b, "statistical"), "gtsp": row_gtsp,
                    "combiner": row_combiner, "gin": row_gin, "density": row_density}
        for method in [m for m in METHODS if m in args.methods.split(",")]:
            log(f"{TITLES[method]}", started)
            rows.append(builders[method](bench))
            log(f"{TITLES[method]}: {rows[-1]['before']['metric']:.2f} -> {rows[-1]['after']['metric']:.2f}", started)
    dataset = bench.dataset
    result = {
        "script": "bench/sparsify_table.py", "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine(), "load_average_start": load_start, "load_average_end": os.getloadavg(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "task": f"PATTERN (`{config.data.name}`: {len(dataset.train)}/{len(dataset.val)}/{len(dataset.test)} graphs), "
                f"`gps-pattern` model{' (smoke: 2 layers, 16 wide)' if args.smoke else ''}",
        "budget": f"{config.train.epochs} epochs, seed {config.train.seed}",
        "metric": f"test {dataset.task.metric} (%) at the best validation epoch",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "baseline": {"config": config_to_dict(config), "summary": _summary_fields(bench.baseline_summary),
                     "measured": bench.baseline_measured},
        "rows": rows,
        "left_out": [],
    }
    result["table_markdown"] = markdown_table(result)
    result["notes"] = notes(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"Baseline: {result['task']}, {result['budget']}, {result['metric']}: "
          f"{bench.baseline_measured['metric']:.2f}\n")
    print(result["table_markdown"])
    print("\n" + "\n".join(result["notes"]))
    print(f"\n{args.out} ({result['seconds']:.0f} s; load average {load_start[0]:.2f} -> "
          f"{result['load_average_end'][0]:.2f})")
    return result


def log(message: str, started: float) -> None:
    print(f"[{time.time() - started:7.0f} s] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
