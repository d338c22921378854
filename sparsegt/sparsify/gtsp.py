"""GTSP: learned masks on four dimensions of a graph transformer, trained end to end, then pruned for real.

Liu et al., "Exploring Sparsity in Graph Transformers" (Graph Transformer SParsification, GTSP; Neural Networks
2024, arXiv:2312.05479): differentiable masks on the input data, the attention heads, the layers and the
weights, trained with the task loss and a sparsity objective, after which the masked parts are removed.
Our masks are hard-concrete gates (`sparsegt.sparsify.hard_concrete`; Louizos et al. 2018) with a penalty on
the expected density of each group toward ``1 - target``:

- **edges** (pattern entries): per layer and per entry (i, j) of its attention pattern,
  ``log_alpha_ij = <u, x_i> + <w, x_j> + c`` (2C + 1 parameters a layer: input-dependent, so it serves graphs
  it never saw), and the gate enters the softmax as a bias, ``a_ij ∝ z_ij exp(s_ij)`` (bias ``log z_ij``; a
  closed entry has weight 0 exactly, so it is the pattern without that entry);
- **heads**: per layer and head, ``out_i = W_o concat_h(z_h sum_j a_ij^h v_j^h)`` (GT's edge update reads
  ``z_h ŵ_ij^h`` too);
- **layers**: per layer, ``x <- z_l f(x) + (1 - z_l) x`` (and the same for edge states): z_l = 0 is the model
  without the layer;
- **weights**: per entry of every weight matrix of the layers (>= 2-D parameters), ``W <- W ⊙ Z``
  (``torch.nn.utils.parametrize``).

``loss = task_loss + masked.penalty()`` with ``penalty = strength * sum_d (mean_d P(z != 0) - (1 - t_d))^2``
over the masked dimensions d. `prune` then builds a smaller model whose output equals the masked model's
deterministic (eval) output: weights with closed gates become zeros (the open gates' values folded in),
closed heads are cut out of the Q/K/V rows and the output projection's columns (open values folded into
those columns), closed layers leave the layer list (a gate strictly between 0 and 1 stays as a fixed mix),
and closed pattern entries are dropped from the pattern before the kernel runs.

Our version, stated: the paper's masks and sparsity objective differ in detail (we use hard-concrete gates and
a squared density penalty); the edge masks gate the attention pattern's entries, not the input graph of the
local MPNN. Supported: `GTLayer` and `GPSLayer` (``full`` / ``pattern`` / ``topk`` attention; edges not with
``topk`` nor with GT's edge features, whose edge states live on every entry); layer and weight masks work on
any layer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..attention import sparse_attention
from ..graph import Graph
from ..models import GraphTransformer
from ..nn import GPSLayer, GTLayer, LayerState, SparseMultiheadAttention
from ..nn.segment import gather_keys, gather_queries
from ..patterns import threshold_topk, topk
from ..patterns._csr import filter_edges
from .hard_concrete import OPEN_LOG_ALPHA, FixedGate, HardConcreteGate, density_penalty, hard_concrete, open_probability

__all__ = ["GTSPTargets", "GTSPModel", "prune", "GatedAttention", "GatedLayer", "EdgeGateScorer", "WeightGate",
           "HeadPrunedAttention"]


@dataclass(frozen=True)
class GTSPTargets:
    """Target sparsity (fraction to prune, in [0, 1)) per dimension; None leaves that dimension unmasked."""

    edges: float | None = None
    heads: float | None = None
    layers: float | None = None
    weights: float | None = None

    def active(self) -> dict[str, float]:
        out = {name: getattr(self, name) for name in ("edges", "heads", "layers", "weights")}
        for name, value in out.items():
            if value is not None and (isinstance(value, bool) or not 0.0 <= float(value) < 1.0):
                raise ValueError(f"GTSPTargets.{name} = {value!r} must be a fraction in [0, 1) or None")
        return {name: float(value) for name, value in out.items() if value is not None}


class WeightGate(nn.Module):
    """Parametrization ``W -> W ⊙ Z`` with one hard-concrete gate per entry of W."""

    def __init__(self, shape: torch.Size) -> None:
        super().__init__()
        self.gate = HardConcreteGate(tuple(shape))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.gate().to(weight.dtype)


class EdgeGateScorer(nn.Module):
    """Gates of the entries of an attention pattern: ``log_alpha_ij = <u, x_i> + <w, x_j> + c`` -> z [E].

    Starts open (u = w = 0, c = `OPEN_LOG_ALPHA`). ``stochastic``: sample in training mode (False once pruned:
    the pruned model always uses the deterministic gates). ``last_open_probability``: P(z != 0) [E] of the
    last call, for the penalty.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.query_score = nn.Linear(channels, 1)
        self.key_score = nn.Linear(channels, 1, bias=False)
        nn.init.zeros_(self.query_score.weight)
        nn.init.zeros_(self.key_score.weight)
        nn.init.constant_(self.query_score.bias, OPEN_LOG_ALPHA)
        self.stochastic = True
        self.last_open_probability: Tensor | None = None

    def forward(self, query: Tensor, key: Tensor, pattern: Graph) -> Tensor:
        log_alpha = gather_queries(pattern, self.query_score(query)) + gather_keys(pattern, self.key_score(key))
        log_alpha = log_alpha.squeeze(-1)
        self.last_open_probability = open_probability(log_alpha)
        return hard_concrete(log_alpha, self.training and self.stochastic)


class GatedAttention(nn.Module):
    """A `SparseMultiheadAttention` (or `HeadPrunedAttention`) with head gates and/or pattern-entry gates;
    called exactly as the attention it wraps (same arguments, same returns).

    ``head_gate``: a module returning [H] gate values (None: no head gates). ``edge_scorer``: an
    `EdgeGateScorer` (None: no entry gates). ``drop_closed_entries``: remove the entries whose gate is 0 from
    the pattern before the kernel (the pruned model) instead of giving them weight 0 (the masked model).
    """

    def __init__(self, attention: SparseMultiheadAttention, head_gate: nn.Module | None = None,
                 edge_scorer: EdgeGateScorer | None = None, drop_closed_entries: bool = False) -> None:
        super().__init__()
        self.attention, self.head_gate, self.edge_scorer = attention, head_gate, edge_scorer
        self.drop_closed_entries = drop_closed_entries

    def forward(self, query: Tensor, key: Tensor | None = None, value: Tensor | None = None,
                pattern: Graph | None = None, *, edge_attr: Tensor | None = None, edge_bias: Tensor | None = None,
                edge_gate: Tensor | None = None, keep_top: int | None = None, keep_top_rule: str = "exact",
                return_edge_products: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        att = self.attention
        if not isinstance(pattern, Graph):
            raise ValueError(f"GatedAttention needs pattern=<Graph>, got {type(pattern).__name__}")
        key_input = query if key is None else key
        q, k, v = att.project(query, key, value)
        if keep_top is not None:
            select = {"exact": topk, "statistical": threshold_topk}.get(keep_top_rule)
            if select is None:
                raise ValueError(f"keep_top_rule must be 'exact' or 'statistical', got {keep_top_rule!r}")
            pattern = select(q.detach(), k.detach(), pattern, keep_top)
        bias, gate = att.edge_terms(pattern, edge_attr, edge_bias, edge_gate)
        if self.edge_scorer is not None:
            if bias is not None or gate is not None or return_edge_products or keep_top is not None:
                raise ValueError("GTSP edge gates need an attention call without edge inputs, edge products or "
                                 "keep_top (GT with edge features, GPS with topk): set GTSPTargets.edges=None")
            z = self.edge_scorer(query, key_input, pattern)
            if self.drop_closed_entries:
                keep = z > 0
                pattern, z = filter_edges(pattern, keep), z[keep]
            log_z = torch.where(z > 0, torch.log(z.clamp_min(torch.finfo(z.dtype).tiny)),
                                torch.full_like(z, -torch.inf))
            bias = log_z[:, None].expand(-1, att.num_heads).contiguous()
        head_z = None if self.head_gate is None else self.head_gate().to(q.dtype)
        products = None
        if return_edge_products:
            products = gather_queries(pattern, q) * gather_keys(pattern, k)
            products = (products if gate is None else products * gate) * att.head_dim ** -0.5
            if head_z is not None:
                products = products * head_z[:, None]
        dropout_p = att.attn_dropout if att.training else 0.0
        out = sparse_attention(q, k, v, pattern, bias=bias, gate=gate, dropout_p=dropout_p,
                               score_clamp=att.score_clamp, backend=att.backend)
        if head_z is not None:
            out = out * head_z[:, None]
        out = att.out_proj(out.reshape(out.shape[0], -1))
        return out if products is None else (out, products)


class HeadPrunedAttention(SparseMultiheadAttention):
    """`SparseMultiheadAttention` keeping only some heads of ``source``: Q/K/V [H'D, C], output projection
    [C, H'D] (scaled per kept head by ``head_scale``). Input and output width stay C; ``embed_dim`` here is the
    inner width H' * D (the kernel's output width before the output projection)."""

    def __init__(self, source: SparseMultiheadAttention, keep: Tensor, head_scale: Tensor) -> None:
        nn.Module.__init__(self)
        D = source.head_dim
        keep = keep.to(torch.long).cpu()
        rows = (keep[:, None] * D + torch.arange(D)).flatten()
        self.embed_dim, self.num_heads, self.head_dim = len(keep) * D, len(keep), D
        self.attn_dropout, self.edge_mode, self.backend = source.attn_dropout, source.edge_mode, source.backend
        self.score_clamp = source.score_clamp
        weight = source.in_proj_weight.detach()
        self.in_proj_weight = nn.Parameter(torch.cat([w[rows] for w in weight.chunk(3)]).clone())
        self.in_proj_bias = None
        if source.in_proj_bias is not None:
            self.in_proj_bias = nn.Parameter(torch.cat([b[rows] for b in source.in_proj_bias.detach().chunk(3)]))
        column_scale = head_scale.detach().to(weight.dtype).cpu().repeat_interleave(D).to(weight.device)
        self.out_proj = _linear_like(source.out_proj, in_columns=rows, column_scale=column_scale)
        self.edge_proj = None
        if source.edge_proj is not None:
            kept_rows = keep if source.edge_mode == "bias" else rows
            self.edge_proj = _linear_like(source.edge_proj, out_rows=kept_rows)


def _linear_like(linear: nn.Linear, *, in_columns: Tensor | None = None, out_rows: Tensor | None = None,
                 column_scale: Tensor | None = None) -> nn.Linear:
    """A copy of ``linear`` restricted to some input columns (optionally scaled) and/or output rows."""
    weight = linear.weight.detach()
    bias = None if linear.bias is None else linear.bias.detach()
    if out_rows is not None:
        weight = weight[out_rows.to(weight.device)]
        bias = None if bias is None else bias[out_rows.to(weight.device)]
    if in_columns is not None:
        weight = weight[:, in_columns.to(weight.device)]
    if column_scale is not None:
        weight = weight * column_scale
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    out.weight.data.copy_(weight)
    if bias is not None:
        out.bias.data.copy_(bias)
    return out


class GatedLayer(nn.Module):
    """``layer`` behind a layer gate z: ``x <- z f(x) + (1 - z) x`` for the node, edge, pair and virtual states
    (z = 0 returns the input state unchanged, without running the layer)."""

    def __init__(self, layer: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.layer, self.gate = layer, gate

    def forward(self, state: LayerState) -> LayerState:
        z = self.gate().to(state.x.dtype).reshape(())
        if not bool(z != 0):
            return state
        out = self.layer(state)
        mixed = {}
        for name in ("x", "edge_attr", "pair", "virtual"):
            before, after = getattr(state, name), getattr(out, name)
            if before is not None and after is not None and before.shape == after.shape:
                mixed[name] = z * after + (1 - z) * before
        return replace(out, **mixed)


def _attention_layers(layers: nn.ModuleList, what: str) -> list[nn.Module]:
    """The GT/GPS layers, each with a `SparseMultiheadAttention`; a ValueError naming any other."""
    for index, layer in enumerate(layers):
        attention = getattr(layer, "attention", None)
        if not isinstance(layer, (GTLayer, GPSLayer)) or not isinstance(attention, SparseMultiheadAttention):
            raise ValueError(f"GTSP {what} masks need GTLayer or GPSLayer layers with softmax attention "
                             f"(SparseMultiheadAttention); layer {index} is {type(layer).__name__} with attention "
                             f"{type(attention).__name__}: set GTSPTargets.{what}=None")
        topk_attention = getattr(layer, "attention_kind", "") == "topk"
        if what == "edges" and (getattr(layer, "edge_features", False) or topk_attention):
            raise ValueError(f"GTSP edge masks: layer {index} passes edge features or keep_top to its attention "
                             "(GT with edge features, GPS topk), whose inputs live on every entry: set "
                             "GTSPTargets.edges=None")
    return list(layers)


class GTSPModel(nn.Module):
    """A copy of ``model`` with GTSP masks on the dimensions ``targets`` names (module docstring).

    Args:
        model: a built `GraphTransformer` (not changed: the masks go on a deep copy).
        targets: `GTSPTargets`, the fraction of each dimension to prune.
        strength: weight of the density penalty (``penalty()``).

    ``masked(batch)`` is the model's forward with the gates (sampled in training mode, deterministic in eval);
    ``penalty()`` the term to add to the loss; ``densities()`` the fractions of gates open at eval;
    ``prune(masked)`` the smaller model.
    """

    def __init__(self, model: GraphTransformer, targets: GTSPTargets, strength: float = 1.0) -> None:
        super().__init__()
        if not isinstance(model, GraphTransformer):
            raise ValueError(f"GTSPModel wraps a sparsegt GraphTransformer, got {type(model).__name__}")
        self.targets, self.strength = targets, float(strength)
        active = targets.active()
        if not active:
            raise ValueError("GTSPTargets names no dimension: give a target sparsity for edges, heads, layers or "
                             "weights")
        self.model = copy.deepcopy(model)
        layers = self.model.layers
        if "weights" in active:  # first: the gates of later masks are not weights to gate
            for module in list(layers.modules()):
                for name, parameter in list(module.named_parameters(recurse=False)):
                    if parameter.dim() >= 2:
                        parametrize.register_parametrization(module, name, WeightGate(parameter.shape))
        if "heads" in active or "edges" in active:
            for layer in _attention_layers(layers, "heads" if "heads" in active else "edges"):
                if "edges" in active:
                    _attention_layers(nn.ModuleList([layer]), "edges")
                attention = layer.attention
                head_gate = HardConcreteGate(attention.num_heads) if "heads" in active else None
                scorer = EdgeGateScorer(attention.out_proj.out_features) if "edges" in active else None
                layer.attention = GatedAttention(attention, head_gate, scorer)
        if "layers" in active:
            self.model.layers = nn.ModuleList(GatedLayer(layer, HardConcreteGate(1)) for layer in layers)
        parameter = next(model.parameters())
        self.to(device=parameter.device, dtype=parameter.dtype)

    def parameter_groups(self, gate_lr_scale: float = 1.0) -> list[dict]:
        """Optimizer parameter groups: the model's weights, then the gates (hard-concrete ``log_alpha`` and the
        entry scorers) with ``lr_scale`` = ``gate_lr_scale`` and no weight decay (a decay would pull the gates
        towards log α = 0, half open). The gates start at log α = `OPEN_LOG_ALPHA` and close below about -2.4:
        Adam moves a parameter by about its rate a step, so at a network's rate (1e-4 .. 1e-3) they need
        thousands of steps to move, and a scale of 10-100 lets them follow the penalty within an epoch or two.
        A trainer multiplies its rate by a group's ``lr_scale`` (`sparsegt.train.Trainer` does)."""
        gates = {id(p) for m in self.model.modules() if isinstance(m, (HardConcreteGate, EdgeGateScorer))
                 for p in m.parameters()}
        params = list(self.parameters())
        return [{"params": [p for p in params if id(p) not in gates], "lr_scale": 1.0},
                {"params": [p for p in params if id(p) in gates], "lr_scale": float(gate_lr_scale),
                 "weight_decay": 0.0}]

    def forward(self, batch: Graph) -> Tensor:
        # the edge probabilities `penalty()` reads are this call's: a layer that a sampled layer gate of 0 skips
        # must not leave the previous call's (their graph is freed after its backward)
        for module in self.model.modules():
            if isinstance(module, EdgeGateScorer):
                module.last_open_probability = None
        return self.model(batch)

    def _open_probabilities(self) -> dict[str, list[Tensor]]:
        groups: dict[str, list[Tensor]] = {"edges": [], "heads": [], "layers": [], "weights": []}
        for module in self.model.modules():
            if isinstance(module, WeightGate):
                groups["weights"].append(module.gate.open_probability().flatten())
            elif isinstance(module, GatedAttention):
                if isinstance(module.head_gate, HardConcreteGate):
                    groups["heads"].append(module.head_gate.open_probability())
                if module.edge_scorer is not None and module.edge_scorer.last_open_probability is not None:
                    groups["edges"].append(module.edge_scorer.last_open_probability)
            elif isinstance(module, GatedLayer) and isinstance(module.gate, HardConcreteGate):
                groups["layers"].append(module.gate.open_probability())
        return groups

    def penalty(self) -> Tensor:
        """``strength * sum_d (mean_d P(z != 0) - (1 - t_d))^2`` over the masked dimensions (edges: the
        entries of the last forward call; none before one)."""
        total = torch.zeros((), device=next(self.parameters()).device, dtype=next(self.parameters()).dtype)
        targets = self.targets.active()
        for name, probabilities in self._open_probabilities().items():
            if name in targets and probabilities:
                total = total + density_penalty(torch.cat(probabilities), targets[name])
        return self.strength * total

    @torch.no_grad()
    def densities(self) -> dict[str, float]:
        """Fraction of gates open (z > 0) per masked dimension, deterministic gates (edges: expected, from the
        last forward call)."""
        out: dict[str, float] = {}
        targets = self.targets.active()
        for module in self.model.modules():
            for name, log_alpha in _log_alphas(module):
                out.setdefault(name, [])
                out[name].append(hard_concrete(log_alpha, False).flatten() > 0)
        result = {name: float(torch.cat(values).float().mean()) for name, values in out.items() if name in targets}
        edges = self._open_probabilities()["edges"]
        if "edges" in targets and edges:
            result["edges"] = float(torch.cat(edges).mean())
        return result


def _fold_weight_gates(module: nn.Module) -> None:
    """Replace each gated weight of ``module`` (a deep copy) by its value ``W ⊙ Z`` (deterministic gates).

    Not ``parametrize.remove_parametrizations``: a deep copy shares its injected class with the original, and
    removing the parametrization deletes the property from that shared class (the original would lose it)."""
    values = {name: getattr(module, name).detach().clone() for name in module.parametrizations.keys()}
    module.__class__ = module.__class__.__bases__[0]
    del module._modules["parametrizations"]
    for name, value in values.items():
        module.register_parameter(name, nn.Parameter(value))


def _log_alphas(module: nn.Module) -> list[tuple[str, Tensor]]:
    if isinstance(module, WeightGate):
        return [("weights", module.gate.log_alpha)]
    if isinstance(module, GatedAttention) and isinstance(module.head_gate, HardConcreteGate):
        return [("heads", module.head_gate.log_alpha)]
    if isinstance(module, GatedLayer) and isinstance(module.gate, HardConcreteGate):
        return [("layers", module.gate.log_alpha)]
    return []


@torch.no_grad()
def prune(masked: GTSPModel) -> GraphTransformer:
    """The smaller `GraphTransformer` whose output equals ``masked``'s deterministic (eval) output.

    Closed weights are zeros; closed heads are removed from Q/K/V and the output projection (a layer keeps at
    least its most open head: with all its gates closed, that head's output columns are zeros); closed layers
    are removed; closed pattern entries are dropped before the kernel runs. ``masked`` is not changed.
    """
    if not isinstance(masked, GTSPModel):
        raise ValueError(f"prune takes the GTSPModel that trained the masks, got {type(masked).__name__}")
    scorers = [m for m in masked.modules() if isinstance(m, EdgeGateScorer)]
    last = [scorer.last_open_probability for scorer in scorers]
    for scorer in scorers:  # a non-leaf tensor in the graph of the last forward cannot be deep-copied
        scorer.last_open_probability = None
    try:
        model = copy.deepcopy(masked.model).eval()  # eval: every gate deterministic
    finally:
        for scorer, value in zip(scorers, last, strict=True):
            scorer.last_open_probability = value
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            _fold_weight_gates(module)
    for layer in model.layers:
        inner = layer.layer if isinstance(layer, GatedLayer) else layer
        gated = getattr(inner, "attention", None)
        if not isinstance(gated, GatedAttention):
            continue
        attention = gated.attention
        if gated.head_gate is not None:
            z = gated.head_gate().to(attention.in_proj_weight.dtype)
            keep = torch.nonzero(z > 0).flatten()
            if keep.numel() == 0:
                keep = gated.head_gate.log_alpha.argmax().reshape(1)
            rows = (keep.cpu()[:, None] * attention.head_dim + torch.arange(attention.head_dim)).flatten()
            if isinstance(inner, GTLayer) and inner.edge_features:  # GT's edge update reads z_h * ŵ^h
                inner.edge_out = _linear_like(inner.edge_out, in_columns=rows,
                                              column_scale=z[keep].cpu().repeat_interleave(attention.head_dim)
                                              .to(z.device))
            attention = HeadPrunedAttention(attention, keep, z[keep])
        if gated.edge_scorer is not None:
            gated.edge_scorer.stochastic = False
            inner.attention = GatedAttention(attention, None, gated.edge_scorer, drop_closed_entries=True)
        else:
            inner.attention = attention
    kept = []
    for layer in model.layers:
        if not isinstance(layer, GatedLayer):
            kept.append(layer)
            continue
        z = layer.gate().reshape(())
        if float(z) == 1.0:
            kept.append(layer.layer)
        elif float(z) > 0.0:
            kept.append(GatedLayer(layer.layer, FixedGate(z.reshape(1))))
    model.layers = nn.ModuleList(kept)
    return model.train(masked.training)
