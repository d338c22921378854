"""Layers on the sparse kernel: attention, message passing, and the graph transformers of the literature.

- `SparseMultiheadAttention`: ``torch.nn.MultiheadAttention`` over a pattern's edges (bias / gate inputs).
- Message passing on CSR: `GINEConv`, `GatedGCNConv`, `GCNConv` (segment primitives in `segment`), all
  returning ``(x, edge_attr)`` (`local`).
- `LayerState`: what every layer takes and returns (``state = layer(state)``).
- `EdgeIndexConv`: a message-passing module called PyG's way (``conv(x, edge_index)``) as a local MPNN.
- Layers: `GTLayer` (Dwivedi & Bresson), `GPSLayer` (GraphGPS; also called PyG's way, in place of ``GPSConv``),
  `GRITLayer`, `ExphormerLayer`, `MPNNVirtualNodeLayer`, `TopKAttentionLayer` (TANGNN), `PerformerAttention`
  (per-graph FAVOR+).
- `LargeGTLayer` (LargeGT: seeds attend to their sampled 2-hop tokens and to an `EMACodebook` of the graph).
- `CombinerAttention` (Combiner): own-region keys directly, other regions through pooled summaries.
- `GINAttention` / `GINAttentionAdapter` (Graph-Aware Isomorphic Attention): GIN / PNA over the attention graph.
- Activation sparsity: `TopKReLU` / `StatisticalTopKReLU` (Lazy Neuron, Spark) as ``FeedForward.activation``,
  `sparsify_feed_forward` to swap them into a built model, `activation_density` to measure it.
"""

from .activation_density import activation_density
from .attention import SparseMultiheadAttention, record_attention
from .blocks import FeedForward, make_norm
from .codebook import EMACodebook
from .combiner import CombinerAttention, combiner_attention
from .exphormer import (
    ExphormerAttention,
    ExphormerEmbeddings,
    ExphormerInputs,
    ExphormerLayer,
    ExphormerPattern,
    exphormer_pattern,
    pe_distance,
)
from .gatedgcn import GatedGCNConv
from .gcn import GCNConv
from .gin_attention import GINAttention, GINAttentionAdapter
from .gine import GINEConv
from .gps import GPSLayer
from .grit import GRITAttention, GRITLayer, rrwp_pairs
from .gt import GTLayer
from .largegt import (
    LargeGTGlobalAttention,
    LargeGTInputs,
    LargeGTLayer,
    LargeGTLocalAttention,
    token_pattern,
)
from .local import EdgeIndexConv, local_update, make_local
from .mpnn import MPNNLayer
from .mpnn_vn import MPNNVirtualNodeLayer
from .performer import PerformerAttention
from .sparse_activation import (
    StatisticalTopKReLU,
    TopKReLU,
    sparsify_feed_forward,
    statistical_topk_threshold,
    topk_mask,
)
from .state import LayerState
from .topk import TopKAttentionLayer

__all__ = [
    "LayerState", "SparseMultiheadAttention", "record_attention", "FeedForward", "make_norm", "make_local",
    "local_update",
    "GINEConv", "GatedGCNConv", "GCNConv", "EdgeIndexConv",
    "GTLayer", "GPSLayer", "GRITAttention", "GRITLayer", "rrwp_pairs",
    "ExphormerAttention", "ExphormerEmbeddings", "ExphormerInputs", "ExphormerLayer", "ExphormerPattern", "pe_distance",
    "exphormer_pattern",
    "MPNNLayer", "MPNNVirtualNodeLayer", "PerformerAttention", "TopKAttentionLayer",
    "TopKReLU", "StatisticalTopKReLU", "sparsify_feed_forward", "statistical_topk_threshold", "topk_mask",
    "activation_density", "CombinerAttention", "combiner_attention",
    "GINAttention", "GINAttentionAdapter",
    "EMACodebook", "LargeGTLayer", "LargeGTLocalAttention", "LargeGTGlobalAttention", "LargeGTInputs",
    "token_pattern",
]
