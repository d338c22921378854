"""The local message-passing branch that GPS, Exphormer and MPNN + virtual node share.

Every local MPNN module (`GINEConv`, `GatedGCNConv`, `GCNConv`, or any module with the same contract) is
called as ``conv(x, graph, edge_attr) -> (x [N, C], edge_attr [E, C] or None)`` and says with its
``residual`` attribute whether it adds its input itself (GatedGCN: residual, BatchNorm, ReLU and dropout
inside, as GraphGPS) or leaves the residual to the layer (GINE, GCN: ``edge_attr`` returned unchanged)::

    h = conv(x, e)                        if conv.residual
    h = x + Dropout(conv(x, e))           otherwise

`make_local` builds the modules a `ModelConfig` names (``"gine"``, ``"gatedgcn"``); layers also take a
module directly, as PyG's ``GPSConv`` takes its ``conv``. `EdgeIndexConv` wraps a module called PyG's way,
``conv(x, edge_index, **kwargs) -> x`` (any PyG ``MessagePassing``), into this contract.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..graph import Graph
from .gatedgcn import GatedGCNConv
from .gine import GINEConv

__all__ = ["LOCAL_MODELS", "make_local", "local_update", "EdgeIndexConv"]

LOCAL_MODELS = ("gine", "gatedgcn", "none")


def make_local(local: str | nn.Module | None, hidden: int, dropout: float = 0.0, norm: str = "batch",
               allowed: tuple[str, ...] = LOCAL_MODELS) -> nn.Module | None:
    """The local MPNN module named by ``local`` (a module is returned as it is; ``"none"`` / None: None).

    GatedGCN gets the layer's ``dropout`` and BatchNorm when ``norm="batch"`` (GraphGPS)."""
    if local is None or isinstance(local, nn.Module):
        return local
    if local not in allowed:
        raise ValueError(f"local must be one of {allowed}, got {local!r}")
    if local == "gine":
        return GINEConv(hidden)
    if local == "gatedgcn":
        return GatedGCNConv(hidden, dropout=dropout, norm=norm)
    return None


def local_update(conv: nn.Module, x: Tensor, graph: Graph, edge_attr: Tensor | None, dropout: nn.Module,
                 **kwargs) -> tuple[Tensor, Tensor | None]:
    """``(h [N, C], edge_attr)`` of the local branch before its norm (module docstring); ``kwargs`` go to
    the module (GatedGCN's ``edge_scale``)."""
    h, edge_attr = conv(x, graph, edge_attr, **kwargs)
    if not getattr(conv, "residual", False):
        h = x + dropout(h)
    return h, edge_attr


class EdgeIndexConv(nn.Module):
    """A message-passing module called PyG's way as a local MPNN of this package's contract.

    ``conv(x [N, C], edge_index [2, E], **kwargs) -> [N, C]`` (PyG's ``GINEConv``, ``GINConv``, ``GCNConv``...)
    becomes ``EdgeIndexConv(conv)(x, graph, edge_attr) -> (x [N, C], edge_attr unchanged)``: it gets
    ``graph.to_edge_index()`` (CSR order; row 0 keys/sources, row 1 queries/targets, as PyG) and
    ``edge_attr=edge_attr`` when that is not None. ``residual = False``: the layer adds the input, as
    ``GPSConv`` does. A layer called PyG's way (`GPSLayer` with ``x, edge_index, batch``) calls ``conv``
    directly with the caller's ``edge_index`` and keyword arguments, as ``GPSConv`` does.
    """

    residual = False

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def reset_parameters(self) -> None:
        if hasattr(self.conv, "reset_parameters"):
            self.conv.reset_parameters()

    def forward(self, x: Tensor, graph: Graph, edge_attr: Tensor | None = None,
                **kwargs) -> tuple[Tensor, Tensor | None]:
        if edge_attr is not None:
            kwargs["edge_attr"] = edge_attr
        return self.conv(x, graph.to_edge_index(), **kwargs), edge_attr
