"""Datasets (generated or read from installed packages), user-data readers, loaders.

``load_dataset(name)`` builds or loads a named dataset (``list_datasets()`` lists their cards);
``DataLoader`` batches a split into `Graph` batches; ``NeighborLoader`` samples k-hop neighbourhoods of seed
nodes of one large graph (``NeighborSampler``), whose splits are node masks (``one_graph_dataset``);
``load_folder`` and the ``from_*`` readers turn user data into a `Dataset`;
``describe`` / ``print_dataset_table`` / ``print_dataset_stats`` report them.
"""

from .cache import LazyGraphs, cache_dir
from .catalog import dataset_names, get_card, list_datasets, load_dataset
from .dataset import Dataset, DatasetCard
from .describe import dataset_rows, describe, print_dataset_stats, print_dataset_table
from .loader import DataLoader
from .neighbor_loader import NeighborLoader
from .neighbor_sampler import NeighborSampler
from .node_splits import one_graph_dataset, split_views
from .spec import FeatureSpec, TaskSpec
from .user import from_graphs, from_networkx, from_pyg, load_folder, save_folder

__all__ = ["FeatureSpec", "TaskSpec", "Dataset", "DatasetCard", "DataLoader", "NeighborLoader", "NeighborSampler",
           "one_graph_dataset", "split_views", "LazyGraphs", "load_dataset",
           "list_datasets", "dataset_names", "get_card", "cache_dir", "describe", "dataset_rows",
           "print_dataset_table", "print_dataset_stats", "load_folder", "save_folder", "from_graphs",
           "from_pyg", "from_networkx"]
