"""`sparse_attention` under ``torch.compile``: the call as two `torch.library` custom ops, so a compiled
model holds it as one opaque node (no graph break) and the compiler fuses the work around it.

``sparsegt::sparse_attention`` (forward) and ``sparsegt::sparse_attention_backward`` each have a fake
(meta) function giving their output shapes, and the forward's autograd formula calls the backward op.
`sparse_attention` takes this route only while compiling (`torch.compiler.is_compiling`); eager calls are
unchanged.

Inside the ops the pattern arrives as its tensors (``indptr``, ``indices``, ``num_cols``): the ops rebuild
a `Graph` per call, so its plans (the transpose, a backend's segments or tiles) are rebuilt per call too.
The backward op recomputes the forward of the chosen backend and runs its backward (the backends' own
backward passes need the forward's saved state, which does not cross an op boundary): under compile the
attention costs one forward more. Inside an op autograd does not record, so the kernel backends'
autograd.Functions are called step by step (`Backend.autograd_call`) and the torch reference through
``torch.func.vjp``. Dropout draws its seed as a tensor in the graph (from ``generator`` or
torch's global stream), so compiled runs are reproducible under ``torch.manual_seed`` as eager ones are.
"""

# no `from __future__ import annotations`: torch.library reads the ops' schemas from real annotations
from dataclasses import replace

import torch
from torch import Tensor

from ..graph import Graph
from .backend import AttentionInputs, Backend
from .dispatch import backend_for

__all__ = ["attention"]


def _pattern(indptr: Tensor, indices: Tensor, num_cols: int) -> Graph:
    return Graph(indptr, indices, num_cols=num_cols, validate=False)


def _call(q: Tensor, k: Tensor, v: Tensor, indptr: Tensor, indices: Tensor, num_cols: int, bias: Tensor | None,
          gate: Tensor | None, dropout_p: float, dropout_seed: Tensor, score_clamp: float | None,
          backend: str) -> tuple[Backend, AttentionInputs, int | None]:
    """The backend that runs the call, the call, and its dropout seed."""
    inputs = AttentionInputs(q, k, v, _pattern(indptr, indices, num_cols), bias, gate, dropout_p, score_clamp)
    seed = int(dropout_seed.item()) if dropout_p > 0.0 else None
    return backend_for(backend, inputs), inputs, seed


class _Context:
    """What a kernel backend's autograd.Function reads from its ctx, for calling its forward and backward
    directly (inside a custom op autograd does not record, so ``apply`` would not reach the backward)."""

    def __init__(self, arguments: tuple) -> None:
        self.needs_input_grad = tuple(isinstance(a, Tensor) for a in arguments)

    def save_for_backward(self, *tensors: Tensor | None) -> None:
        self.saved_tensors = tensors


def _gradients(backend: Backend, inputs: AttentionInputs, scale: float, seed: int | None, dout: Tensor,
               dlse: Tensor) -> list[Tensor | None]:
    """[dq, dk, dv, dbias, dgate] of the call (None where there is no such input or no gradient)."""
    tensors = (inputs.q, inputs.k, inputs.v, inputs.bias, inputs.gate)
    try:
        function, arguments = backend.autograd_call(inputs, scale, seed)
    except NotImplementedError:  # the torch reference: differentiate its ops
        present = [t for t in tensors if t is not None]

        def forward(*leaves):
            it = iter(leaves)
            named = [None if t is None else next(it) for t in tensors]
            return backend.run(replace(inputs, q=named[0], k=named[1], v=named[2], bias=named[3], gate=named[4]),
                               scale, seed)

        _, vjp = torch.func.vjp(forward, *present)
        grads = iter(vjp((dout, dlse)))
        return [None if t is None else next(grads) for t in tensors]
    ctx = _Context(arguments)
    function.forward(ctx, *arguments)
    grads = function.backward(ctx, dout, dlse)
    by_input = {id(a): g for a, g in zip(arguments, grads, strict=True) if isinstance(a, Tensor)}
    return [None if t is None else by_input.get(id(t)) for t in tensors]


@torch.library.custom_op("sparsegt::sparse_attention", mutates_args=())
def attention_op(q: Tensor, k: Tensor, v: Tensor, indptr: Tensor, indices: Tensor, num_cols: int,
                 bias: Tensor | None, gate: Tensor | None, scale: float, dropout_p: float,
                 dropout_seed: Tensor, score_clamp: float | None, backend: str) -> tuple[Tensor, Tensor]:
    """``(out [Nq, H, Dv], lse [Nq, H])`` of `sparse_attention` on the pattern (indptr, indices, num_cols)."""
    chosen, inputs, seed = _call(q, k, v, indptr, indices, num_cols, bias, gate, dropout_p, dropout_seed,
                                 score_clamp, backend)
    out, lse = chosen.run(inputs, scale, seed)
    return out.contiguous(), lse.contiguous()


@attention_op.register_fake
def _attention_fake(q, k, v, indptr, indices, num_cols, bias, gate, scale, dropout_p, dropout_seed, score_clamp,
                    backend):
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2])), q.new_empty((q.shape[0], q.shape[1]))


@torch.library.custom_op("sparsegt::sparse_attention_backward", mutates_args=())
def attention_backward_op(q: Tensor, k: Tensor, v: Tensor, indptr: Tensor, indices: Tensor, num_cols: int,
                          bias: Tensor | None, gate: Tensor | None, scale: float, dropout_p: float,
                          dropout_seed: Tensor, score_clamp: float | None, backend: str, dout: Tensor,
                          dlse: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``(dq, dk, dv, dbias, dgate)`` (dbias and dgate empty [0] when there is no bias or gate), by the chosen
    backend's own backward after recomputing its forward."""
    chosen, inputs, seed = _call(q, k, v, indptr, indices, num_cols, bias, gate, dropout_p, dropout_seed,
                                 score_clamp, backend)
    grads = _gradients(chosen, inputs, scale, seed, dout.contiguous(), dlse.contiguous())
    result = []
    for t, grad in zip((q, k, v, bias, gate), grads, strict=True):
        if t is None:
            grad = q.new_empty(0)
        elif grad is None:
            grad = torch.zeros_like(t)
        result.append(grad.contiguous())
    return tuple(result)


@attention_backward_op.register_fake
def _attention_backward_fake(q, k, v, indptr, indices, num_cols, bias, gate, scale, dropout_p, dropout_seed,
                             score_clamp, backend, dout, dlse):
    return (torch.empty_like(q), torch.empty_like(k), torch.empty_like(v),
            q.new_empty(0) if bias is None else torch.empty_like(bias),
            q.new_empty(0) if gate is None else torch.empty_like(gate))


def _setup_context(ctx, inputs, output):
    q, k, v, indptr, indices, num_cols, bias, gate, scale, dropout_p, dropout_seed, score_clamp, backend = inputs
    ctx.save_for_backward(q, k, v, indptr, indices, bias, gate, dropout_seed)
    ctx.options = (num_cols, scale, dropout_p, score_clamp, backend)


def _backward(ctx, dout, dlse):
    q, k, v, indptr, indices, bias, gate, dropout_seed = ctx.saved_tensors
    num_cols, scale, dropout_p, score_clamp, backend = ctx.options
    dq, dk, dv, dbias, dgate = attention_backward_op(q, k, v, indptr, indices, num_cols, bias, gate, scale, dropout_p,
                                                     dropout_seed, score_clamp, backend, dout, dlse)
    return (dq, dk, dv, None, None, None, None if bias is None else dbias, None if gate is None else dgate,
            None, None, None, None, None)


attention_op.register_autograd(_backward, setup_context=_setup_context)


def attention(q: Tensor, k: Tensor, v: Tensor, pattern: Graph, bias: Tensor | None, gate: Tensor | None,
              scale: float, dropout_p: float, dropout_seed: int | None, generator: torch.Generator | None,
              score_clamp: float | None, backend: str) -> tuple[Tensor, Tensor]:
    """`sparse_attention`'s call (inputs checked) through the custom op: ``(out, lse)``."""
    if dropout_p > 0.0 and dropout_seed is None:
        seed = torch.randint(0, 2**62, (1,), generator=generator, device="cpu")
    else:
        seed = torch.tensor([dropout_seed or 0], dtype=torch.int64)
    return attention_op(q, k, v, pattern.indptr, pattern.indices, pattern.num_cols, bias, gate, float(scale),
                        float(dropout_p), seed, None if score_clamp is None else float(score_clamp), backend)
