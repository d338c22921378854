"""Datasets (generated or read from installed packages), user-data readers, loaders."""

from .spec import FeatureSpec, TaskSpec

__all__ = ["FeatureSpec", "TaskSpec"]
