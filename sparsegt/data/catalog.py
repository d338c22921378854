"""Every named dataset: ``load_dataset(name)`` and ``list_datasets()``.

The table ``DATASETS`` maps a name to its card and to the function that builds it, with the fixed
options that make the named variant (``pattern-small`` = ``load_pattern(size="small")``). Loaders of
datasets that need an optional package import it only when called.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import algorithmic, csl, large_sbm, molecules, sbm, user
from .dataset import Dataset, DatasetCard

__all__ = ["load_dataset", "list_datasets", "dataset_names", "DATASETS", "get_card"]


@dataclass(frozen=True)
class CatalogEntry:
    card: DatasetCard
    load: Callable[..., Dataset]
    fixed: dict[str, Any] = field(default_factory=dict)


DATASETS: dict[str, CatalogEntry] = {
    "pattern": CatalogEntry(sbm.PATTERN_CARD, sbm.load_pattern, {"size": "full"}),
    "pattern-small": CatalogEntry(sbm.PATTERN_CARD, sbm.load_pattern, {"size": "small"}),
    "pattern-tiny": CatalogEntry(sbm.PATTERN_CARD, sbm.load_pattern, {"size": "tiny"}),
    "pattern-edges": CatalogEntry(sbm.PATTERN_EDGES_CARD, sbm.load_pattern_edges, {"size": "full"}),
    "pattern-edges-small": CatalogEntry(sbm.PATTERN_EDGES_CARD, sbm.load_pattern_edges, {"size": "small"}),
    "pattern-edges-tiny": CatalogEntry(sbm.PATTERN_EDGES_CARD, sbm.load_pattern_edges, {"size": "tiny"}),
    "cluster": CatalogEntry(sbm.CLUSTER_CARD, sbm.load_cluster, {"size": "full"}),
    "cluster-small": CatalogEntry(sbm.CLUSTER_CARD, sbm.load_cluster, {"size": "small"}),
    "cluster-tiny": CatalogEntry(sbm.CLUSTER_CARD, sbm.load_cluster, {"size": "tiny"}),
    "dcsbm": CatalogEntry(large_sbm.DCSBM_CARD, large_sbm.load_dcsbm),
    "dcsbm-tiny": CatalogEntry(large_sbm.DCSBM_CARD, large_sbm.load_dcsbm,
                               {"num_nodes": 10_000, "num_communities": 16}),
    "folder": CatalogEntry(user.FOLDER_CARD, user.load_user_folder),
    "csl": CatalogEntry(csl.CSL_CARD, csl.load_csl),
    "reachability": CatalogEntry(algorithmic.REACHABILITY_CARD, algorithmic.load_reachability),
    "relay": CatalogEntry(algorithmic.RELAY_CARD, algorithmic.load_relay),
    "marker": CatalogEntry(algorithmic.MARKER_CARD, algorithmic.load_marker),
    "qm9": CatalogEntry(molecules.QM9_CARD, molecules.load_qm9, {"size": "full"}),
    "qm9-small": CatalogEntry(molecules.QM9_CARD, molecules.load_qm9, {"size": "small"}),
    "b3db": CatalogEntry(molecules.B3DB_CARD, molecules.load_b3db, {"size": "full"}),
    "b3db-small": CatalogEntry(molecules.B3DB_CARD, molecules.load_b3db, {"size": "small"}),
    "solubility": CatalogEntry(molecules.SOLUBILITY_CARD, molecules.load_solubility),
    "freesolv": CatalogEntry(molecules.FREESOLV_CARD, molecules.load_freesolv),
    "moses-plogp": CatalogEntry(molecules.MOSES_CARD, molecules.load_moses_plogp, {"size": "full"}),
    "moses-plogp-small": CatalogEntry(molecules.MOSES_CARD, molecules.load_moses_plogp, {"size": "small"}),
}


def dataset_names() -> list[str]:
    """Every name `load_dataset` accepts."""
    return list(DATASETS)


def _entry(name: str) -> CatalogEntry:
    key = name.strip().lower().replace("_", "-")
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}{hint} Known datasets: {', '.join(DATASETS)}")
    return DATASETS[key]


def get_card(name: str) -> DatasetCard:
    """The card of ``name`` (variants share their dataset's card)."""
    return _entry(name).card


def load_dataset(name: str, *, root=None, seed: int = 0, progress: bool = False, **options: Any) -> Dataset:
    """Build or load the dataset called ``name`` (case-insensitive; ``list_datasets()`` lists them).

    ``root``: cache folder (default ``$SPARSEGT_CACHE`` or ``~/.cache/sparsegt``); ``seed``: generation
    and split seed; ``options``: dataset-specific (``fold`` for CSL, ``target`` for QM9, sizes for
    the algorithmic tasks, generator fields for PATTERN/CLUSTER).
    """
    entry = _entry(name)
    clash = sorted(set(options) & set(entry.fixed))
    if clash:
        raise ValueError(f"{name}: option(s) {clash} are fixed by the name; "
                         "load the base dataset to set them")
    parameters = inspect.signature(entry.load).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = sorted(set(options) - set(parameters))
    if unknown and not takes_any:
        known = sorted(set(parameters) - {"root", "seed", "progress"} - set(entry.fixed))
        raise ValueError(f"{name}: unknown option(s) {unknown}; it accepts {known or 'no options'}")
    return entry.load(root=root, seed=seed, progress=progress, **entry.fixed, **options)


def list_datasets() -> list[DatasetCard]:
    """One card per dataset (variants are listed on their base dataset's card)."""
    seen: dict[str, DatasetCard] = {}
    for entry in DATASETS.values():
        seen.setdefault(entry.card.name, entry.card)
    return list(seen.values())
