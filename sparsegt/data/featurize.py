"""Molecules -> `Graph`: atoms are nodes, bonds are edges (both directions), features are categorical.

Every feature is an index into a fixed vocabulary whose last entry is "other", so unseen values
never crash and the cardinalities are known before any data is read (`ATOM_CARDINALITIES`,
`BOND_CARDINALITIES`). Hydrogens are implicit (counted in ``num_hs``), as in the SMILES.

Atom features ``x`` [N, 7]: element, degree, formal charge, total H count, hybridisation, aromatic,
in ring. Bond features ``edge_attr`` [E, 3]: bond type, conjugated, in ring.
RDKit is an optional dependency: ``pip install 'sparsegt[chem]'``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..graph import Graph

__all__ = ["ATOM_VOCABULARIES", "BOND_VOCABULARIES", "ATOM_CARDINALITIES", "BOND_CARDINALITIES",
           "FEATURIZER_VERSION", "SMILES_FEATURIZER", "require_rdkit", "mol_to_graph", "smiles_to_graph"]

CHEM_EXTRA_HINT = "pip install 'sparsegt[chem]'"

# bump when mol_to_graph's output changes: cached molecule sets are rebuilt, and a run trained on the old
# features is refused by `sparsegt predict --smiles` instead of being fed features it never saw
FEATURIZER_VERSION = 1
# the name a run records (model_inputs.json) when its graphs came from SMILES through `smiles_to_graph`
SMILES_FEATURIZER = f"rdkit-atoms7-bonds3-v{FEATURIZER_VERSION}"

ATOM_VOCABULARIES: dict[str, tuple] = {
    "element": ("C", "N", "O", "S", "F", "Cl", "Br", "I", "P", "B", "Si", "Se", "H"),
    "degree": (0, 1, 2, 3, 4, 5),
    "formal_charge": (-2, -1, 0, 1, 2),
    "num_hs": (0, 1, 2, 3, 4),
    "hybridization": ("SP", "SP2", "SP3", "SP3D", "SP3D2"),
    "aromatic": (False, True),
    "in_ring": (False, True),
}
BOND_VOCABULARIES: dict[str, tuple] = {
    "bond_type": ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC"),
    "conjugated": (False, True),
    "in_ring": (False, True),
}
# +1: the "other" bucket at the end of every vocabulary (booleans never use it; one rule is simpler)
ATOM_CARDINALITIES = tuple(len(v) + 1 for v in ATOM_VOCABULARIES.values())
BOND_CARDINALITIES = tuple(len(v) + 1 for v in BOND_VOCABULARIES.values())

_ATOM_LOOKUP = [{value: i for i, value in enumerate(vocab)} for vocab in ATOM_VOCABULARIES.values()]
_BOND_LOOKUP = [{value: i for i, value in enumerate(vocab)} for vocab in BOND_VOCABULARIES.values()]


def require_rdkit(what: str = "this dataset") -> Any:
    """Import RDKit's ``Chem`` or raise ImportError naming the extra to install."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError as err:
        raise ImportError(f"{what} needs RDKit and the molecule data packages: {CHEM_EXTRA_HINT}") from err
    RDLogger.DisableLog("rdApp.*")  # unparsable SMILES are counted and reported, not printed one by one
    return Chem


def mol_to_graph(mol: Any, graph_data: dict[str, torch.Tensor] | None = None) -> Graph:
    """An RDKit ``Mol`` as a `Graph` with categorical ``x`` [N, 7] and ``edge_attr`` [E, 3] (CSR order)."""
    # index access: iterating RDKit's GetAtoms()/GetBonds() sequences is several times slower
    lookups = _ATOM_LOOKUP
    x_rows = []
    for i in range(mol.GetNumAtoms()):
        atom = mol.GetAtomWithIdx(i)
        x_rows.append((
            lookups[0].get(atom.GetSymbol(), len(lookups[0])),
            lookups[1].get(atom.GetDegree(), len(lookups[1])),
            lookups[2].get(atom.GetFormalCharge(), len(lookups[2])),
            lookups[3].get(atom.GetTotalNumHs(), len(lookups[3])),
            lookups[4].get(str(atom.GetHybridization()), len(lookups[4])),
            lookups[5].get(atom.GetIsAromatic(), len(lookups[5])),
            lookups[6].get(atom.IsInRing(), len(lookups[6])),
        ))
    x = np.array(x_rows, dtype=np.int64).reshape(-1, len(ATOM_VOCABULARIES))
    num_atoms = x.shape[0]
    bond_rows = []
    for i in range(mol.GetNumBonds()):
        bond = mol.GetBondWithIdx(i)
        bond_rows.append((
            bond.GetBeginAtomIdx(),
            bond.GetEndAtomIdx(),
            _BOND_LOOKUP[0].get(str(bond.GetBondType()), len(_BOND_LOOKUP[0])),
            _BOND_LOOKUP[1].get(bond.GetIsConjugated(), len(_BOND_LOOKUP[1])),
            _BOND_LOOKUP[2].get(bond.IsInRing(), len(_BOND_LOOKUP[2])),
        ))
    bond_table = np.array(bond_rows, dtype=np.int64).reshape(-1, 2 + len(BOND_VOCABULARIES))
    begin, end, bond_attr = bond_table[:, 0], bond_table[:, 1], bond_table[:, 2:]
    # both directions; CSR order = sorted by query (target), then key (source)
    src = np.concatenate([begin, end])
    dst = np.concatenate([end, begin])
    attr = np.concatenate([bond_attr, bond_attr])
    order = np.lexsort((src, dst))
    indptr = np.zeros(num_atoms + 1, dtype=np.int64)
    np.cumsum(np.bincount(dst, minlength=num_atoms), out=indptr[1:])
    return Graph(torch.from_numpy(indptr), torch.from_numpy(src[order]),
                 node_data={"x": torch.from_numpy(x)}, edge_data={"edge_attr": torch.from_numpy(attr[order])},
                 graph_data=graph_data, validate=False)


def smiles_to_graph(smiles: str, graph_data: dict[str, torch.Tensor] | None = None) -> Graph | None:
    """The `Graph` of a SMILES string, or None when RDKit cannot parse it (or it has no atoms)."""
    chem = require_rdkit("smiles_to_graph")
    mol = chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        return None
    return mol_to_graph(mol, graph_data)
