"""Laplacian eigenvector positional encodings (LapPE).

Two Laplacians of the graph made undirected (``A = max(A_graph, A_graph^T)`` without self-loops), chosen by
``normalization``:

- ``"sym"`` (default; GT / Benchmarking-GNNs): the symmetric normalised Laplacian
  ``L = I' - D^-1/2 A D^-1/2``, where ``I'`` has a 1 on every node with degree > 0 and a 0 on isolated
  nodes (Chung's convention, so that an isolated node is a component of its own with eigenvalue 0, and
  never produces a NaN; Benchmarking-GNNs and PyG put a 1 there, eigenvalue 1). Eigenvalues in [0, 2];
  the eigenvalue 0 has one eigenvector per connected component, ``u_c ∝ D^1/2 1_c``.
- ``"none"`` (GraphGPS's ``laplacian_norm: none``): the combinatorial Laplacian ``L = D - A``.
  Eigenvalues in [0, 2 max degree]; the null space is spanned by ``u_c ∝ 1_c``.

(``e_i`` for an isolated node in both.)

**Which eigenpairs.** Following GraphGPS, the encoding holds the ``k`` smallest eigenpairs *including* the
trivial ones (eigenvalue 0): the trivial eigenvector of a connected graph is ``sqrt(degree)``, normalised,
which still carries information. ``skip_trivial=True`` drops every eigenvalue-0 pair instead (one per
component), which is what "the k lowest non-trivial eigenvectors" means on a disconnected graph (PyG's
``AddLaplacianEigenvectorPE`` drops only the first one).

**Disconnected graphs.** An eigensolver returns an arbitrary rotation of a repeated eigenspace; for the
eigenvalue-0 space we replace it by the canonical basis above, one vector per component, ordered by the
component's smallest node index. Other repeated eigenvalues (e.g. of cycles) stay arbitrary — no encoding
can fix that, and the random sign flip of the encoder does not pretend to.

**Padding.** A graph with fewer than ``k`` eigenpairs (``k + components`` with ``skip_trivial``) gets zero
columns and ``mask`` False there; values are never NaN. Eigenvectors have unit L2 norm and a canonical sign
(the entry of largest magnitude is positive), so results do not depend on the code path.

**Methods.** Graphs with at most ``dense_max_nodes`` nodes: dense LAPACK (``syevd`` for the full
spectrum, ``syevr`` for the few smallest pairs; float32 up to 256 nodes, float64 above; see
`laplacian_pe_dense`). Larger graphs: Lanczos (``scipy.sparse.linalg.eigsh``, smallest algebraic) on the
non-isolated nodes with the known null space deflated, memory O(E + N * k).
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp
import torch
from scipy.linalg import lapack
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh
from torch import Tensor

from ..graph import Graph
from .adjacency import adjacency, component_labels, graph_offsets
from .adjacency import one_blas_thread as _one_blas_thread

__all__ = ["component_labels_dense", "laplacian_pe", "laplacian_pe_dense", "laplacian_pe_sparse",
           "normalized_laplacian"]

SINGLE_PRECISION_MAX_NODES = 256
NORMALIZATIONS = ("sym", "none")


def _check_normalization(normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"Laplacian normalization must be one of {NORMALIZATIONS}, got {normalization!r}")


def _undirected_without_loops(adj: sp.csr_array) -> sp.csr_array:
    adj = sp.csr_array(adj, copy=True)
    adj.setdiag(0)
    adj.eliminate_zeros()
    return sp.csr_array(adj.maximum(adj.T))


def normalized_laplacian(graph: Graph) -> sp.csr_array:
    """[N, N] scipy CSR symmetric normalised Laplacian ``I' - D^-1/2 A D^-1/2`` (module docstring)."""
    adj = _undirected_without_loops(adjacency(graph))
    degree = np.asarray(adj.sum(axis=1)).ravel()
    inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0)
    norm_adj = sp.diags_array(inv_sqrt) @ adj @ sp.diags_array(inv_sqrt)
    return sp.csr_array(sp.diags_array((degree > 0).astype(np.float64)) - norm_adj)


def _canonical_signs(vec: np.ndarray) -> np.ndarray:
    """Flip each eigenvector (last axis = eigenvector, second-to-last = node) so that its first entry of
    (near-)largest magnitude is positive; "near" (within 1e-4 relative) makes ties robust to rounding."""
    if vec.shape[-2] == 0:
        return vec
    magnitude = np.abs(vec)
    near_max = magnitude >= magnitude.max(axis=-2, keepdims=True) * (1 - 1e-4)
    idx = near_max.argmax(axis=-2)[..., None, :]
    sign = np.sign(np.take_along_axis(vec, idx, axis=-2))
    sign[sign == 0] = 1.0
    return vec * sign


def _null_weight(degree: np.ndarray, normalization: str) -> np.ndarray:
    """[n] entries of the (unnormalised) null vectors: sqrt(degree) for "sym", 1 for "none" (isolated: 1)."""
    if normalization == "none":
        return np.ones_like(degree, dtype=np.float64)
    return np.where(degree > 0, np.sqrt(np.maximum(degree, 0.0)), 1.0)


def _null_vectors(degree: np.ndarray, labels: np.ndarray, num_components: int,
                  normalization: str = "sym") -> np.ndarray:
    """[n, c] canonical eigenvalue-0 eigenvectors: D^1/2 1_c ("sym") or 1_c ("none"), normalised."""
    weight = _null_weight(degree, normalization)
    out = np.zeros((len(degree), num_components))
    out[np.arange(len(degree)), labels] = weight
    return out / np.linalg.norm(out, axis=0, keepdims=True)


def _eigh(lap: np.ndarray, count: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of ``b`` symmetric [n, n] matrices: all (``count=None``) or the ``count`` smallest.

    Up to `SINGLE_PRECISION_MAX_NODES` nodes LAPACK runs in float32 (1.5-2x faster; the encodings are
    stored as float32 anyway, eigenvalue error ~1e-7, eigenvector error ~1e-7 / gap), above in float64.
    """
    b, n = lap.shape[0], lap.shape[1]
    if n == 0:
        return np.zeros((b, 0)), np.zeros((b, 0, 0))
    single = n <= SINGLE_PRECISION_MAX_NODES
    if count is None and not single:
        return np.linalg.eigh(lap)
    m = n if count is None else count
    values, vectors = np.empty((b, m)), np.empty((b, n, m))
    work = lap.astype(np.float32) if single else lap
    for g in range(b):
        if count is None:
            w, z, info = lapack.ssyevd(work[g], compute_v=1)
        else:
            solver = lapack.ssyevr if single else lapack.dsyevr
            w, z, _, _, info = solver(work[g], compute_v=1, range="I", il=1, iu=m)
        if info != 0:  # pragma: no cover - LAPACK failure: the double-precision full solver
            w, z = np.linalg.eigh(lap[g])
        values[g], vectors[g] = w[:m], z[:, :m]
    return values, vectors


def laplacian_pe_dense(adj: np.ndarray, labels: np.ndarray, k: int, *, skip_trivial: bool = False,
                       full_spectrum: bool = True, normalization: str = "sym"
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """LapPE of ``b`` graphs of equal size ``n`` at once, by batched dense ``eigh``.

    Args:
        adj: [b, n, n] float64 weighted adjacency (any direction, self-loops allowed: they are removed).
        labels: [b, n] int connected-component label of each node, ``0..c-1`` in order of first node.
        k: number of eigenpairs. normalization: ``"sym"`` or ``"none"`` (module docstring).
    Returns:
        ``vec`` [b, n, k], ``val`` [b, k], ``count`` [b] (number of valid columns), and the full
        decomposition ``(eigenvalues [b, n], eigenvectors [b, n, n])`` with the canonical null space, for
        callers that derive more (RWSE) from it. With ``full_spectrum=False`` only the ``k + components``
        smallest eigenpairs are computed (LAPACK ``dsyevr``, per graph; ~1.5x faster) and the returned
        decomposition is that partial one ([b, m], [b, n, m]).
    """
    _check_normalization(normalization)
    b, n = adj.shape[0], adj.shape[1]
    a = adj.copy()
    a[:, np.arange(n), np.arange(n)] = 0.0
    a = np.maximum(a, a.transpose(0, 2, 1))
    degree = a.sum(axis=2)
    if normalization == "none":
        lap = -a
        lap[:, np.arange(n), np.arange(n)] += degree
    else:
        inv_sqrt = np.where(degree > 0, 1.0 / np.sqrt(np.maximum(degree, 1e-300)), 0.0)
        lap = -(inv_sqrt[:, :, None] * a * inv_sqrt[:, None, :])
        lap[:, np.arange(n), np.arange(n)] += (degree > 0)
    num_components = labels.max(axis=1) + 1 if n else np.zeros(b, dtype=np.int64)
    values, vectors = _eigh(lap, None if full_spectrum else int(min(n, k + num_components.max())))
    for g in range(b):  # canonical null space: one vector per component (exact, not eigh's rotation)
        c = int(num_components[g])
        if c:
            vectors[g, :, :c] = _null_vectors(degree[g], labels[g], c, normalization)
            values[g, :c] = 0.0
    start = num_components if skip_trivial else np.zeros(b, dtype=np.int64)
    cols = start[:, None] + np.arange(k)[None, :]
    valid = cols < n
    cols = np.minimum(cols, max(values.shape[1] - 1, 0))
    if n == 0:
        return (np.zeros((b, 0, k)), np.zeros((b, k)), np.zeros(b, dtype=np.int64), values, vectors)
    vec = np.take_along_axis(vectors, np.broadcast_to(cols[:, None, :], (b, n, k)), axis=2)
    val = np.take_along_axis(values, cols, axis=1)
    vec = np.where(valid[:, None, :], _canonical_signs(vec), 0.0)
    val = np.where(valid, np.maximum(val, 0.0), 0.0)
    return vec, val, valid.sum(axis=1), values, vectors


def laplacian_pe_sparse(adj: sp.csr_array, k: int, *, skip_trivial: bool = False, tol: float = 1e-8,
                        dense_max_nodes: int = 1024, seed: int = 0, normalization: str = "sym"
                        ) -> tuple[np.ndarray, np.ndarray, int]:
    """LapPE of one (large) graph without dense N x N matrices.

    Args:
        adj: [N, N] scipy sparse weighted adjacency. normalization: ``"sym"`` or ``"none"``.
    Returns:
        ``vec`` [N, k], ``val`` [k], ``count`` (valid columns). Memory O(E + N * k): the null space is known
        exactly (one vector per component); Lanczos (``eigsh``, smallest algebraic) runs on the non-isolated
        nodes with that null space shifted out of the way, which keeps it from stalling on the repeated
        eigenvalue 0 of a disconnected graph.
    """
    _check_normalization(normalization)
    n = adj.shape[0]
    sym = _undirected_without_loops(sp.csr_array(adj))
    degree = np.asarray(sym.sum(axis=1)).ravel()
    num_components, labels = component_labels(sym)
    vec = np.zeros((n, k))
    val = np.zeros(k)
    num_null = 0 if skip_trivial else min(num_components, k)
    if num_null:
        null = _null_vectors(degree, labels, num_components, normalization) if num_components <= k else None
        if null is None:  # many components: build only the first k columns, O(N k) memory
            keep = labels < k
            weight = _null_weight(degree, normalization)
            null = np.zeros((n, k))
            null[np.nonzero(keep)[0], labels[keep]] = weight[keep]
            null /= np.linalg.norm(null, axis=0, keepdims=True)
        vec[:, :num_null] = null[:, :num_null]
    wanted = min(k - num_null, n - num_components)
    if wanted > 0:
        active = np.nonzero(degree > 0)[0]
        sub = sym[active][:, active]
        sub_labels = labels[active]
        _, sub_labels = np.unique(sub_labels, return_inverse=True)
        sub_components = int(sub_labels.max()) + 1
        if len(active) <= dense_max_nodes:
            sub_vec, sub_val, _, _, _ = laplacian_pe_dense(sub.toarray()[None], sub_labels[None],
                                                           wanted, skip_trivial=True, normalization=normalization)
            sub_vec, sub_val = sub_vec[0], sub_val[0]
        else:
            sub_vec, sub_val = _lanczos_smallest(sub, degree[active], sub_labels, sub_components, wanted, tol,
                                                 seed, normalization)
        vec[active, num_null:num_null + wanted] = sub_vec
        val[num_null:num_null + wanted] = sub_val
    count = num_null + max(wanted, 0)
    vec[:, :count] = _canonical_signs(vec[:, :count])
    return vec, val, count


def _lanczos_smallest(adj: sp.csr_array, degree: np.ndarray, labels: np.ndarray, num_components: int,
                      wanted: int, tol: float, seed: int, normalization: str = "sym"
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``wanted`` smallest non-zero eigenpairs of the Laplacian of ``adj`` (no isolated nodes).

    Single-vector Lanczos finds one copy of a repeated eigenvalue (cycles, symmetric graphs), so after the
    first run we deflate what was found and ask again for the smallest remaining eigenvalue, until none
    below the largest kept one is left. Known and found vectors are deflated by a shift above the spectrum
    (2 for "sym", 2 max degree for "none": Gershgorin).
    """
    n = adj.shape[0]
    if normalization == "none":
        diagonal, off_diagonal = degree, adj
        top = 2.0 * float(degree.max())
    else:
        inv_sqrt = 1.0 / np.sqrt(degree)
        diagonal, off_diagonal = np.ones(n), sp.csr_array(sp.diags_array(inv_sqrt) @ adj @ sp.diags_array(inv_sqrt))
        top = 2.0
    shift = top + 1.0
    weight = _null_weight(degree, normalization)
    norm = np.sqrt(np.bincount(labels, weights=weight**2, minlength=num_components))
    null_scale = weight / norm[labels]  # u_c restricted to its component, per node
    null = sp.csr_array((null_scale, (np.arange(n), labels)), shape=(n, num_components))  # [n, c], n entries
    null_t = sp.csr_array(null.T)
    rng = np.random.default_rng(seed)

    def solve(found: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        def matvec(x: np.ndarray) -> np.ndarray:
            x = x.reshape(n, -1)
            out = diagonal[:, None] * x - off_diagonal @ x
            out += shift * (null @ (null_t @ x))
            if found.shape[1]:
                out += shift * (found @ (found.T @ x))
            return out

        op = LinearOperator((n, n), matvec=matvec, matmat=matvec, dtype=np.float64)
        ncv = min(n, max(2 * count + 1, 40))
        try:  # one BLAS thread: ARPACK's level-2 calls on a few vectors only spin with more
            with _one_blas_thread():
                val, vec = eigsh(op, k=count, which="SA", tol=tol, v0=rng.standard_normal(n), ncv=ncv,
                                 maxiter=max(1000, n))
        except ArpackNoConvergence as err:
            raise RuntimeError(f"eigsh did not converge for {count} Laplacian eigenpairs of a {n}-node "
                               "graph; pass a larger tol (e.g. 1e-5) or fewer eigenpairs") from err
        return val, vec

    values, vectors = solve(np.zeros((n, 0)), wanted)
    margin = 1e3 * max(tol, 1e-12)
    for _ in range(wanted):  # each round recovers at least one missed copy, or stops
        if n - num_components - wanted < 3:
            break
        extra_val, extra_vec = solve(vectors, 1)
        if extra_val[0] >= values.max() - margin:
            break
        values = np.concatenate([values, extra_val])
        vectors = np.concatenate([vectors, extra_vec], axis=1)
        keep = np.argsort(values)[:wanted]
        values, vectors = values[keep], vectors[:, keep]
    order = np.argsort(values)
    return vectors[:, order], np.clip(values[order], 0.0, top)


def component_labels_dense(adj: np.ndarray) -> np.ndarray:
    """[b, n] component labels (0..c-1 by first node) of each dense [n, n] adjacency (directions ignored;
    zero weights are no edge). A numba BFS: microseconds per small graph, unlike scipy's per-call checks."""
    b, n = adj.shape[0], adj.shape[1]
    if b == 0 or n == 0:
        return np.zeros((b, n), dtype=np.int64)
    return _dense_components(np.ascontiguousarray(adj != 0))


@numba.njit(cache=True)
def _dense_components(linked):  # pragma: no cover - numba
    b, n = linked.shape[0], linked.shape[1]
    labels = np.full((b, n), -1, dtype=np.int64)
    queue = np.empty(n, dtype=np.int64)
    for g in range(b):
        count = 0
        for start in range(n):
            if labels[g, start] >= 0:
                continue
            labels[g, start] = count
            head, tail = 0, 1
            queue[0] = start
            while head < tail:
                u = queue[head]
                head += 1
                for v in range(n):
                    if labels[g, v] < 0 and (linked[g, u, v] or linked[g, v, u]):
                        labels[g, v] = count
                        queue[tail] = v
                        tail += 1
            count += 1
    return labels


def laplacian_pe(graph: Graph, k: int, *, skip_trivial: bool = False, dense_max_nodes: int = 1024,
                 tol: float = 1e-8, normalization: str = "sym") -> tuple[Tensor, Tensor, Tensor]:
    """LapPE of a graph, or of each graph of a batch.

    Args:
        graph: a square `Graph` (a batch is encoded graph by graph).
        k: number of eigenpairs (module docstring: the trivial ones count unless ``skip_trivial``).
        dense_max_nodes: graphs up to this size use dense ``eigh``; larger ones Lanczos.
        tol: Lanczos tolerance for large graphs.
        normalization: ``"sym"`` (``I - D^-1/2 A D^-1/2``) or ``"none"`` (``D - A``).
    Returns:
        ``lap_vec`` [N, k] float32, ``lap_val`` [N, k] float32 (each graph's eigenvalues repeated on its
        nodes), ``lap_mask`` [N, k] bool (False on padded columns, which hold zeros).
    """
    if k < 1:
        raise ValueError(f"k = {k}: the number of Laplacian eigenpairs must be >= 1")
    _check_normalization(normalization)
    adj = adjacency(graph)
    ptr = graph_offsets(graph)
    vec = np.zeros((graph.num_nodes, k))
    val = np.zeros((graph.num_nodes, k))
    mask = np.zeros((graph.num_nodes, k), dtype=bool)
    with _one_blas_thread():
        _laplacian_pe_loop(adj, ptr, k, skip_trivial, dense_max_nodes, tol, normalization, vec, val, mask)
    return (torch.from_numpy(vec.astype(np.float32)), torch.from_numpy(val.astype(np.float32)),
            torch.from_numpy(mask))


def _laplacian_pe_loop(adj, ptr, k, skip_trivial, dense_max_nodes, tol, normalization, vec, val, mask) -> None:
    for start, stop in zip(ptr[:-1], ptr[1:], strict=True):
        sub = adj[start:stop][:, start:stop]
        if stop - start <= dense_max_nodes:
            dense = sub.toarray()[None]
            v, w, c, _, _ = laplacian_pe_dense(dense, component_labels_dense(dense), k,
                                               skip_trivial=skip_trivial, full_spectrum=False,
                                               normalization=normalization)
            v, w, c = v[0], w[0], int(c[0])
        else:
            v, w, c = laplacian_pe_sparse(sub, k, skip_trivial=skip_trivial, tol=tol,
                                          dense_max_nodes=dense_max_nodes, normalization=normalization)
        vec[start:stop] = v
        val[start:stop] = w
        mask[start:stop, :c] = True
