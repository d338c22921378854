"""Graphs to predict on, labels optional: a user-data folder, a saved PyG dataset, or SMILES strings.

Each reader returns ``(ids, graphs)``: one id per graph (a string: the folder's graph id, the position in
the PyG file, or the SMILES' name / the SMILES itself), written into the predictions next to each row.

- `folder_graphs`: the user-data folder format of `sparsegt.data.user` (``graphs.npz``, or ``graphs.csv`` +
  ``edges.csv`` + ``nodes.csv``); ``split`` and ``y`` may be left out.
- `pyg_file_graphs`: a ``.pt`` file holding a list of PyG ``Data`` (``torch.save(data_list, path)``) or an
  ``InMemoryDataset`` file (``InMemoryDataset.save(data_list, path)``), read with ``weights_only=True``: the
  file cannot run code, only PyG's own data classes are allowed in it.
- `read_smiles_file` + `smiles_graphs`: one SMILES a line (``SMILES [name]``, as ``.smi`` files) or a CSV
  file with a ``smiles`` column (and ``id`` or ``name``), featurised by the named featuriser
  (`sparsegt.data.featurize.SMILES_FEATURIZER`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ..graph import Graph
from .featurize import SMILES_FEATURIZER, smiles_to_graph
from .user import pyg_graphs
from .user_files import read_csv_folder, read_npz

__all__ = ["SMILES_FEATURIZERS", "folder_graphs", "pyg_file_graphs", "read_smiles_file", "smiles_graphs"]

# featuriser name (as a run records it) -> SMILES -> Graph (None when the SMILES cannot be parsed)
SMILES_FEATURIZERS: dict[str, Callable[[str], Graph | None]] = {SMILES_FEATURIZER: smiles_to_graph}


def folder_graphs(path: str | Path) -> tuple[list[str], list[Graph]]:
    """Every graph of a user-data folder, in graph-id order (labels and split ignored when present)."""
    folder = Path(path)
    if (folder / "graphs.npz").exists():
        graphs, _ = read_npz(folder / "graphs.npz", labelled=False)
    elif (folder / "graphs.csv").exists() and (folder / "edges.csv").exists():
        graphs, _ = read_csv_folder(folder, labelled=False)
    else:
        raise ValueError(f"{folder}: found neither graphs.npz nor graphs.csv + edges.csv (the folder format is "
                         "described in sparsegt/data/user.py)")
    return [str(i) for i in range(len(graphs))], graphs


def _pyg_safe_classes() -> list[type]:
    """PyG's data classes that a pickled ``Data`` list refers to (nothing that runs code on load)."""
    try:
        from torch_geometric.data import Data
        from torch_geometric.data.data import DataEdgeAttr, DataTensorAttr
        from torch_geometric.data.storage import EdgeStorage, GlobalStorage, NodeStorage
    except ImportError as err:
        raise ImportError("reading a PyG dataset file needs PyG: pip install 'sparsegt[pyg]'") from err
    return [Data, DataEdgeAttr, DataTensorAttr, GlobalStorage, NodeStorage, EdgeStorage]


def pyg_file_graphs(path: str | Path) -> tuple[list[str], list[Graph]]:
    """The graphs of a saved PyG data list or ``InMemoryDataset`` file (ids: their positions 0..G-1)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (expected a .pt file written by torch.save(data_list, path) or "
                         "InMemoryDataset.save)")
    safe = _pyg_safe_classes()
    try:
        with torch.serialization.safe_globals(safe):  # scoped: the process-wide allow-list is left as it was
            content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path}: cannot be read as a PyG data list with weights_only=True "
                         f"({type(err).__name__}: {str(err).splitlines()[0]}); save a list of "
                         "torch_geometric.data.Data, or an InMemoryDataset with InMemoryDataset.save") from None
    if isinstance(content, tuple) and len(content) in (2, 3) and isinstance(content[0], dict):
        from torch_geometric.data import InMemoryDataset

        data_class = content[2] if len(content) == 3 else safe[0]
        dataset = InMemoryDataset()
        dataset.data, dataset.slices = data_class.from_dict(content[0]), content[1]
        items = [dataset[i] for i in range(len(dataset))]
    elif isinstance(content, (list, tuple)):
        items = list(content)
    else:
        raise ValueError(f"{path}: holds a {type(content).__name__}, not a list of PyG Data or an InMemoryDataset")
    graphs = pyg_graphs(items, str(path))
    if not graphs:
        raise ValueError(f"{path}: holds no graphs")
    return [str(i) for i in range(len(graphs))], graphs


def read_smiles_file(path: str | Path) -> tuple[list[str], list[str]]:
    """``(ids, smiles)`` of a SMILES file: CSV with a ``smiles`` column (ids from an ``id`` or ``name`` column,
    else the SMILES), or plain text, one ``SMILES [name]`` a line (blank lines and ``#`` comments skipped)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file (expected one SMILES a line, or a CSV file with a smiles column)")
    text = path.read_text(encoding="utf-8-sig")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    header = [c.strip().lower() for c in next(csv.reader([first]))] if first else []
    if path.suffix.lower() == ".csv" or "smiles" in header:
        rows = list(csv.reader(text.splitlines()))
        header = [c.strip().lower() for c in rows[0]] if rows else []
        if "smiles" not in header:
            raise ValueError(f"{path}, line 1: no 'smiles' column in the header {rows[0] if rows else []}")
        column = header.index("smiles")
        id_column = next((header.index(c) for c in ("id", "name") if c in header), None)
        ids, smiles = [], []
        for line, row in enumerate(rows[1:], start=2):
            if not any(cell.strip() for cell in row):
                continue
            if len(row) <= column:
                raise ValueError(f"{path}, line {line}: has {len(row)} cells, no smiles in column {column + 1}")
            smiles.append(row[column].strip())
            ids.append(row[id_column].strip() if id_column is not None and len(row) > id_column else smiles[-1])
        return ids, smiles
    ids, smiles = [], []
    for line in text.splitlines():
        parts = line.split(None, 1)
        if not parts or parts[0].startswith("#"):
            continue
        smiles.append(parts[0])
        ids.append(parts[1].strip() if len(parts) > 1 else parts[0])
    return ids, smiles


def smiles_graphs(smiles: Sequence[str], featurizer: str = SMILES_FEATURIZER) -> list[Graph]:
    """One `Graph` per SMILES through ``featurizer``; ValueError listing every SMILES RDKit cannot parse."""
    if featurizer not in SMILES_FEATURIZERS:
        raise ValueError(f"unknown SMILES featuriser {featurizer!r}; this version of sparsegt has "
                         f"{', '.join(SMILES_FEATURIZERS)} (was the model trained with another version?)")
    if not smiles:
        raise ValueError("no SMILES given")
    make = SMILES_FEATURIZERS[featurizer]
    graphs = [make(s) for s in smiles]
    bad = [f"{i}: {s!r}" for i, (s, g) in enumerate(zip(smiles, graphs, strict=True)) if g is None]
    if bad:
        shown = "; ".join(bad[:5]) + (f"; ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise ValueError(f"RDKit cannot parse {len(bad)} of {len(smiles)} SMILES (input number: SMILES): {shown}")
    return graphs
