"""numba kernel of `weighted_pagerank` on CPU: the whole power iteration of every graph of a batch in one call.

The torch route runs each iteration as gathers and scatters over all [E, H] entries of the batch (a few passes
over memory an iteration, every graph until the slowest converges). Here each graph's iteration stays in its
own [n_b, H] scores: one pass over its CSR rows an iteration, graphs in parallel, each stopping when its own
L1 change (per head) falls below ``n_b * tol`` — networkx's rule, applied graph by graph.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def pagerank_graphs(indptr, indices, transition, dangling, ptr, damping, max_iter, tol, out):
    """Power iteration per graph (module docstring of `sparsegt.sparsify.attention_graph`).

    Args:
        indptr [N + 1], indices [E]: the CSR pattern, each graph's entries inside its own node range.
        transition: [E, H] float64 row-normalised weights P_ij. dangling: [N, H] bool, rows without out-weight.
        ptr: [B + 1] node ranges of the graphs. damping, max_iter, tol: as `weighted_pagerank`.
        out: [N, H] float64, written.
    """
    heads = transition.shape[1]
    for g in prange(ptr.shape[0] - 1):
        lo, hi = ptr[g], ptr[g + 1]
        n = hi - lo
        if n == 0:
            continue
        uniform = 1.0 / n
        score = np.full((n, heads), uniform)
        spread = np.empty((n, heads))
        lost = np.empty(heads)
        done = np.zeros(heads, np.bool_)
        for _ in range(max_iter):
            spread[:] = 0.0
            lost[:] = 0.0
            for i in range(lo, hi):
                for h in range(heads):
                    if dangling[i, h]:
                        lost[h] += score[i - lo, h]
                for e in range(indptr[i], indptr[i + 1]):
                    j = indices[e] - lo
                    for h in range(heads):
                        spread[j, h] += transition[e, h] * score[i - lo, h]
            converged = True
            for h in range(heads):
                if done[h]:  # this head converged at an earlier iteration: its scores stay
                    continue
                change = 0.0
                for j in range(n):
                    value = damping * (spread[j, h] + lost[h] * uniform) + (1.0 - damping) * uniform
                    change += abs(value - score[j, h])
                    score[j, h] = value
                if change < n * tol:
                    done[h] = True
                else:
                    converged = False
            if converged:
                break
        for j in range(n):
            for h in range(heads):
                out[lo + j, h] = score[j, h]
