"""`LayerState`: what flows through a stack of layers. Every layer family takes one and returns one.

    state = LayerState(x, graph, edge_attr)          # what the encoders give
    state = family.prepare(model, state)             # once per batch: patterns, virtual tokens, pair states
    for layer in layers:
        state = layer(state)                         # each layer returns a new state (dataclasses.replace)

A layer reads the fields it needs and replaces the ones it updates; the others pass through untouched, so
layers of different families see one signature and a model needs no per-family branch to run them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..graph import Graph

__all__ = ["LayerState"]


@dataclass
class LayerState:
    """The states of one batch between two layers.

    Attributes:
        x: [N, C] node states.
        graph: the batch (`Graph`): local edges, ``ptr`` / ``batch_index``; never changed by a layer.
        edge_attr: [E, C] edge states in ``graph``'s CSR order, or None.
        pattern: the attention pattern the family reads, built once per batch: a `Graph` [N, N] (GPS's
            ``full`` or expander union, GRIT's pairs, top-k candidates), an `ExphormerPattern`, or None
            (the layer uses ``graph`` or its own default).
        pair: [E_pattern, C] pair states on ``pattern``'s entries (GRIT), or None.
        virtual: [B * V, C] virtual-token states (graph-major), or None.
        pe: [N, P] positional encodings kept apart from ``x`` for the layers to read (EquivStableLapPE's
            ``lap_pe.combine="gate"``), or None.
        context: per-batch inputs of the family that layers read and never change (GRIT's log degree [N],
            Exphormer's `ExphormerInputs`), or None.
    """

    x: Tensor
    graph: Graph
    edge_attr: Tensor | None = None
    pattern: Any = None
    pair: Tensor | None = None
    virtual: Tensor | None = None
    pe: Tensor | None = None
    context: Any = None
