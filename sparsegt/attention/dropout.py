"""Counter-based attention dropout: the keep/drop decision is a pure function of (seed, edge, head).

Any pass can regenerate exactly the mask the forward pass used, without storing it, and every backend
(torch reference, CPU kernel, tiles) draws the same mask for the same seed (the CPU kernel and the
tiles backend hash it once per call into an [H, E] byte table that their backward reuses). The hash is a 32-bit
integer mixer computed in int64 with constants below 2**31, so products never overflow and torch,
numpy and numba give identical bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
MIX1 = 0x7FEB352D
MIX2 = 0x5BD1E995


def hash32_torch(x: Tensor) -> Tensor:
    """Mix int64 values holding 32-bit unsigned integers (elementwise)."""
    x = x & MASK32
    x = x ^ (x >> 16)
    x = (x * MIX1) & MASK32
    x = x ^ (x >> 15)
    x = (x * MIX2) & MASK32
    x = x ^ (x >> 16)
    return x


def keep_mask(seed: int, num_edges: int, num_heads: int, p: float, device: torch.device) -> Tensor:
    """[E, H] bool: True where attention weight (edge, head) survives dropout with probability 1 - p."""
    edge = torch.arange(num_edges, device=device, dtype=torch.int64)
    head = torch.arange(num_heads, device=device, dtype=torch.int64)
    h = hash32_torch(hash32_torch(edge ^ (seed & MASK32)) + ((seed >> 32) & MASK32))
    h = hash32_torch(h[:, None] ^ (head[None, :] * 0x27D4EB2F & MASK32))
    threshold = int(p * 4294967296.0)
    return h >= threshold


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A 62-bit seed from torch's (global or given) random stream, so torch.manual_seed reproduces it."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())
