"""Positional and structural encodings: compute them on a `Graph`, embed them with nn encoders.

- `add_encodings` — LapPE and RWSE for a dataset of graphs, batched, threaded, cached on disk.
- `laplacian_pe`, `rwse` — the same for one graph (or a batch, graph by graph).
- `rrwp`, `rrwp_node` — GRIT's random-walk probabilities on the entries of an attention pattern.
- `shortest_path_distance` — hop distances on the entries of a pattern (Graphormer's SPD).
- `degree_features`, `log_degree` — in/out degree, GRIT's log-degree.
- `LapPEEncoder`, `RWSEEncoder`, `SPDBias`, `RRWPLinearEncoder` — the nn modules that embed them.
"""

from .cache import default_cache_dir
from .degree import degree_features, log_degree
from .encoders import LapPEEncoder, RRWPLinearEncoder, RWSEEncoder, SPDBias
from .laplacian import laplacian_pe, normalized_laplacian
from .precompute import add_encodings
from .random_walk import random_walk_matrix, rwse, rwse_estimate
from .relative import rrwp, rrwp_node, shortest_path_distance

__all__ = [
    "add_encodings", "laplacian_pe", "normalized_laplacian", "rwse", "rwse_estimate", "random_walk_matrix",
    "rrwp", "rrwp_node", "shortest_path_distance", "degree_features", "log_degree", "default_cache_dir",
    "LapPEEncoder", "RWSEEncoder", "SPDBias", "RRWPLinearEncoder",
]
