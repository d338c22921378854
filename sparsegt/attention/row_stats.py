"""What a kernel's forward keeps of each row's softmax for its backward: the row maximum and the sum, apart.

A backward rebuilds the weight of a score ``s`` as ``exp(s - row_max) / row_sum``. Rebuilding it as
``exp(s - lse)`` from one float32 ``lse = row_max + log(row_sum)`` (what a flash backward usually does) loses
the digits of ``s - row_max`` to the size of the scores: with a constant ``c`` added to every score (which
changes nothing mathematically) the error is ulp(c) in every exponent, 4e-5 at c = 2^10 and 4% at 2^20.
``s - row_max`` is exact for every score near the maximum, so the backward is as exact as the forward at any
offset. The sum is kept rather than its log (as the Triton backend does) because the numba kernels compile
with reassociation allowed, which may fold ``(s - row_max) - log(row_sum)`` back into ``s - lse``; a product
by ``1 / row_sum`` cannot be folded into the exponent.

Per row (and head): no edge or only ``-inf`` scores: ``row_max = -inf``, ``row_sum = 0`` (lse ``-inf``); a
NaN score: both NaN (lse NaN). The public ``lse`` is `RowStats.lse`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class RowStats(NamedTuple):
    """``row_max`` and ``row_sum`` (the sum of ``exp(score - row_max)`` over the row's edges), same shape."""

    row_max: Tensor
    row_sum: Tensor

    @classmethod
    def empty(cls, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device | str = "cpu") -> RowStats:
        return cls(torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device))

    def lse(self) -> Tensor:
        """The log-sum-exp of the row's scores: ``row_max + log(row_sum)`` (-inf on empty rows, NaN on NaN rows)."""
        return self.row_max + torch.log(self.row_sum)
