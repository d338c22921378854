"""sparsegt: sparse attention on graphs.

Every attention pattern is a graph: `Graph` holds a CSR query -> key pattern, and
`sparse_attention(q, k, v, pattern)` runs softmax attention over its edges.
"""

import os

# OpenMP threads (torch's and numba's) that spin while waiting starve the main thread whenever the cores
# are shared: 2.9 s -> 0.05 s per training step measured on a busy 2-core machine. Read once, when the
# OpenMP runtime loads with torch, so it only takes effect if sparsegt is imported before torch (the CLI).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .attention import sparse_attention  # noqa: E402
from .graph import Graph  # noqa: E402

__version__ = "0.1.0"
__all__ = ["Graph", "sparse_attention", "__version__"]
