"""`Dataset` (three splits of `Graph`s plus what they promise) and its `DatasetCard`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..graph import Graph
from .spec import FeatureSpec, TaskSpec

__all__ = ["Dataset", "DatasetCard"]


@dataclass(frozen=True)
class DatasetCard:
    """What a user reads before choosing a dataset (``sparsegt datasets``).

    ``size`` is human-readable (e.g. ``"10,000 / 2,000 / 2,000 graphs"``); ``source`` says where the
    data comes from (a generator, an installed package and its file); ``licence`` is the data's licence;
    ``variants`` lists the other names that load smaller or differently-split versions of it.
    """

    name: str
    task: str
    size: str
    metric: str
    source: str
    licence: str
    description: str
    variants: tuple[str, ...] = ()
    extra: str = ""  # the pip extra it needs ("" = none)


@dataclass
class Dataset:
    """Three splits of graphs and the contract they follow.

    Labels follow `TaskSpec`: node-level tasks keep ``node_data["y"]`` ([N] int64 classes, or [N, T]
    float), graph-level tasks keep ``graph_data["y"]`` ([1] int64, or [1, T] float). Node features
    ``x`` follow ``node_features`` (categorical int64 [N, F] or float [N, F]); edge features
    ``edge_attr`` (CSR order) follow ``edge_features``.

    A split is a list of graphs, or for cached datasets a `LazyGraphs` (a read-only sequence that
    builds each graph on first access): index it, iterate it, ``len`` it, ``list()`` it.
    """

    name: str
    train: Sequence[Graph]
    val: Sequence[Graph]
    test: Sequence[Graph]
    task: TaskSpec
    node_features: FeatureSpec
    edge_features: FeatureSpec
    card: DatasetCard
    info: dict = field(default_factory=dict)  # generation parameters, seed, target names, normalisation

    @property
    def splits(self) -> dict[str, Sequence[Graph]]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def cache_key(self, split: str) -> str:
        """A stable name for ``split`` of exactly this data, for derived caches (e.g. encodings).

        Built from the dataset name, its generation/loading parameters (``info``: seed, sizes, the
        content hash in the cache file name) and the split; pass it as ``cache_key`` to
        ``sparsegt.encodings.add_encodings(dataset.train, ..., cache_key=dataset.cache_key("train"))``.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        info = {k: (Path(v).stem if k == "cache_file" else v) for k, v in self.info.items()}
        digest = hashlib.sha1(json.dumps(info, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return f"{self.name}-{digest}-{split}"

    def __len__(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)}, "
                f"task={self.task.level}-{self.task.kind}, metric={self.task.metric})")
