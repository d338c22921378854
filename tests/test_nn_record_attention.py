"""`record_attention`: the weights it records are torch.nn.MultiheadAttention's, head by head."""

from __future__ import annotations

import torch

from sparsegt.graph import Graph
from sparsegt.nn import SparseMultiheadAttention, record_attention
from sparsegt.patterns import full
from sparsegt.train.attention_maps import dense_weights


def test_recorded_weights_equal_torch_multihead_attention():
    torch.manual_seed(0)
    n, channels, heads = 7, 12, 3
    ours = SparseMultiheadAttention(channels, heads).double().eval()
    reference = torch.nn.MultiheadAttention(channels, heads, batch_first=True).double().eval()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(n, channels, dtype=torch.float64)
    pattern = full(Graph.empty(n))
    with record_attention(ours) as recorded:
        out = ours(x, pattern=pattern)
    expected_out, expected = reference(x[None], x[None], x[None], need_weights=True, average_attn_weights=False)
    assert torch.allclose(out, expected_out[0], atol=1e-10)
    ((used, weights),) = recorded[""]
    assert weights.shape == (n * n, heads)
    for h in range(heads):
        assert torch.allclose(dense_weights(used, weights, h), expected[0, h], atol=1e-10)
    ours(x, pattern=pattern)
    assert len(recorded[""]) == 1 and ours.recorded is None  # off again after the block
