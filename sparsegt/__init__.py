"""sparsegt: sparse attention on graphs.

Every attention pattern is a graph: `Graph` holds a CSR query -> key pattern, and
`sparse_attention(q, k, v, pattern)` runs softmax attention over its edges.
"""

from .attention import sparse_attention
from .graph import Graph

__version__ = "0.1.0"
__all__ = ["Graph", "sparse_attention", "__version__"]
