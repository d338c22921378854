"""Random-walk structural encodings (RWSE): return probabilities ``diag(P^t)``, t = 1..K.

``P = D^-1 A`` is the row-normalised weighted adjacency (`adjacency`: entry ``(i, j)`` of the graph's CSR
with its ``edge_weight``; self-loops are kept — they are legal walk steps). A node without edges has a zero
row: its return probabilities are 0, never NaN. With non-negative weights every row of ``P^t`` of a node
with edges sums to one (undirected graphs), so every RWSE value is a probability in [0, 1] — unlike PyG's
``AddRandomWalkPE``, which puts ``1 / weighted degree`` instead of ``weight / weighted degree`` in ``P``.

Methods (``rwse(..., method=...)``):

- ``"dense"`` — per graph dense powers (batched over graphs of equal size, `rwse_dense`); when the
  Laplacian eigendecomposition is at hand anyway, `rwse_from_eigen` reads RWSE off it for free.
- ``"exact"`` — sparse, blocks of 64 source columns propagated with a numba kernel: time O(N E K), memory
  O(N * 64) per thread, never N^2. On undirected graphs reversibility (``d_j P^a[j, l] = d_l P^a[l, j]``)
  halves the work: ``diag(P^(a+b))_j = sum_l (d_l / d_j) P^a[l, j] P^b[l, j]`` needs only ``ceil(K/2)``
  propagations.
- ``"estimate"`` — for large single graphs, memory O(N * 32 + E * K), time O(E K m): t = 1, 2 exact, and
  t = 3, 4 exact through the sparse ``P^2`` when it has at most E * K entries; beyond, an unbiased
  Hutchinson-style estimate with ``m`` Rademacher probes ``z``:
  ``diag(S^(a+b))_i ~ mean_z (S^a z)_i (S^b z)_i`` on undirected graphs (``S = D^1/2 P D^-1/2``,
  ``a = floor(t/2)``, ``b = ceil(t/2)``), ``z_i (P^t z)_i`` on directed ones. Each entry is a mean of m
  i.i.d. terms: its standard error is returned by `rwse_estimate` and is about ``sqrt(2 / m)`` times the
  value at even t (for ``a = b`` the term is a square), larger relative error at odd t where the value is
  near zero. ``bench/encodings.py`` measures it against the exact values.
- ``"auto"`` — dense up to 1,024 nodes, exact while ``N * E * K`` stays below 5e10 (measured: 10^4 nodes
  of degree 10, K = 16: 8.7 CPU-seconds, 15 MiB), estimate above.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from ..graph import Graph
from .adjacency import adjacency, graph_offsets
from .adjacency import one_blas_thread as _one_blas_thread

__all__ = ["auto_method", "random_walk_matrix", "rwse", "rwse_dense", "rwse_exact", "rwse_estimate",
           "rwse_from_eigen"]

_BLOCK = 64
_PROBE_CHUNK = 32
_EXACT_WORK_LIMIT = 5e10


def random_walk_matrix(adj: sp.csr_array) -> sp.csr_array:
    """[N, N] CSR ``P = D^-1 A`` (zero rows for nodes without edges)."""
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv = np.where(degree > 0, 1.0 / np.where(degree > 0, degree, 1.0), 0.0)
    out = sp.csr_array(sp.diags_array(inv) @ adj)
    out.sort_indices()
    return out


def _is_symmetric(adj: sp.csr_array) -> bool:
    diff = abs(adj - adj.T)
    return diff.nnz == 0 or float(diff.max()) <= 1e-12 * max(float(abs(adj).max()), 1e-300)


def rwse_dense(adj: np.ndarray, steps: int) -> np.ndarray:
    """RWSE of ``b`` graphs of equal size by dense matrix powers.

    Args:
        adj: [b, n, n] float64 weighted adjacency ``A[i, j]``.
    Returns:
        [b, n, steps] float64 ``diag(P^t)``, t = 1..steps. Computes ``P^1..P^h`` with ``h = ceil(steps/2)``
        (h - 1 batched matmuls) and ``diag(P^(h+r)) = sum_l P^h[j, l] P^r[l, j]`` for the rest. Graphs of
        up to 256 nodes multiply in float32 (2x faster, error ~1e-7 on values stored as float32 anyway).
    """
    degree = adj.sum(axis=2, keepdims=True)
    p = np.divide(adj, degree, out=np.zeros_like(adj), where=degree > 0)
    if adj.shape[1] <= 256:
        p = p.astype(np.float32)
    half = (steps + 1) // 2
    powers = [p]
    for _ in range(half - 1):
        powers.append(powers[-1] @ p)
    out = np.empty((adj.shape[0], adj.shape[1], steps))
    for t in range(1, steps + 1):
        if t <= half:
            out[:, :, t - 1] = np.diagonal(powers[t - 1], axis1=1, axis2=2)
        else:
            out[:, :, t - 1] = np.einsum("bjl,blj->bj", powers[half - 1], powers[t - half - 1])
    return np.clip(out, 0.0, 1.0)


def rwse_from_eigen(values: np.ndarray, vectors: np.ndarray, degree: np.ndarray, steps: int) -> np.ndarray:
    """RWSE from the eigendecomposition of the normalised Laplacian ``L = I' - D^-1/2 A D^-1/2``.

    Valid only for a symmetric ``A`` without self-loops (then ``diag(P^t) = diag((I' - L)^t)``, the diagonal
    being invariant under ``D^1/2 . D^-1/2``): ``rwse[i, t] = sum_m U[i, m]^2 (1 - lambda_m)^t``.

    Args:
        values: [b, n] eigenvalues; vectors: [b, n, n] orthonormal eigenvectors; degree: [b, n].
    Returns:
        [b, n, steps] float64.
    """
    mu = 1.0 - values
    powers = mu[:, :, None] ** np.arange(1, steps + 1)[None, None, :]
    out = (vectors * vectors) @ powers
    out[degree <= 0] = 0.0  # isolated nodes: Chung's L has a 0 there, the walk has no step
    return np.clip(out, 0.0, 1.0)


@numba.njit(parallel=True, cache=True)
def _rwse_columns(indptr, indices, pvals, degree, steps, symmetric, block):  # pragma: no cover - numba
    n = len(indptr) - 1
    out = np.zeros((n, steps))
    num_blocks = (n + block - 1) // block
    for bi in numba.prange(num_blocks):
        j0 = bi * block
        width = min(block, n - j0)
        prev = np.zeros((n, width))
        cur = np.zeros((n, width))
        nxt = np.zeros((n, width))
        for q in range(width):
            cur[j0 + q, q] = 1.0
        num_prop = (steps + 1) // 2 if symmetric else steps
        for s in range(1, num_prop + 1):
            for i in range(n):  # nxt = P @ cur, one contiguous row of the block at a time
                row = nxt[i]
                row[:] = 0.0
                for e in range(indptr[i], indptr[i + 1]):
                    src = cur[indices[e]]
                    w = pvals[e]
                    for q in range(width):
                        row[q] += w * src[q]
            prev, cur, nxt = cur, nxt, prev  # cur = P^s E, prev = P^(s-1) E
            if not symmetric:
                for q in range(width):
                    out[j0 + q, s - 1] = cur[j0 + q, q]
                continue
            # reversibility: diag(P^(2s-1))_j and diag(P^(2s))_j from columns of P^(s-1) and P^s
            odd = np.zeros(width)
            even = np.zeros(width)
            for l in range(n):
                dl = degree[l]
                if dl <= 0:
                    continue
                pr = prev[l]
                cr = cur[l]
                for q in range(width):
                    x = dl * cr[q]
                    odd[q] += x * pr[q]
                    even[q] += x * cr[q]
            for q in range(width):
                j = j0 + q
                if degree[j] > 0:
                    out[j, 2 * s - 2] = odd[q] / degree[j]
                    if 2 * s <= steps:
                        out[j, 2 * s - 1] = even[q] / degree[j]
    return out


def rwse_exact(adj: sp.csr_array, steps: int) -> np.ndarray:
    """[N, steps] float64 exact RWSE of one sparse graph, memory O(E + N * 64) per thread (module doc)."""
    adj = sp.csr_array(adj, dtype=np.float64, copy=True)
    adj.sum_duplicates()
    p = random_walk_matrix(adj)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    out = _rwse_columns(p.indptr.astype(np.int64), p.indices.astype(np.int64), p.data, degree, steps,
                        _is_symmetric(adj), _BLOCK)
    return np.clip(out, 0.0, 1.0)


@numba.njit(parallel=True, cache=True)
def _propagate(indptr, indices, vals, x, out):  # pragma: no cover - numba
    """out = M @ x for CSR M and dense x [n, m]."""
    n, m = x.shape
    for i in numba.prange(n):
        for b in range(m):
            out[i, b] = 0.0
        for e in range(indptr[i], indptr[i + 1]):
            j = indices[e]
            w = vals[e]
            for b in range(m):
                out[i, b] += w * x[j, b]


def rwse_estimate(adj: sp.csr_array, steps: int, *, num_probes: int = 128, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Estimated RWSE of one large graph and its standard error (module docstring).

    Returns:
        ``(estimate [N, steps], standard_error [N, steps])`` float64; columns t = 1, 2 are exact (error 0).
    """
    adj = sp.csr_array(adj, dtype=np.float64, copy=True)
    adj.sum_duplicates()
    n = adj.shape[0]
    p = random_walk_matrix(adj)
    degree = np.asarray(adj.sum(axis=1)).ravel()
    symmetric = _is_symmetric(adj)
    total = np.zeros((n, steps))
    total_sq = np.zeros((n, steps))
    if symmetric:  # S = D^-1/2 A D^-1/2, symmetric, same diagonal powers as P
        inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
        op = sp.csr_array(sp.diags_array(inv_sqrt) @ adj @ sp.diags_array(inv_sqrt))
    else:
        op = p
    op.sort_indices()
    indptr, indices, vals = op.indptr.astype(np.int64), op.indices.astype(np.int64), op.data
    rng = np.random.default_rng(seed)
    done = 0
    while done < num_probes:
        m = min(_PROBE_CHUNK, num_probes - done)
        z = rng.choice(np.array([-1.0, 1.0]), size=(n, m))
        terms = []  # (t, per-probe unbiased term [n, m])
        if symmetric:  # (S^(s-1) z) * (S^s z) -> t = 2s - 1,  (S^s z)^2 -> t = 2s
            prev, cur = None, z
            for s in range(1, (steps + 1) // 2 + 1):
                nxt = np.empty_like(z)
                _propagate(indptr, indices, vals, cur, nxt)
                prev, cur = cur, nxt
                terms = [(2 * s - 1, prev * cur)] + ([(2 * s, cur * cur)] if 2 * s <= steps else [])
                for t, term in terms:
                    total[:, t - 1] += term.sum(axis=1)
                    total_sq[:, t - 1] += (term * term).sum(axis=1)
        else:  # z * (P^t z)
            cur = z
            for t in range(1, steps + 1):
                nxt = np.empty_like(z)
                _propagate(indptr, indices, vals, cur, nxt)
                cur = nxt
                term = z * cur
                total[:, t - 1] += term.sum(axis=1)
                total_sq[:, t - 1] += (term * term).sum(axis=1)
        done += m
    mean = total / num_probes
    var = np.maximum(total_sq / num_probes - mean * mean, 0.0)
    stderr = np.sqrt(var / max(num_probes - 1, 1))
    mean[degree <= 0] = 0.0
    stderr[degree <= 0] = 0.0
    # exact short walks: diag(P) = self-loops, diag(P^2)_i = sum_j P_ij P_ji, and while P^2 stays within
    # the O(E K) memory budget diag(P^3) = rowsum(P^2 * P^T), diag(P^4) = rowsum(P^2 * (P^2)^T)
    mean[:, 0] = p.diagonal()
    stderr[:, 0] = 0.0
    if steps >= 2:
        mean[:, 1] = np.asarray((p * p.T).sum(axis=1)).ravel()
        stderr[:, 1] = 0.0
    if steps >= 3 and _square_fits(p, steps):
        p2 = sp.csr_array(p @ p)
        if symmetric:  # reversibility P^a[j, i] = (d_i / d_j) P^a[i, j]: no transposed copy of P^2
            rows = np.repeat(np.arange(n), np.diff(p2.indptr))
            ratio = degree[rows] / np.where(degree > 0, degree, 1.0)[p2.indices]
            p_at = sp.csr_array(p2.multiply(p))  # P^2[i, j] P[i, j] on the entries of P
            p_rows = np.repeat(np.arange(n), np.diff(p_at.indptr))
            p_ratio = degree[p_rows] / np.where(degree > 0, degree, 1.0)[p_at.indices]
            mean[:, 2] = np.bincount(p_rows, weights=p_at.data * p_ratio, minlength=n)
            if steps >= 4:
                mean[:, 3] = np.bincount(rows, weights=p2.data * p2.data * ratio, minlength=n)
        else:
            mean[:, 2] = np.asarray((p2 * p.T).sum(axis=1)).ravel()
            if steps >= 4:
                mean[:, 3] = np.asarray((p2 * p2.T).sum(axis=1)).ravel()
        stderr[:, 2:4] = 0.0
    return np.clip(mean, 0.0, 1.0), stderr


def _square_fits(p: sp.csr_array, steps: int) -> bool:
    """Whether nnz(P^2) (bounded by sum_i sum_{j in N(i)} deg(j)) stays within E * K entries."""
    degree = np.diff(p.indptr)
    bound = float(degree[p.indices].sum())
    return bound <= max(p.nnz, 1) * steps


def rwse(graph: Graph, steps: int, *, method: str = "auto", num_probes: int = 128, seed: int = 0) -> Tensor:
    """[N, steps] float32 random-walk return probabilities ``diag(P^t)``, t = 1..steps.

    Args:
        graph: a square `Graph` (a batch is encoded graph by graph), weights from ``edge_weight``.
        method: ``"auto"``, ``"dense"``, ``"exact"`` or ``"estimate"`` (module docstring).
        num_probes, seed: for ``"estimate"``.
    """
    if steps < 1:
        raise ValueError(f"steps = {steps}: RWSE needs at least one random-walk step")
    if method not in ("auto", "dense", "exact", "estimate"):
        raise ValueError(f"method must be 'auto', 'dense', 'exact' or 'estimate', got {method!r}")
    adj = adjacency(graph)
    ptr = graph_offsets(graph)
    out = np.zeros((graph.num_nodes, steps))
    with _one_blas_thread():
        _rwse_loop(adj, ptr, steps, method, num_probes, seed, out)
    return torch.from_numpy(out.astype(np.float32))


def auto_method(num_nodes: int, num_edges: int, steps: int) -> str:
    """The ``"auto"`` choice: dense up to 1,024 nodes, exact while N * E * K <= 5e10, else estimate."""
    if num_nodes <= 1024:
        return "dense"
    return "exact" if float(num_nodes) * max(num_edges, 1) * steps <= _EXACT_WORK_LIMIT else "estimate"


def _rwse_loop(adj, ptr, steps, method, num_probes, seed, out) -> None:
    for start, stop in zip(ptr[:-1], ptr[1:], strict=True):
        sub = adj[start:stop][:, start:stop]
        n = stop - start
        chosen = auto_method(n, sub.nnz, steps) if method == "auto" else method
        if n == 0:
            continue
        if chosen == "dense":
            out[start:stop] = rwse_dense(sub.toarray()[None], steps)[0]
        elif chosen == "exact":
            out[start:stop] = rwse_exact(sub, steps)
        else:
            out[start:stop] = rwse_estimate(sub, steps, num_probes=num_probes, seed=seed)[0]
