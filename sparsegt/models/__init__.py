"""Models: `GraphTransformer` (encoders -> layers -> head), its `ModelConfig`, and published presets."""

from .config import LapPEConfig, ModelConfig, RWSEConfig
from .encoders import FeatureEncoder, RRWPEncoder
from .graph_transformer import GraphTransformer, required_encodings
from .heads import EdgeHead, MLPHead, graph_pool
from .presets import PRESETS, TRAINING, preset

__all__ = ["GraphTransformer", "ModelConfig", "LapPEConfig", "RWSEConfig", "required_encodings",
           "FeatureEncoder", "RRWPEncoder", "MLPHead", "EdgeHead", "graph_pool", "PRESETS", "TRAINING",
           "preset"]
