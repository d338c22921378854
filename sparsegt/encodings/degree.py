"""Degree features: in/out degree and GRIT's log-degree scaler input."""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import Graph
from .adjacency import check_square

__all__ = ["degree_features", "log_degree"]


def degree_features(graph: Graph) -> tuple[Tensor, Tensor]:
    """``(in_degree [N], out_degree [N])`` int64 edge counts (self-loops and duplicates count).

    In PyG's convention (``edge_index[0]`` = source) the edges *into* node i are the entries of CSR row i
    (the keys i aggregates from), so ``in_degree`` is the row length and ``out_degree`` the number of times
    i appears as a key. For graphs stored in both directions the two are equal.
    """
    check_square(graph, "degree_features")
    return graph.degree("row"), graph.degree("col")


def log_degree(graph: Graph) -> Tensor:
    """[N, 1] float32 ``log(in_degree + 1)``, the input of GRIT's degree scaler (``log(deg + 1)``)."""
    in_degree, _ = degree_features(graph)
    return torch.log1p(in_degree.to(torch.float32)).unsqueeze(-1)
