"""Counter-based random numbers: each draw a pure function of (key, counters), no generator state.

A sampler or generator that draws from a stateful generator can only be resumed by replaying every draw
before the resume point, and gives different numbers when work is split into other chunks or threads. Here a
draw is ``hash64(key, a, b)``: the same (key, a, b) gives the same number wherever and whenever it is asked for,
so a batch or a chunk of nodes is reproducible on its own. The hash is SplitMix64's finaliser (Steele et al.,
"Fast splittable pseudorandom number generators", 2014), applied twice to fold in the two counters.

Python code makes keys with `derive_key` (NumPy's ``SeedSequence``, so nearby seeds give unrelated keys); the
numba kernels call `hash64`, `uniform` and `below`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["derive_key", "hash64", "uniform", "below", "normal"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53


def derive_key(*words: int) -> np.uint64:
    """A 64-bit key from non-negative integers (a seed, an epoch, a batch number, a stream id)."""
    if any(int(w) < 0 for w in words):
        raise ValueError(f"derive_key takes non-negative integers, got {words}")
    return np.uint64(np.random.SeedSequence([int(w) for w in words]).generate_state(1, dtype=np.uint64)[0])


@njit(cache=True, inline="always")
def _mix(z):
    z = z + _GOLDEN
    z = (z ^ (z >> _S30)) * _MUL1
    z = (z ^ (z >> _S27)) * _MUL2
    return z ^ (z >> _S31)


@njit(cache=True)
def hash64(key, a, b):
    """uint64 hash of ``key`` (uint64) and two non-negative int64 counters."""
    return _mix(_mix(key ^ _mix(np.uint64(a))) ^ np.uint64(b))


@njit(cache=True)
def uniform(key, a, b):
    """A float64 in [0, 1) (53 random bits)."""
    return float(hash64(key, a, b) >> _S11) * _TO_UNIT


@njit(cache=True)
def below(key, a, b, n):
    """An int64 in [0, n) (n < 2**53; bias below 2**-53 * n)."""
    return np.int64(uniform(key, a, b) * n)


@njit(cache=True)
def normal(key, a, b):
    """A standard normal float64 (Box-Muller on two draws: counters (a, 2b) and (a, 2b + 1))."""
    u1 = 1.0 - uniform(key, a, 2 * b)  # (0, 1]: log is finite
    u2 = uniform(key, a, 2 * b + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
