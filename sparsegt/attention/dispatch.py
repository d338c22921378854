"""Which backend runs a call: `BACKENDS` in the order ``backend="auto"`` tries them, `choose_backend` (auto's
whole rule: the first without reasons, `backend.Backend.unsupported_reasons`) and `backend_for` (auto or a
backend by name, with the error that lists every backend's reasons when the named one cannot run)."""

from __future__ import annotations

from .backend import AttentionInputs, Backend, unsupported_error
from .cpu import CPU
from .ranges import RANGES
from .reference import TORCH
from .tiles import TILES
from .triton_backend import TRITON

__all__ = ["BACKENDS", "BACKEND_NAMES", "choose_backend", "backend_for"]

# The order auto tries them in: Triton on CUDA, then on CPU the specialised kernels where their speed rules
# hold, then the per-edge kernel, then the reference, which runs everything.
BACKENDS: tuple[Backend, ...] = (TRITON, RANGES, TILES, CPU, TORCH)
BACKEND_NAMES = ("auto", *(backend.name for backend in BACKENDS))


def choose_backend(inputs: AttentionInputs) -> Backend:
    """The backend ``backend="auto"`` runs a call on: the first of `BACKENDS` without reasons (speed rules
    included). The last, ``torch``, has none."""
    return next(backend for backend in BACKENDS if not backend.unsupported_reasons(inputs, auto=True))


def backend_for(name: str, inputs: AttentionInputs) -> Backend:
    """The backend that runs the call: auto's choice, or backend ``name`` (ValueError with every backend's
    reasons if it cannot run the call)."""
    if name == "auto":
        return choose_backend(inputs)
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend must be one of {BACKEND_NAMES}, got {name!r}")
    chosen = next(b for b in BACKENDS if b.name == name)
    reasons = chosen.unsupported_reasons(inputs)
    if reasons:
        others = {b.name: (reasons if b is chosen else b.unsupported_reasons(inputs)) for b in BACKENDS}
        raise unsupported_error(name, reasons, others)
    return chosen
