"""Small pieces every transformer layer shares: the position-wise feed-forward block and the norm choice."""

from __future__ import annotations

from torch import Tensor, nn

from .renamed import renamed_keywords

__all__ = ["FeedForward", "make_norm", "NORMS"]

NORMS = ("batch", "layer", "none")


def make_norm(kind: str, hidden: int) -> nn.Module:
    """``"batch"`` -> BatchNorm1d over nodes, ``"layer"`` -> LayerNorm per node, ``"none"`` -> identity."""
    if kind == "batch":
        return nn.BatchNorm1d(hidden)
    if kind == "layer":
        return nn.LayerNorm(hidden)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class FeedForward(nn.Module):
    """``Dropout(W2 Dropout(act(W1 x)))``: [*, C] -> [*, C] through a hidden width ``expansion * C``.

    ``act`` is the submodule ``activation``: ReLU by default, or a sparse one (`sparsegt.nn.sparse_activation`:
    exact or statistical top-k; `sparsify_feed_forward` swaps it in a built model). It holds no parameters, so
    checkpoints are the same whichever it is; `activation_density` hooks it to measure activation sparsity.
    ``output_dropout=False`` leaves out the outer dropout (GRIT's FFN: ``W2 Dropout(act(W1 x))``)."""

    @renamed_keywords(channels="hidden")
    def __init__(self, hidden: int, expansion: int = 2, dropout: float = 0.0, output_dropout: bool = True,
                 activation: nn.Module | None = None) -> None:
        super().__init__()
        self.lin1 = nn.Linear(hidden, expansion * hidden)
        self.activation = nn.ReLU() if activation is None else activation
        self.lin2 = nn.Linear(expansion * hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.output_dropout = output_dropout

    def reset_parameters(self) -> None:
        self.lin1.reset_parameters()
        self.lin2.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        out = self.lin2(self.dropout(self.activation(self.lin1(x))))
        return self.dropout(out) if self.output_dropout else out
