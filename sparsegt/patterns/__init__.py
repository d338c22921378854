"""Attention patterns: functions that return a `Graph` (rows = queries, columns = keys) for
`sparse_attention`. Static (sequences, images, graphs), content-based (built from q/k each step),
sparse + low-rank merging, composition, pictures, and TEDDY's
degree-based edge trimming. See docs/patterns.md.
"""

from .blocks import antidiagonal_block_mass, block_select, select_blocks
from .combiner import CombinerPattern, block_regions, combiner_pattern
from .compose import add_self_loops, bigbird, causal, intersect, subsample, union
from .content import edge_scores, threshold_topk, topk
from .draw import draw_pattern, pattern_defaults, show_pattern
from .edge_trim import kept_edge_counts, teddy_edge_scores, trim_edges
from .graph import expander, full, khop, seed_neighbourhood, virtual_nodes, virtual_token_graph
from .lowrank import (
    favor_features,
    lowrank_complement,
    merge_partial_attention,
    random_features_projection,
    scatterbrain_attention,
)
from .routes import RoutingPattern, bilevel_routing, grid_regions, routing, spherical_kmeans
from .static import (
    block_diagonal,
    causal_sequence,
    dilated,
    global_tokens,
    grid2d,
    random,
    strided,
    window,
)

__all__ = [
    "full", "khop", "seed_neighbourhood", "expander", "virtual_nodes", "virtual_token_graph",
    "window", "dilated", "strided", "global_tokens", "random", "bigbird", "block_diagonal",
    "causal_sequence", "grid2d",
    "union", "intersect", "add_self_loops", "causal", "subsample",
    "topk", "threshold_topk", "edge_scores",
    "routing", "RoutingPattern", "spherical_kmeans", "bilevel_routing", "grid_regions",
    "block_select", "antidiagonal_block_mass", "select_blocks",
    "merge_partial_attention", "random_features_projection", "favor_features", "lowrank_complement",
    "scatterbrain_attention",
    "draw_pattern", "show_pattern", "pattern_defaults",
    "teddy_edge_scores", "trim_edges", "kept_edge_counts",
    "combiner_pattern", "CombinerPattern", "block_regions",
]
