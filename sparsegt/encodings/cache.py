"""On-disk cache of precomputed encodings: one ``.npz`` of concatenated arrays per (dataset key, parameters).

Files are plain numpy archives (``np.savez``, loaded with ``allow_pickle=False``): no pickle, nothing that
executes code on load. They are written to a temporary name and renamed, so concurrent writers (several
DDP ranks) never leave a half-written file. The default directory is ``$SPARSEGT_CACHE`` or
``~/.cache/sparsegt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ..data.cache import cache_dir as default_cache_dir  # one cache folder for datasets and encodings

__all__ = ["default_cache_dir", "cache_path", "save_arrays", "load_arrays"]


def cache_path(cache_dir: str | Path | None, key: str, params: dict) -> Path:
    """The file for dataset ``key`` and encoding ``params`` (a short hash of the parameters in the name)."""
    if not key or not isinstance(key, str):
        raise ValueError(f"cache_key must be a non-empty string naming the dataset, got {key!r}")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80]
    digest = hashlib.sha256((key + json.dumps(params, sort_keys=True)).encode()).hexdigest()[:16]
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    return folder / f"{safe}-{digest}.npz"


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` atomically to ``path`` (directories created as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_arrays(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path``, or None when there is no readable cache file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError) as err:  # truncated or foreign file: recompute rather than crash
        import warnings

        warnings.warn(f"ignoring unreadable encoding cache {path}: {err}", stacklevel=2)
        return None
