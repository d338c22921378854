"""Sparse attention over CSR patterns: the public call and its backends."""

from .api import sparse_attention
from .dense import dense_attention, densify

__all__ = ["sparse_attention", "dense_attention", "densify"]
