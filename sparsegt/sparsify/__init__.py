"""Sparsifying trained models: methods that need a built `GraphTransformer` (above `models`, below `train`).

- Zero-TPrune (`ZeroTPrune`): zero-shot node pruning at inference, from the weighted PageRank of each layer's
  attention graph (`attention_weights`, `weighted_pagerank`) and similarity-based merging.
- GTSP (`GTSPModel`, `GTSPTargets`, `prune`): hard-concrete masks on pattern entries, heads, layers and weights
  (`hard_concrete`), trained with a density penalty, then removed for real.
- Sparse GIN-Attention fine-tuning (`add_sparse_gin_attention`): frozen attention + a small GIN over its graph.

Sparsification that does not need a model lives in its own layer: TEDDY's edge trimming of input graphs in
`sparsegt.patterns` (`trim_edges`), its l0-ball weight projection in `sparsegt.train` (`L0BallProjection`),
top-k FFN activations and their measurement in `sparsegt.nn`. See docs/sparsify.md.
"""

from . import gtsp
from .attention_graph import attention_weights, weighted_pagerank
from .gin_finetune import add_sparse_gin_attention
from .gtsp import GTSPModel, GTSPTargets, prune
from .hard_concrete import HardConcreteGate, density_penalty
from .zero_tprune import PrunedOutput, ZeroTPrune, layer_importance, prune_and_merge

__all__ = ["attention_weights", "weighted_pagerank", "ZeroTPrune", "PrunedOutput", "layer_importance",
           "prune_and_merge", "GTSPModel", "GTSPTargets", "prune", "HardConcreteGate", "density_penalty", "gtsp",
           "add_sparse_gin_attention"]
