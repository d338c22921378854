"""The one interface of `sparse_attention`'s backends.

A backend is one module of this package holding one `Backend` value (``reference.TORCH``, ``cpu.CPU``,
``ranges.RANGES``, ``tiles.TILES``): its name, what it supports (`Support`: devices, dtypes, bias, gate,
score clamp, dropout, the shape of the pattern), `Backend.unsupported_reasons` (why it cannot run a call;
empty when it can) and `Backend.run`. `api.BACKENDS` lists them in one ordered tuple, and
`api.choose_backend` is the whole rule of ``backend="auto"``: the first backend whose reasons, asked with
``auto=True``, are empty. With ``auto=True`` a backend adds the speed rules under which auto leaves a call
to the next one (`Backend.auto_reasons`: ranges wants long runs of narrow heads, tiles long dense rows).

The fused layer kernels (`nn.gatedgcn`, `nn.grit`) choose their device path the same way: each layer
holds an ordered tuple of paths (the numba kernels, then torch ops), each with a ``name``, an
``unsupported_reasons(...)`` and a ``run``, and takes the first without reasons (`first_runnable`).

Checks run cheapest first and stop at the first group that finds a reason: what the backend supports
(`Support`, from the call alone), then auto's speed rules, then the checks that read the pattern or the
data (`Backend.data_reasons`: runs, duplicate edges, non-finite keys), which may build and keep a plan
on the pattern (`Graph.plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..graph import Graph

__all__ = ["AttentionInputs", "Support", "Backend", "unsupported_error", "first_runnable"]


@dataclass(frozen=True)
class AttentionInputs:
    """One call of `sparse_attention`, as the backends see it when they decide whether they run it.

    q [Nq, H, D], k [Nk, H, D], v [Nk, H, Dv], bias [E, H] or None, gate [E, H, D] or None (shapes are
    checked by `sparse_attention` before). Tensors on the ``meta`` device describe a call without data.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    pattern: Graph
    bias: Tensor | None = None
    gate: Tensor | None = None
    dropout_p: float = 0.0
    score_clamp: float | None = None

    @property
    def device(self) -> torch.device:
        return self.q.device

    @property
    def dtype(self) -> torch.dtype:
        return self.q.dtype

    @property
    def head_dim(self) -> int:
        return self.q.shape[2]

    @property
    def mean_degree(self) -> float:
        """Edges per query row."""
        return self.pattern.num_edges / max(1, self.pattern.num_nodes)

    def tensors(self) -> dict[str, Tensor]:
        """The tensors of the call by name (q, k, v, and bias and gate when given)."""
        named = {"q": self.q, "k": self.k, "v": self.v, "bias": self.bias, "gate": self.gate}
        return {name: t for name, t in named.items() if t is not None}


def _names(names: list[str]) -> str:
    return f"{', '.join(names)} {'is' if len(names) == 1 else 'are'}"


@dataclass(frozen=True)
class Support:
    """What a backend supports. ``devices``/``dtypes``: None for any. ``pattern``: in words, the shape of
    pattern it needs ("any", "runs", "no duplicate edges"; checked by `Backend.data_reasons`)."""

    devices: tuple[str, ...] | None = None
    dtypes: tuple[torch.dtype, ...] | None = None
    bias: bool = True
    gate: bool = True
    score_clamp: bool = True
    dropout: bool = True
    pattern: str = "any"
    finite_keys_and_values: bool = False  # needs k and v without NaN or inf

    def reasons(self, inputs: AttentionInputs) -> list[str]:
        """Why a backend with this support cannot run the call, from the call alone (no pattern pass)."""
        reasons = []
        tensors = inputs.tensors()
        if self.devices is not None:
            elsewhere = [name for name, t in tensors.items() if t.device.type not in self.devices]
            if elsewhere:
                where = ", ".join(sorted({str(tensors[name].device) for name in elsewhere}))
                reasons.append(f"needs {' or '.join(d.upper() for d in self.devices)} tensors, but "
                               f"{_names(elsewhere)} on {where}; move with .cpu() or use backend='auto'")
        if self.dtypes is not None and inputs.dtype not in self.dtypes:
            # float32 and float64 (the numba kernels' dtypes) read as before; others listed as they are
            kinds = " and ".join(str(d).removeprefix("torch.") for d in self.dtypes)
            reasons.append(f"supports {kinds}, but {_names(list(tensors))} {inputs.dtype}; cast with .float() "
                           "or use backend='torch'")
        if not self.gate and inputs.gate is not None:
            reasons.append("does not take a gate (a per-edge factor inside q.k)")
        if not self.bias and inputs.bias is not None:
            reasons.append("does not take a bias")
        if not self.score_clamp and inputs.score_clamp is not None:
            reasons.append("does not take a score_clamp")
        if not self.dropout and inputs.dropout_p > 0.0:
            reasons.append("does not take attention dropout")
        return reasons


class Backend:
    """A backend of `sparse_attention`. Subclasses set ``name`` and ``supports``, implement `run`, and
    where needed `auto_reasons` and `data_reasons`."""

    name: str = ""
    supports: Support = Support()

    def unsupported_reasons(self, inputs: AttentionInputs, *, auto: bool = False) -> list[str]:
        """Why this backend cannot run the call (empty: it can). ``auto=True`` adds the speed rules under
        which ``backend="auto"`` leaves the call to the next backend. Checks stop at the first group
        that finds a reason (the pattern checks may build a plan)."""
        reasons = self.supports.reasons(inputs)
        if not reasons and auto:
            reasons = self.auto_reasons(inputs)
        if not reasons:
            reasons = self.data_reasons(inputs)
        return reasons

    def auto_reasons(self, inputs: AttentionInputs) -> list[str]:
        """Why ``backend="auto"`` leaves a call this backend could run to the next one (speed rules)."""
        return []

    def data_reasons(self, inputs: AttentionInputs) -> list[str]:
        """Why it cannot run the call, from the pattern or the data (may build a plan on the pattern)."""
        return []

    def run(self, inputs: AttentionInputs, scale: float, dropout_seed: int | None) -> tuple[Tensor, Tensor]:
        """``(out [Nq, H, Dv], lse [Nq, H])`` of a call it supports."""
        function, arguments = self.autograd_call(inputs, scale, dropout_seed)
        return function.apply(*arguments)

    def autograd_call(self, inputs: AttentionInputs, scale: float,
                      dropout_seed: int | None) -> tuple[type[torch.autograd.Function], tuple]:
        """The kernel backends' ``(Function, arguments)``: `run` is ``Function.apply(*arguments)``, whose
        arguments start with q, k, v, bias (and gate where the backend takes one). The compiled route
        (`compiled`) calls the Function's forward and backward itself."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<sparse_attention backend {self.name!r}>"


def unsupported_error(name: str, reasons: list[str], others: dict[str, list[str]] | None = None) -> ValueError:
    """The ValueError of a call that backend ``name`` cannot run: its reasons, then (``others``) what every
    backend says, so the caller sees which one takes the call."""
    message = f"backend={name!r} cannot run this call: {'; '.join(reasons)}"
    if others:
        lines = [f"  {other}: {'; '.join(why) if why else 'can run it'}" for other, why in others.items()]
        message += "\nwhat each backend says (backend='auto' takes the first that can run it):\n" + "\n".join(lines)
    return ValueError(message)


def first_runnable(paths, *args):
    """The first of ``paths`` (objects with ``unsupported_reasons(*args) -> list[str]``) without reasons."""
    for path in paths:
        if not path.unsupported_reasons(*args):
            return path
    raise ValueError("no path runs this call: " + "; ".join(
        f"{path.name}: {', '.join(path.unsupported_reasons(*args))}" for path in paths))
