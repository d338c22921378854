"""The API reference builds from the docstrings (`make docs`), one page per public module."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("pdoc", reason="pdoc builds the API reference (the dev extra; make installs it)")

BUILD = Path(__file__).resolve().parents[1] / "docs" / "build_api.py"


def test_api_reference_has_a_page_per_public_module(tmp_path):
    spec = importlib.util.spec_from_file_location("build_api", BUILD)
    build_api = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_api)
    modules = build_api.build(tmp_path)
    assert {"sparsegt.attention.api", "sparsegt.nn.gps", "sparsegt.train.trainer", "sparsegt.graph"} <= set(modules)
    for name in modules:
        page = tmp_path / (name.replace(".", "/") + ".html")
        assert page.exists(), f"no page for {name}"
    api = (tmp_path / "sparsegt" / "attention" / "api.html").read_text()
    assert "sparse_attention" in api and "Softmax attention of each query" in api
