"""Pictures of patterns: spy plots, and selected keys over the dense attention heat map.

`show_pattern(name, params, out)` is what ``sparsegt patterns show NAME key=value ... -o out.png``
calls: it builds a demo pattern by name (content-based ones on clustered demo q/k) and draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..graph import Graph
from . import blocks, compose, content, graph, routes, static
from ._csr import filter_edges

__all__ = ["draw_pattern", "draw_pattern_on", "show_pattern", "pattern_defaults", "demo_qk"]


def _density_image(pattern: Graph, max_pixels: int) -> tuple[Tensor, float, float]:
    """[rows, cols] entry counts binned to at most max_pixels a side (O(E), never Nq x Nk)."""
    rows = max(1, min(pattern.num_nodes, max_pixels))
    cols = max(1, min(pattern.num_cols, max_pixels))
    sy = max(pattern.num_nodes, 1) / rows
    sx = max(pattern.num_cols, 1) / cols
    r = torch.div(pattern.row_index().cpu() * rows, max(pattern.num_nodes, 1), rounding_mode="floor")
    c = torch.div(pattern.indices.cpu() * cols, max(pattern.num_cols, 1), rounding_mode="floor")
    image = torch.bincount(r * cols + c, minlength=rows * cols).reshape(rows, cols).double()
    return image, sy, sx


def draw_pattern(pattern: Graph, path: str | Path, *, heat: Tensor | None = None, title: str | None = None,
                 max_pixels: int = 512, dpi: int = 120) -> Path:
    """Save a spy plot of ``pattern`` (rows = queries, top to bottom; columns = keys) as a PNG.

    Args:
        pattern: any `Graph`. Patterns larger than ``max_pixels`` a side are binned: each pixel's
            shade is the fraction of its cell that the pattern covers.
        heat: optional [Nq, Nk] dense attention probabilities drawn underneath (small patterns only);
            selected keys are then outlined in red on top of it.
        title: figure title (default: the shape, entry count and density).
    Returns:
        the path written.
    """
    from matplotlib.figure import Figure  # not pyplot: the caller's backend and open figures stay as they are

    path = Path(path)
    nq, nk = pattern.num_nodes, pattern.num_cols
    fig = Figure(figsize=(6, 6 * min(max(nq, 1) / max(nk, 1), 2.0) + 0.6))
    draw_pattern_on(fig.subplots(), pattern, heat=heat, title=title, max_pixels=max_pixels)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def draw_pattern_on(ax: Any, pattern: Graph, *, heat: Tensor | None = None, title: str | None = None,
                    max_pixels: int = 512, outline: bool = True, fontsize: float = 9) -> Any:
    """`draw_pattern` into a matplotlib ``ax`` (for grids of patterns); returns the heat map's image (for a
    colour bar) or None. ``outline=False`` leaves the selected keys unmarked over ``heat``."""
    nq, nk = pattern.num_nodes, pattern.num_cols
    density = pattern.num_edges / max(nq * nk, 1)
    title = title or f"{nq} x {nk}, {pattern.num_edges} entries, density {density:.3g}"
    extent = (-0.5, nk - 0.5, nq - 0.5, -0.5)
    image = None
    if heat is not None:
        if tuple(heat.shape) != (nq, nk):
            raise ValueError(f"draw_pattern: heat must be [Nq, Nk] = [{nq}, {nk}], got {tuple(heat.shape)}")
        image = ax.imshow(heat.detach().cpu().double().numpy(), cmap="viridis", extent=extent, aspect="auto",
                          interpolation="nearest")
        if outline and pattern.num_edges <= 1500:   # few entries: outline each selected key
            row, col = pattern.row_index().cpu().numpy(), pattern.indices.cpu().numpy()
            size = max(2.0, 3000.0 / max(nq, nk, 1))
            ax.scatter(col, row, s=size, facecolors="none", edgecolors="red", linewidths=0.6, marker="s")
        elif outline:                               # many: a translucent red layer over the selected cells
            binned, _, _ = _density_image(pattern, max_pixels)
            overlay = torch.zeros(*binned.shape, 4)
            overlay[..., 0] = 1.0
            overlay[..., 3] = (binned > 0).float() * 0.45
            ax.imshow(overlay.numpy(), extent=extent, aspect="auto", interpolation="nearest")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    else:
        binned, sy, sx = _density_image(pattern, max_pixels)
        ax.imshow((binned / (sy * sx)).clamp(max=1).numpy(), cmap="Greys", vmin=0, vmax=1, extent=extent,
                  aspect="auto", interpolation="nearest")
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    ax.set_title(title, fontsize=fontsize)
    return image


def demo_qk(n: int, clusters: int = 4, dim: int = 16, heads: int = 1, noise: float = 0.5, seed: int = 0,
            ) -> tuple[Tensor, Tensor]:
    """Clustered demo queries/keys [n, heads, dim]: tokens come in ``clusters`` contiguous runs of random
    length; a run's queries and keys lie near its own random centre, so attention is block-structured
    (as in documents made of topics)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, heads, dim, generator=gen) * 1.5
    label = torch.sort(torch.randint(0, clusters, (n,), generator=gen)).values
    q = centres[label] + noise * torch.randn(n, heads, dim, generator=gen)
    k = centres[label] + noise * torch.randn(n, heads, dim, generator=gen)
    return q, k


def _grid_graph(side: int) -> Graph:
    """The 4-neighbour grid graph (no self-loops) of a side x side image."""
    cross = static.grid2d(side, side, 1, "cross")
    return filter_edges(cross, cross.row_index() != cross.indices)


def _content(builder: Callable[..., Graph]) -> Callable[..., tuple[Graph, Tensor]]:
    """Wrap a content builder: demo q/k from (n, clusters, seed), the heat map is dense softmax."""

    def build(n: int, clusters: int, seed: int, **kw: Any) -> tuple[Graph, Tensor]:
        q, k = demo_qk(n, clusters, seed=seed)
        heat = torch.softmax(torch.einsum("ihd,jhd->ij", q, k) / math.sqrt(q.shape[-1]), 1)
        return builder(q, k, **kw), heat

    return build


# name -> (builder taking the params as keywords, default params). Content builders return (pattern, heat).
_PATTERNS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "window": (lambda n, w, causal: static.window(n, w, causal=causal), {"n": 64, "w": 4, "causal": False}),
    "dilated": (lambda n, w, d, causal: static.dilated(n, w, d, causal=causal),
                {"n": 64, "w": 3, "d": 4, "causal": False}),
    "strided": (lambda n, stride, causal: static.strided(n, stride, causal=causal),
                {"n": 64, "stride": 8, "causal": True}),
    "causal": (lambda n: static.causal_sequence(n), {"n": 64}),
    "global_tokens": (lambda n, g: static.global_tokens(n, g), {"n": 64, "g": 2}),
    "random": (lambda n, r, seed: static.random(n, r, seed), {"n": 64, "r": 3, "seed": 0}),
    "bigbird": (lambda n, w, g, r, seed: compose.bigbird(n, w, g, r, seed),
                {"n": 64, "w": 3, "g": 2, "r": 3, "seed": 0}),
    "block_diagonal": (lambda n, b: static.block_diagonal(n, b), {"n": 64, "b": 8}),
    "grid2d": (lambda h, w, radius, kind, svga_k: static.grid2d(h, w, radius, kind, svga_k),
               {"h": 8, "w": 8, "radius": 1, "kind": "square", "svga_k": 2}),
    "full": (lambda sizes: graph.full(Graph.batch([Graph.empty(int(s)) for s in str(sizes).split(",")])),
             {"sizes": "5,12,8,20"}),
    "expander": (lambda n, degree, seed: graph.expander(Graph.empty(n), degree, seed),
                 {"n": 64, "degree": 4, "seed": 0}),
    "khop": (lambda side, k: graph.khop(_grid_graph(side), k), {"side": 8, "k": 2}),
    "virtual_nodes": (lambda sizes, num_virtual: graph.virtual_nodes(
        Graph.batch([Graph.empty(int(s)) for s in str(sizes).split(",")]), num_virtual),
        {"sizes": "10,20,15", "num_virtual": 1}),
    "subsample": (lambda n, w, p, seed: compose.subsample(static.window(n, w), p, seed),
                  {"n": 64, "w": 8, "p": 0.5, "seed": 0}),
    "topk": (_content(lambda q, k, k_keep: content.topk(q, k, None, k_keep)),
             {"n": 64, "clusters": 4, "seed": 0, "k_keep": 8}),
    "threshold_topk": (_content(lambda q, k, k_keep: content.threshold_topk(
        q, k, graph.full(Graph.empty(q.shape[0])), k_keep)),
        {"n": 64, "clusters": 4, "seed": 0, "k_keep": 8}),
    "routing": (_content(lambda q, k, n_clusters: routes.routing(q, k, n_clusters)),
                {"n": 64, "clusters": 4, "seed": 0, "n_clusters": 4}),
    "bilevel_routing": (_content(lambda q, k, regions, top_r: routes.bilevel_routing(q, k, regions, top_r)),
                        {"n": 64, "clusters": 4, "seed": 0, "regions": 8, "top_r": 2}),
    "block_select": (_content(lambda q, k, block, stride, threshold: blocks.block_select(
        q, k, block, stride, threshold)), {"n": 128, "clusters": 4, "seed": 0, "block": 16, "stride": 4,
                                           "threshold": 0.9}),
}


def pattern_defaults() -> dict[str, dict[str, Any]]:
    """Every name `show_pattern` knows, with its parameters and their defaults."""
    return {name: dict(defaults) for name, (_, defaults) in _PATTERNS.items()}


def _convert(name: str, key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str):
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return value.lower() in ("true", "1", "yes")
        return type(default)(value)
    except ValueError as err:
        raise ValueError(f"pattern {name!r}: {key}={value!r} must be a {type(default).__name__} "
                         f"(default {default!r})") from err


def show_pattern(name: str, params: Mapping[str, Any] | None = None, out: str | Path = "pattern.png") -> Path:
    """Build the demo pattern ``name`` with ``params`` (strings are converted to the default's type)
    and draw it to ``out`` (PNG). Content-based patterns are built on clustered demo q/k
    (`demo_qk`) and drawn over the dense attention heat map. See `pattern_defaults` for names.
    """
    if name not in _PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; choose one of: {', '.join(sorted(_PATTERNS))}")
    builder, defaults = _PATTERNS[name]
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"pattern {name!r} has no parameter(s) {unknown}; it takes "
                         + ", ".join(f"{k}={v!r}" for k, v in defaults.items()))
    kwargs = {key: _convert(name, key, params.get(key, default), default)
              for key, default in defaults.items()}
    result = builder(**kwargs)
    pattern, heat = result if isinstance(result, tuple) else (result, None)
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    density = pattern.num_edges / max(pattern.num_nodes * pattern.num_cols, 1)
    title = f"{name}({shown})\n{pattern.num_nodes} x {pattern.num_cols}, {pattern.num_edges} entries, " \
            f"density {density:.3g}"
    return draw_pattern(pattern, out, heat=heat, title=title)
