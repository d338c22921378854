"""The package people depend on: requirements are ranges, `make` installs the pins, one version, typed, licensed."""

import re
from pathlib import Path

import pytest

import sparsegt

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_library_requirements_are_ranges_and_make_installs_the_pins():
    project = pyproject()["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["pyg"]
    assert "torch>=2.4" in requirements and "torch_geometric>=2.4" in requirements
    assert not [r for r in requirements if "==" in r], "library requirements must be ranges"
    pins = [line for line in (ROOT / "requirements-pinned.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert "torch==2.13.0" in pins and "torch_geometric==2.8.1" in pins
    makefile = (ROOT / "Makefile").read_text()
    install_lines = [line for line in makefile.splitlines() if "pip install" in line and "-e " in line]
    assert install_lines and all("-c requirements-pinned.txt" in line for line in install_lines)
    assert re.search(r"pip install --quiet -c requirements-pinned.txt torch\n", makefile)  # torch first


def test_version_is_written_once():
    config = pyproject()
    assert "version" not in config["project"] and config["project"]["dynamic"] == ["version"]
    assert config["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "sparsegt.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", sparsegt.__version__)


def test_typed_and_licensed():
    assert (ROOT / "sparsegt" / "py.typed").exists()
    assert pyproject()["tool"]["setuptools"]["package-data"]["sparsegt"] == ["py.typed"]
    assert "MIT License" in (ROOT / "LICENSE").read_text() and pyproject()["project"]["license"] == "MIT"
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
