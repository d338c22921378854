"""Zero-TPrune: zero-shot node pruning of a trained `GraphTransformer` at inference, between layers.

Wang, Dedhia & Jha, "Zero-TPrune: Zero-Shot Token Pruning through Leveraging of the Attention Graph in
Pre-Trained Transformers", CVPR 2024 (arXiv:2312.17464). No fine-tuning: after a layer, the tokens that the
layer's attention graph ranks least important are removed, and each one is merged into the kept token it is
most similar to, so its information is not simply dropped. Here the tokens are the nodes of each graph:

1. importance (the paper's I-stage): the weighted PageRank of the layer's attention graph,
   ``s = WPR(A)`` with ``A`` the layer's softmax weights (`attention_weights`, `weighted_pagerank`; damping 1 by
   default, the paper's form), averaged over heads;
2. per graph b with n_b nodes, the ``r_b = round(ratio * n_b)`` lowest-scoring nodes are pruned (at most
   ``n_b - 1``: a graph keeps a node); equal scores prune the lower index first;
3. merging (the paper's similarity-based S-stage, in the size-weighted form of token merging): every pruned
   node p joins the kept node m of its graph with the highest cosine similarity of the layer's output
   features (ties: lowest index), and ``x_m <- (s_m x_m + sum_{p->m} s_p x_p) / (s_m + sum_{p->m} s_p)``,
   ``s_m <- s_m + sum s_p``, where s counts the original nodes a node stands for (1 at the start);
4. the next layers see the induced subgraph on the kept nodes: graph edges and attention-pattern entries
   between kept nodes, with their edge states (``full`` attention stays ``full`` on the kept nodes).

Graph-level outputs pool the kept nodes (the model's pooling, unweighted); node-level outputs give every
original node the output of the node it was merged into. Simplifications against the paper, stated: heads
are averaged with equal weights (the paper's emphasis on informative heads is left out); similarity is
measured on node features, not keys; edges of pruned nodes are dropped, not rerouted to their target.

Supported layers (the attention graph is read from a `SparseMultiheadAttention` over a `Graph` pattern):
`GTLayer`, `GPSLayer` with ``full`` / ``pattern`` / ``topk`` attention, `TopKAttentionLayer`; families
whose state carries pair states, virtual tokens or per-batch context (GRIT, Exphormer, MPNN+VN) are not.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ..graph import Graph
from ..models import GraphTransformer
from ..nn import GPSLayer, GTLayer, LayerState, TopKAttentionLayer
from ..patterns import full
from .attention_graph import attention_weights, blocks_pay, padded_blocks, weighted_pagerank

__all__ = ["ZeroTPrune", "PrunedOutput", "layer_importance"]


@dataclass
class PrunedOutput:
    """What `ZeroTPrune.run` returns.

    Attributes:
        output: the model's output (node-level: one row per original node; graph-level: [B, outputs]).
        nodes_per_layer: [L + 1] node counts of the batch entering each layer, and (last) the readout.
        nodes_per_graph: [B] node counts of each graph at the readout.
    """

    output: Tensor
    nodes_per_layer: list[int]
    nodes_per_graph: list[int]


def layer_importance(layer: torch.nn.Module, state: LayerState, damping: float = 1.0, max_iter: int = 30,
                     tol: float = 1e-6) -> Tensor:
    """[N] head-averaged weighted PageRank of the attention graph ``layer`` builds on ``state`` (its input)."""
    attention, pattern, edge_attr, keep_top = _attention_inputs(layer, state)
    pattern, weights = attention_weights(attention, state.x, pattern, edge_attr=edge_attr, keep_top=keep_top)
    return weighted_pagerank(pattern, weights, damping, max_iter, tol).mean(-1)


def _attention_inputs(layer: torch.nn.Module, state: LayerState):
    """(attention module, pattern, edge_attr, keep_top) of the layer's attention call on ``state``."""
    if isinstance(layer, GTLayer):
        return layer.attention, state.graph, state.edge_attr if layer.edge_features else None, None
    if isinstance(layer, GPSLayer) and layer.attention_kind in ("full", "pattern", "topk"):
        if state.pattern is None and layer.attention_kind == "pattern":
            raise ValueError("GPSLayer(attention='pattern') needs state.pattern")
        pattern = full(state.graph) if state.pattern is None else state.pattern
        return layer.attention, pattern, None, layer.topk if layer.attention_kind == "topk" else None
    if isinstance(layer, TopKAttentionLayer):
        pattern = full(state.graph) if state.pattern is None else state.pattern
        return layer.attention, pattern, None, layer.k
    kind = getattr(layer, "attention_kind", None)
    raise ValueError(f"Zero-TPrune reads the attention graph of GTLayer, GPSLayer (attention 'full', 'pattern' or "
                     f"'topk') and TopKAttentionLayer; got {type(layer).__name__}"
                     + (f" with attention={kind!r}" if kind else "") + ": prune after another layer")


class ZeroTPrune:
    """Run a trained `GraphTransformer` with Zero-TPrune node pruning after chosen layers (module docstring).

    Args:
        model: the trained model (run in eval mode, without gradients; its mode is restored).
        prune_after: ``{layer index l: ratio}``: after layer l (0 <= l < L - 1), prune ``round(ratio * n_b)``
            of each graph's current nodes, ratio in [0, 1). Ratio 0 runs the pruning path and removes nothing.
        damping, max_iter, tol: of `weighted_pagerank` (damping 1: the paper's weighted PageRank).

    ``pruner(batch)`` returns the output; ``pruner.run(batch)`` a `PrunedOutput` with the pruned sizes.
    """

    def __init__(self, model: GraphTransformer, prune_after: Mapping[int, float], *, damping: float = 1.0,
                 max_iter: int = 30, tol: float = 1e-6) -> None:
        if not isinstance(model, GraphTransformer):
            raise ValueError(f"ZeroTPrune wraps a sparsegt GraphTransformer, got {type(model).__name__}")
        if model.task.level == "edge":
            raise ValueError("ZeroTPrune prunes nodes, so it serves node- and graph-level tasks, not edge-level ones")
        num_layers = len(model.layers)
        for index, ratio in prune_after.items():
            if not isinstance(index, int) or not 0 <= index < num_layers - 1:
                raise ValueError(f"prune_after: layer index {index!r} must be an int in [0, {num_layers - 2}] "
                                 f"(pruning after the last layer saves no layer's work)")
            if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
                raise ValueError(f"prune_after[{index}] = {ratio!r}: the pruned fraction must be in [0, 1)")
            _check_supported(model.layers[index])
        self.model, self.prune_after = model, dict(prune_after)
        self.damping, self.max_iter, self.tol = float(damping), int(max_iter), float(tol)

    def __call__(self, batch: Graph) -> Tensor:
        return self.run(batch).output

    @torch.no_grad()
    def run(self, batch: Graph) -> PrunedOutput:
        """The pruned forward: encode -> prepare -> for each layer: (importance) layer (prune + merge) -> head."""
        model = self.model
        was_training = model.training
        model.eval()
        try:
            state = model.family.prepare(model, model.encode(batch))
            if state.pair is not None or state.virtual is not None or state.context is not None:
                raise ValueError(f"ZeroTPrune: the {model.config.layer!r} family carries pair states, virtual tokens "
                                 "or per-batch context between layers, which pruning does not rewrite yet")
            origin = torch.arange(state.x.shape[0], device=state.x.device)    # original node -> current node
            size = torch.ones(state.x.shape[0], dtype=state.x.dtype, device=state.x.device)
            counts = [state.x.shape[0]]
            for index, layer in enumerate(model.layers):
                ratio = self.prune_after.get(index)
                importance = None if ratio is None else layer_importance(layer, state, self.damping,
                                                                         self.max_iter, self.tol)
                state = layer(state)
                if ratio is not None:
                    state, origin, size = prune_and_merge(state, importance, ratio, origin, size)
                counts.append(state.x.shape[0])
            output = model.read_out(state.x, state.graph, state.virtual)
            if model.task.level == "node":
                output = output.index_select(0, origin)
        finally:
            model.train(was_training)
        per_graph = state.graph.ptr.diff().tolist() if state.graph.ptr is not None else [state.graph.num_nodes]
        return PrunedOutput(output, counts, per_graph)


def _check_supported(layer: torch.nn.Module) -> None:
    if isinstance(layer, GTLayer | TopKAttentionLayer):
        return
    if isinstance(layer, GPSLayer) and layer.attention_kind in ("full", "pattern", "topk"):
        return
    _attention_inputs(layer, LayerState(torch.zeros(0, 1), Graph.empty(0)))   # raises the explanation


def prune_and_merge(state: LayerState, importance: Tensor, ratio: float, origin: Tensor,
                    size: Tensor) -> tuple[LayerState, Tensor, Tensor]:
    """Steps 2-4 of the module docstring on one state: returns (state on the kept nodes, new origin [N0]
    (original node -> kept node), new sizes [N_kept])."""
    graph, x = state.graph, state.x
    n = x.shape[0]
    ptr = graph.ptr if graph.ptr is not None else torch.tensor([0, n], device=x.device)
    counts = ptr.diff()
    graph_of = graph.batch_index
    pruned_count = torch.floor(ratio * counts.double() + 0.5 + 1e-9).long().clamp(min=0)
    pruned_count = torch.minimum(pruned_count, (counts - 1).clamp_min(0))
    # rank within each graph by (importance ascending, index): two stable sorts
    order = torch.sort(importance, stable=True).indices
    order = order[torch.sort(graph_of[order], stable=True).indices]
    rank = torch.empty_like(order)
    rank[order] = torch.arange(n, device=x.device) - ptr[:-1][graph_of[order]]
    pruned = rank < pruned_count[graph_of]
    keep = ~pruned

    target = torch.arange(n, device=x.device)
    if bool(pruned.any()):
        target = torch.where(pruned, most_similar_kept(F.normalize(x, dim=-1), ptr, pruned), target)
    total = torch.zeros_like(x).index_add_(0, target, x * size[:, None])
    merged_size = torch.zeros_like(size).index_add_(0, target, size)
    new_x = (total[keep] / merged_size[keep, None]).to(x.dtype)

    new_index = torch.cumsum(keep.long(), 0) - 1
    new_ptr = torch.cat([ptr[:1], torch.cumsum(counts - pruned_count, 0)])
    new_graph, edge_keep = _induced(graph, keep, new_index, new_ptr if graph.ptr is not None else None)
    edge_attr = None if state.edge_attr is None else state.edge_attr[edge_keep]
    pattern = state.pattern
    if isinstance(pattern, Graph):
        pattern = _induced(pattern, keep, new_index, new_ptr if pattern.ptr is not None else None)[0]
    elif pattern is not None:
        raise ValueError(f"ZeroTPrune: cannot prune an attention pattern of type {type(pattern).__name__}")
    pe = None if state.pe is None else state.pe[keep]
    new_state = replace(state, x=new_x, graph=new_graph, edge_attr=edge_attr, pattern=pattern, pe=pe)
    return new_state, new_index[target[origin]], merged_size[keep]


def most_similar_kept(unit: Tensor, ptr: Tensor, pruned: Tensor) -> Tensor:
    """[N] for every pruned node the kept node of its graph whose row of ``unit`` [N, C] (unit vectors) has the
    largest dot product with its own (ties: the lowest index); other entries are meaningless. The graphs'
    [n_b, n_b] similarity blocks come from one product of zero-padded [B, n_max, C] blocks (when the padding
    holds at most 4x sum n_b^2 entries), else from the (pruned, kept) pairs gathered."""
    n = unit.shape[0]
    if blocks_pay(ptr.diff()):
        (padded, keep), graph_of, position = padded_blocks(ptr, unit, ~pruned)
        similarity = (padded @ padded.transpose(1, 2)).masked_fill_(~keep[:, None, :], -torch.inf)
        best = similarity.argmax(-1)                                   # [B, n_max]: the first maximum
        return ptr[:-1].index_select(0, graph_of) + best[graph_of, position]
    candidates = full(Graph.empty(n, ptr=ptr))
    row, col = candidates.row_index(), candidates.indices
    pair = pruned[row] & ~pruned[col]
    row, col = row[pair], col[pair]
    similarity = (unit[row] * unit[col]).sum(-1)
    best = similarity.new_full((n,), -torch.inf).scatter_reduce(0, row, similarity, "amax")
    is_best = similarity == best[row]
    return torch.full((n,), n, device=unit.device).scatter_reduce(0, row[is_best], col[is_best], "amin")


def _induced(pattern: Graph, keep: Tensor, new_index: Tensor, ptr: Tensor | None) -> tuple[Graph, Tensor]:
    """(the sub-pattern on the kept nodes, renumbered, with its tensors; [E] mask of the entries kept)."""
    row, col = pattern.row_index(), pattern.indices
    edge_keep = keep[row] & keep[col]
    num_kept = int(keep.sum())
    new_row = new_index[row[edge_keep]]
    indptr = torch.zeros(num_kept + 1, dtype=torch.long, device=keep.device)
    indptr[1:] = torch.cumsum(torch.bincount(new_row, minlength=num_kept), 0)
    out = Graph(indptr, new_index[col[edge_keep]], num_kept,
                node_data={k: t[keep] for k, t in pattern.node_data.items()},
                edge_data={k: t[edge_keep] for k, t in pattern.edge_data.items()},
                graph_data=pattern.graph_data, ptr=ptr, col_ptr=ptr,
                edge_ptr=None if ptr is None else indptr[ptr], validate=False)
    return out, edge_keep
