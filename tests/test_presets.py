"""The published presets: every field of every preset documented in docs/presets.md equals the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from sparsegt.train.config import config_to_dict
from sparsegt.train.presets import get_preset

DOC = Path(__file__).resolve().parents[1] / "docs" / "presets.md"
BOOKKEEPING = {"name", "out_dir", "data.root", "train.device", "train.threads", "train.time_limit_min",
               "train.checkpoint_every_s", "train.checkpoint_every_batches", "train.batches_per_epoch",
               "train.val_with_moving_stats", "train.eval_every", "train.patience", "train.chance_check_epochs",
               "train.compile", "train.precision", "train.loggers"}


def documented_presets() -> dict[str, dict[str, str]]:
    """``{preset: {field: ours}}`` from the tables of docs/presets.md (one ``## name — ...`` section each)."""
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        if line.startswith("#"):  # a preset's table runs from its "## name — ..." heading to the next heading
            heading = re.match(r"^## (\S+) — ", line)
            current = tables.setdefault(heading.group(1), {}) if heading else None
        elif current is not None and line.startswith("| ") and not line.startswith(("| field", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert len(cells) == 3, f"docs/presets.md row with {len(cells)} cells: {line}"
            assert cells[0] not in current, f"{cells[0]} documented twice"
            current[cells[0]] = cells[2]
    return tables


def leaves(mapping: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            out.update(leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse(text: str) -> object:
    """A documented value as YAML (with ``1e-05`` a float, as YAML 1.2 reads it)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


DOCUMENTED = documented_presets()


def test_the_published_presets_are_documented():
    assert {"gps-pattern", "gps-cluster", "gt-pattern", "gt-cluster"} <= set(DOCUMENTED)


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_field_of_the_preset_matches_its_documented_value(name):
    fields = {k: v for k, v in leaves(config_to_dict(get_preset(name))).items() if k not in BOOKKEEPING}
    table = DOCUMENTED[name]
    assert set(fields) - set(table) == set(), f"{name}: fields missing from docs/presets.md"
    assert set(table) - set(fields) == set(), f"{name}: docs/presets.md lists fields the preset does not have"
    for field, ours in table.items():
        assert fields[field] == parse(ours), f"{name}: {field} is {fields[field]!r}, documented {ours}"


def test_values_that_were_wrong_before_the_audit():
    """The differences issue #13 found, pinned by value."""
    gps = get_preset("gps-pattern")
    assert (gps.train.lr, gps.model.lap_pe.k, gps.model.lap_pe.normalization, gps.train.lr_update) == \
        (5e-4, 16, "none", "epoch")
    gt = get_preset("gt-pattern")
    assert (gt.model.lap_pe.skip_trivial, gt.model.lap_pe.kind, gt.train.optimizer) == (True, "linear", "adam")
