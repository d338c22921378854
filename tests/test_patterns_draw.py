"""Pictures: every named demo pattern draws a PNG; bad names and parameters are ValueErrors."""

from __future__ import annotations

import pytest
import torch

from sparsegt.patterns import window
from sparsegt.patterns.draw import draw_pattern, pattern_defaults, show_pattern

PNG_MAGIC = b"\x89PNG"


@pytest.mark.parametrize("name", ["window", "grid2d", "virtual_nodes", "topk", "block_select"])
def test_show_pattern_writes_png(tmp_path, name):
    out = show_pattern(name, {}, tmp_path / f"{name}.png")
    assert out.read_bytes()[:4] == PNG_MAGIC


def test_show_pattern_converts_strings_and_rejects_unknown(tmp_path):
    out = show_pattern("window", {"n": "32", "w": "2", "causal": "true"}, tmp_path / "w.png")
    assert out.exists()
    with pytest.raises(ValueError, match="unknown pattern"):
        show_pattern("nope", {}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no parameter"):
        show_pattern("window", {"width": "3"}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="int"):
        show_pattern("window", {"w": "three"}, tmp_path / "x.png")
    assert "block_select" in pattern_defaults() and pattern_defaults()["window"]["w"] == 4


def test_draw_large_pattern_is_binned_and_heat_shape_checked(tmp_path):
    p = window(5000, 8)
    assert draw_pattern(p, tmp_path / "big.png", max_pixels=64).exists()
    with pytest.raises(ValueError, match="heat"):
        draw_pattern(window(4, 1), tmp_path / "h.png", heat=torch.zeros(3, 3))
