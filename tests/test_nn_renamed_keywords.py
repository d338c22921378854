"""One vocabulary (docs/conventions.md, issue #15): renamed constructor keywords keep working for one release
with a DeprecationWarning, and build exactly what the new names build (same state_dict keys and weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparsegt.encodings import RWSEEncoder
from sparsegt.nn.blocks import FeedForward
from sparsegt.nn.combiner import CombinerAttention
from sparsegt.nn.exphormer import ExphormerAttention, ExphormerEmbeddings, ExphormerLayer
from sparsegt.nn.gatedgcn import GatedGCNConv
from sparsegt.nn.gin_attention import GINAttention
from sparsegt.nn.gine import GINEConv
from sparsegt.nn.gps import GPSLayer
from sparsegt.nn.grit import GRITAttention, GRITLayer
from sparsegt.nn.gt import GTLayer
from sparsegt.nn.mpnn import MPNNLayer
from sparsegt.nn.mpnn_vn import MPNNVirtualNodeLayer
from sparsegt.nn.topk import TopKAttentionLayer

# (class, positional arguments before the width, further keyword arguments)
WIDTH_FIRST = [(GPSLayer, (), {"num_heads": 2}), (GTLayer, (), {"num_heads": 2}), (GRITLayer, (), {"num_heads": 2}),
               (GRITAttention, (), {"num_heads": 2}), (ExphormerLayer, (), {"num_heads": 2}),
               (ExphormerAttention, (), {"num_heads": 2}), (ExphormerEmbeddings, (), {"num_virtual": 2}),
               (GatedGCNConv, (), {}), (GINEConv, (), {}),
               (MPNNLayer, ("gine",), {}), (MPNNVirtualNodeLayer, (), {}), (TopKAttentionLayer, (), {"num_heads": 2}),
               (CombinerAttention, (), {"num_heads": 2}), (GINAttention, (), {"num_heads": 2}), (FeedForward, (), {})]


def _built(cls, before, kwargs, **width):
    torch.manual_seed(0)
    return cls(*before, **width, **kwargs)


@pytest.mark.parametrize(("cls", "before", "kwargs"), WIDTH_FIRST, ids=[c[0].__name__ for c in WIDTH_FIRST])
def test_channels_is_the_deprecated_name_of_hidden(cls, before, kwargs):
    new = _built(cls, before, kwargs, hidden=8)
    with pytest.warns(DeprecationWarning, match=rf"{cls.__name__}\(channels=...\) is deprecated.*use hidden="):
        old = _built(cls, before, kwargs, channels=8)
    assert list(old.state_dict()) == list(new.state_dict())
    for key, value in new.state_dict().items():
        assert torch.equal(old.state_dict()[key], value), key
    with pytest.raises(TypeError, match="got both channels= and hidden="):
        cls(*before, channels=8, hidden=8, **kwargs)


@pytest.mark.parametrize("cls", [GRITAttention, ExphormerAttention, GatedGCNConv, GINEConv])
def test_the_channels_attribute_still_reads_the_width(cls):
    layer = cls(8, 2) if cls in (GRITAttention, ExphormerAttention) else cls(8)
    assert layer.hidden == 8
    with pytest.warns(DeprecationWarning, match="channels is deprecated"):
        assert layer.channels == 8


def test_gin_attention_dropout_is_the_deprecated_name_of_attn_dropout():
    assert GINAttention(8, 2, attn_dropout=0.25).attention.attn_dropout == 0.25
    with pytest.warns(DeprecationWarning, match=r"GINAttention\(dropout=...\) is deprecated.*use attn_dropout="):
        layer = GINAttention(8, 2, dropout=0.25)
    assert layer.attention.attn_dropout == 0.25


def test_rwse_encoder_batch_norm_is_the_deprecated_spelling_of_norm():
    assert isinstance(RWSEEncoder(16, 8).norm, nn.BatchNorm1d)
    assert isinstance(RWSEEncoder(16, 8, norm="none").norm, nn.Identity)
    with pytest.warns(DeprecationWarning, match=r"RWSEEncoder\(batch_norm=...\) is deprecated"):
        assert isinstance(RWSEEncoder(16, 8, batch_norm=False).norm, nn.Identity)
    with pytest.warns(DeprecationWarning):
        assert isinstance(RWSEEncoder(16, 8, "linear", False).norm, nn.Identity)  # the old fourth positional
    with pytest.warns(DeprecationWarning):
        assert isinstance(RWSEEncoder(16, 8, batch_norm=True).norm, nn.BatchNorm1d)
    with pytest.raises(ValueError, match="norm must be 'batch' or 'none'"):
        RWSEEncoder(16, 8, norm="layer")
