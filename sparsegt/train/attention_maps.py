"""`sparsegt show-attention`: the learned attention weights of a trained model on one graph, as one PNG.

The model runs (eval mode) on graph ``i`` of a split (validation by default) built exactly as in training
(`sparsegt.train.run.build_dataset`, with its encodings) while `sparsegt.nn.record_attention` records every
`SparseMultiheadAttention` call's weights. The picture has one row per attention call (layer) and one column
per head; each panel is the [queries x keys] weight matrix drawn by `sparsegt.patterns.draw.draw_pattern_on`
(the pattern's entries outlined in red when the pattern is not all pairs).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ..graph import Graph
from .trained import TrainedModel, load_trained

__all__ = ["attention_of_graph", "dense_weights", "draw_attention", "show_attention"]

# a panel is a dense [n, n] image: past this many nodes it says nothing a reader can see
MAX_DRAWN_NODES = 2000


def attention_of_graph(trained: TrainedModel, graph: Graph) -> list[tuple[str, Graph, Tensor]]:
    """``(layer name, pattern, [E, H] weights)`` of every attention call of the model on ``graph``, in order."""
    from ..nn import record_attention

    batch = Graph.batch([graph]).to(trained.device)
    with torch.no_grad(), record_attention(trained.model) as recorded:
        trained.model.eval()(batch)
    calls = [(name.replace(".attention", "").replace("layers.", "layer "), pattern, weights.cpu())
             for name, made in recorded.items() for pattern, weights in made]
    if not calls:
        raise ValueError(f"{trained.name}: the model ({trained.config.model.layer} layers, attention "
                         f"{trained.config.model.attention!r}) has no softmax attention over a pattern to show; "
                         "show-attention draws SparseMultiheadAttention layers (GPS, GT, top-k)")
    return calls


def dense_weights(pattern: Graph, weights: Tensor, head: int) -> Tensor:
    """[Nq, Nk] dense matrix of one head's [E, H] weights (zeros off the pattern)."""
    dense = torch.zeros(pattern.num_nodes, pattern.num_cols, dtype=weights.dtype)
    dense[pattern.row_index().cpu(), pattern.indices.cpu()] = weights[:, head]
    return dense


def draw_attention(calls: list[tuple[str, Graph, Tensor]], path: str | Path, title: str = "") -> Path:
    """One panel per (attention call, head): rows are calls (layers), columns heads."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..patterns.draw import draw_pattern_on

    heads = max(weights.shape[1] for _, _, weights in calls)
    side = 2.8
    fig, axes = plt.subplots(len(calls), heads, figsize=(side * heads + 0.8, side * len(calls) + 0.6),
                             squeeze=False)
    for r, (name, pattern, weights) in enumerate(calls):
        every_pair = pattern.num_edges == pattern.num_nodes * pattern.num_cols
        for h in range(heads):
            ax = axes[r][h]
            if h >= weights.shape[1]:
                ax.axis("off")
                continue
            image = draw_pattern_on(ax, pattern, heat=dense_weights(pattern, weights, h), outline=not every_pair,
                                    title=f"{name}, head {h}", fontsize=8)
            if image is not None:
                image.set_clim(0.0, float(weights[:, h].max()))
            if r < len(calls) - 1:
                ax.set_xlabel("")
            if h:
                ax.set_ylabel("")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def show_attention(run_dir: str | Path | None = None, *, pretrained: str | None = None, graph: int = 0,
                   split: str = "val", checkpoint: str = "best.pt", output: str | Path | None = None,
                   device: str = "cpu") -> Path:
    """Draw the attention of a run's (or a pretrained model's) model on graph ``graph`` of ``split``."""
    from .run import build_dataset

    trained = load_trained(run_dir, pretrained=pretrained, checkpoint=checkpoint, device=device)
    config = trained.config
    if config.data.root and not Path(config.data.root).is_absolute() and not Path(config.data.root).exists():
        config.data.root = None  # a run's relative cache folder, seen from elsewhere: use the default cache
    graphs = getattr(build_dataset(config, splits=(split,)), split)
    if not 0 <= graph < len(graphs):
        raise ValueError(f"--graph {graph}: the {split} split of {config.data.name} has graphs 0..{len(graphs) - 1}")
    chosen = graphs[graph]
    if chosen.num_nodes > MAX_DRAWN_NODES:
        raise ValueError(f"graph {graph} has {chosen.num_nodes} nodes; show-attention draws graphs of at most "
                         f"{MAX_DRAWN_NODES} (pick a smaller one with --graph)")
    calls = attention_of_graph(trained, chosen)
    if output is None:
        name = f"attention-{split}-{graph}.png"
        output = trained.folder / name if pretrained is None else Path(f"{pretrained}-{name}")
    title = f"{trained.name}: {config.data.name} {split} graph {graph} ({chosen.num_nodes} nodes)"
    return draw_attention(calls, output, title)
