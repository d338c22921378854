"""`sparsegt predict`: a tiny trained GPS on a folder, a PyG file and SMILES; the CSV equals the model's own outputs."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from sparsegt.cli import main
from sparsegt.graph import Graph
from sparsegt.train.checkpoint import load_checkpoint
from sparsegt.train.model_inputs import MODEL_INPUTS_FILE, ModelInputs
from sparsegt.train.presets import get_preset
from sparsegt.train.run import build_dataset, build_model, train_run

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _best_model(run_dir, config, dataset):
    model = build_model(config, dataset)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    return model.eval()


@pytest.fixture(scope="module")
def pattern_run(tmp_path_factory):
    """GPS (2 layers, 16 wide, LapPE 4) on pattern-tiny: node-level, 2 classes, 2 epochs of 3 batches."""
    root = tmp_path_factory.mktemp("pattern")
    config = get_preset("gps-pattern")
    config.data.name, config.data.root = "pattern-tiny", str(root / "data")
    config.model.num_layers, config.model.hidden, config.model.lap_pe.k, config.model.lap_pe.dim = 2, 16, 4, 4
    config.train.epochs, config.train.warmup_epochs, config.train.bn_recalibration = 2, 0, 2
    config.train.batches_per_epoch, config.train.loggers = 3, []
    result = train_run(config, run_dir=root / "run", quiet=True)
    dataset = build_dataset(config, splits=("test",))
    return result.run_dir, config, dataset


def _write_folder(folder, graphs):
    """The user-data npz format without labels or split (what a user brings to predict on)."""
    folder.mkdir()
    np.savez(folder / "graphs.npz", num_nodes=np.array([g.num_nodes for g in graphs]),
             num_edges=np.array([g.num_edges for g in graphs]),
             edge_index=np.concatenate([g.to_edge_index().numpy() for g in graphs], axis=1),
             x=torch.cat([g.x for g in graphs]).numpy())
    return folder


def test_predict_on_a_folder_equals_the_models_outputs(pattern_run, tmp_path, capsys):
    run_dir, config, dataset = pattern_run
    graphs = list(dataset.test[:3])  # with the encodings build_dataset computed for training's test split
    folder = _write_folder(tmp_path / "graphs", graphs)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run_dir), "--folder", str(folder), "-o", str(out), "--device", "cpu"]) == 0
    assert "rows in" in capsys.readouterr().out
    header, rows = _read_csv(out)
    assert header == ["id", "node", "prob_0", "prob_1", "predicted"]
    assert len(rows) == sum(g.num_nodes for g in graphs)
    with torch.no_grad():
        direct = torch.softmax(_best_model(run_dir, config, dataset)(Graph.batch(graphs)).double(), dim=-1)
    ids = [(int(r[0]), int(r[1])) for r in rows]
    assert ids == [(i, n) for i, g in enumerate(graphs) for n in range(g.num_nodes)]
    written = torch.tensor([[float(r[2]), float(r[3])] for r in rows], dtype=torch.float64)
    assert torch.allclose(written, direct, atol=1e-6)
    assert [int(r[4]) for r in rows] == direct.argmax(1).tolist()


def test_predict_on_a_pyg_file_gives_the_same_rows(pattern_run, tmp_path):
    pytest.importorskip("torch_geometric")
    run_dir, _, dataset = pattern_run
    graphs = list(dataset.test[:3])
    torch.save([Graph(g.indptr, g.indices, x=g.x).to_pyg() for g in graphs], tmp_path / "graphs.pt")
    folder = _write_folder(tmp_path / "graphs", graphs)
    assert main(["predict", str(run_dir), "--pyg", str(tmp_path / "graphs.pt"), "-o", str(tmp_path / "a.csv")]) == 0
    assert main(["predict", str(run_dir), "--folder", str(folder), "-o", str(tmp_path / "b.csv")]) == 0
    assert _read_csv(tmp_path / "a.csv") == _read_csv(tmp_path / "b.csv")


def test_mismatched_inputs_are_clear_errors(pattern_run, tmp_path, capsys):
    run_dir, _, dataset = pattern_run
    record = ModelInputs.from_json((run_dir / MODEL_INPUTS_FILE).read_text())
    assert record.featurizer is None and record.encodings == {"lap_pe": 4, "lap_normalization": "none"}
    assert main(["predict", str(run_dir), "--smiles", "CCO"]) == 2
    err = capsys.readouterr().err
    assert "not trained on molecules" in err and "cannot read SMILES" in err
    g = dataset.test[0]
    wide = Graph(g.indptr, g.indices, x=torch.cat([g.x, g.x], 1))
    _write_folder(tmp_path / "wide", [wide])
    assert main(["predict", str(run_dir), "--folder", str(tmp_path / "wide")]) == 2
    err = capsys.readouterr().err
    assert "2 column(s)" in err and "categorical, 1 column(s)" in err
    big = Graph(g.indptr, g.indices, x=g.x + 50)
    _write_folder(tmp_path / "big", [big])
    assert main(["predict", str(run_dir), "--folder", str(tmp_path / "big")]) == 2
    assert "holds category" in capsys.readouterr().err
    assert main(["predict", str(tmp_path), "--folder", str(tmp_path / "big")]) == 2
    assert "not a run directory" in capsys.readouterr().err


@pytest.fixture(scope="module")
def molecule_run(tmp_path_factory):
    """GPS + GINE + RWSE (the gps-qm9 recipe, 1 layer, 16 wide) on b3db-tiny (binary): 1 epoch of 2 batches."""
    pytest.importorskip("rdkit")
    from sparsegt.data.molecules import load_b3db

    root = tmp_path_factory.mktemp("molecules")
    try:
        dataset = load_b3db(size="tiny", root=root / "data")
    except ImportError as err:
        pytest.skip(f"molecule data packages missing: {err}")
    config = get_preset("gps-qm9")
    config.data.name, config.data.root = "b3db-small", str(root / "data")
    config.model.num_layers, config.model.hidden, config.model.rwse.steps, config.model.rwse.dim = 1, 16, 4, 4
    config.train.epochs, config.train.warmup_epochs, config.train.bn_recalibration = 1, 0, 1
    config.train.batches_per_epoch, config.train.loggers = 2, []
    from sparsegt.encodings import add_encodings

    dataset.train, dataset.val, dataset.test = (add_encodings(list(s), rwse=4)
                                                for s in (dataset.train, dataset.val, dataset.test))
    result = train_run(config, run_dir=root / "run", quiet=True, dataset=dataset)
    return result.run_dir, config, dataset


def test_predict_on_smiles_equals_the_models_outputs(molecule_run, tmp_path, capsys):
    from sparsegt.data.featurize import SMILES_FEATURIZER, smiles_to_graph
    from sparsegt.encodings import add_encodings

    run_dir, config, dataset = molecule_run
    record = json.loads((run_dir / MODEL_INPUTS_FILE).read_text())
    assert record["featurizer"] == SMILES_FEATURIZER and record["encodings"] == {"rwse": 4}
    smiles = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1"]
    (tmp_path / "mols.csv").write_text("name,smiles\nethanol,CCO\nphenol,c1ccccc1O\nparacetamol,CC(=O)Nc1ccc(O)cc1\n")
    assert main(["predict", str(run_dir), "--smiles-file", str(tmp_path / "mols.csv"),
                 "-o", str(tmp_path / "p.csv")]) == 0
    header, rows = _read_csv(tmp_path / "p.csv")
    assert header == ["id", "prob_BBB+", "predicted"]
    assert [r[0] for r in rows] == ["ethanol", "phenol", "paracetamol"]
    graphs = add_encodings([smiles_to_graph(s) for s in smiles], rwse=4)
    model = build_model(config, dataset)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["model"])
    with torch.no_grad():
        direct = torch.sigmoid(model.eval()(Graph.batch(graphs)).double()).reshape(-1)
    assert torch.allclose(torch.tensor([float(r[1]) for r in rows], dtype=torch.float64), direct, atol=1e-6)
    assert main(["predict", str(run_dir), "--smiles", *smiles, "-o", str(tmp_path / "q.csv")]) == 0
    _, same = _read_csv(tmp_path / "q.csv")
    assert [r[0] for r in same] == smiles and [r[1:] for r in same] == [r[1:] for r in rows]
    assert main(["predict", str(run_dir), "--smiles", "CCO", "not-a-smiles"]) == 2
    assert "cannot parse 1 of 2 SMILES" in capsys.readouterr().err


def test_parquet_output(molecule_run, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    run_dir, _, _ = molecule_run
    assert main(["predict", str(run_dir), "--smiles", "CCO", "CCN", "-o", str(tmp_path / "p.parquet")]) == 0
    assert main(["predict", str(run_dir), "--smiles", "CCO", "CCN", "-o", str(tmp_path / "p.csv")]) == 0
    table = pq.read_table(tmp_path / "p.parquet").to_pydict()
    _, rows = _read_csv(tmp_path / "p.csv")
    assert table["id"] == ["CCO", "CCN"] and table["prob_BBB+"] == [float(r[1]) for r in rows]


# ---------------------------------------------------------------------------------------------- show-attention
def test_show_attention_draws_every_layer_and_head(pattern_run, tmp_path, capsys):
    from PIL import Image

    from sparsegt.train.attention_maps import attention_of_graph
    from sparsegt.train.trained import load_trained

    run_dir, config, _ = pattern_run
    out = tmp_path / "attention.png"
    assert main(["show-attention", str(run_dir), "--graph", "1", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:  # 2 layers x 4 heads of panels
        assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 400, image.size
    trained = load_trained(run_dir, device="cpu")
    val = build_dataset(config, splits=("val",)).val
    calls = attention_of_graph(trained, val[1])
    assert [name for name, _, _ in calls] == ["layer 0", "layer 1"]
    for _, pattern, weights in calls:
        assert weights.shape == (val[1].num_nodes ** 2, config.model.num_heads)  # full attention within the graph
        row_sums = torch.zeros(pattern.num_nodes, weights.shape[1]).index_add_(0, pattern.row_index(), weights)
        assert torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-5)
    assert main(["show-attention", str(run_dir), "--graph", "999"]) == 2
    assert "has graphs 0.." in capsys.readouterr().err


def test_a_run_without_the_record_rebuilds_it_from_its_dataset(pattern_run, tmp_path):
    import shutil

    run_dir, _, dataset = pattern_run
    old = shutil.copytree(run_dir, tmp_path / "old-run")
    (old / MODEL_INPUTS_FILE).unlink()  # a run from before model_inputs.json
    folder = _write_folder(tmp_path / "graphs", list(dataset.test[:2]))
    assert main(["predict", str(run_dir), "--folder", str(folder), "-o", str(tmp_path / "a.csv")]) == 0
    assert main(["predict", str(old), "--folder", str(folder), "-o", str(tmp_path / "b.csv")]) == 0
    assert _read_csv(tmp_path / "a.csv") == _read_csv(tmp_path / "b.csv")


def test_predict_with_the_shipped_pretrained_model(pattern_run, tmp_path):
    from sparsegt.encodings import add_encodings
    from sparsegt.train.trained import load_trained

    _, _, dataset = pattern_run
    graphs = [Graph(g.indptr, g.indices, x=g.x) for g in dataset.test[:2]]  # PATTERN-like, no encodings
    folder = _write_folder(tmp_path / "graphs", graphs)
    out = tmp_path / "p.csv"
    assert main(["predict", "--pretrained", "gps-pattern", "--folder", str(folder), "-o", str(out)]) == 0
    header, rows = _read_csv(out)
    trained = load_trained(pretrained="gps-pattern", device="cpu")
    assert trained.inputs.encodings == {"lap_pe": 16, "lap_normalization": "none"}
    with torch.no_grad():
        direct = torch.softmax(trained.model(Graph.batch(add_encodings(graphs, **trained.inputs.encodings))).double(),
                               dim=-1)
    assert header[:3] == ["id", "node", "prob_0"] and len(rows) == direct.shape[0]
    assert torch.allclose(torch.tensor([[float(r[2]), float(r[3])] for r in rows], dtype=torch.float64), direct,
                          atol=1e-6)
