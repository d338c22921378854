"""Checkpoints that are never half-written, and RNG states that survive ``weights_only`` loading.

`save_checkpoint` writes to a temporary file in the same folder, flushes and fsyncs it, then
``os.replace``s it over the target (atomic on POSIX) and fsyncs the folder: a reader, or a run killed
at any instant, sees either the old checkpoint or the new one, never a torn file.

`load_checkpoint` uses ``torch.load(weights_only=True)`` only: checkpoints hold tensors, numbers,
strings, lists and dicts — no pickled objects — so loading one cannot run code. The Python and NumPy
RNG states are converted to tensors/lists for that reason (`capture_rng_state`).

Every checkpoint carries a SHA-256 of its contents (`content_digest`: each tensor's dtype, shape and bytes,
each other value's repr, in key order) under `CHECKSUM_KEY`; `load_checkpoint` recomputes it, so a flipped
byte inside a tensor is a named error, not a silently corrupted weight. (Checkpoints written before the digest
existed load without the check.) A run killed during a write leaves its ``.NAME.tmp-PID`` file;
`remove_stale_temp_files` deletes those of processes no longer alive when a run starts again.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CHECKSUM_KEY",
    "content_digest",
    "remove_stale_temp_files",
    "load_model_weights",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "atomic_write_text",
]


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


CHECKSUM_KEY = "sha256"
_TEMP_NAME = re.compile(r"\..+\.tmp-(\d+)")


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(b"{")
        for key in sorted(value, key=str):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, (list, tuple)):
        digest.update(b"[")
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(value).encode())


def content_digest(state: dict) -> str:
    """SHA-256 (hex) of a checkpoint's contents: tensors by dtype, shape and bytes, other values by repr."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return digest.hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` files a killed writer left in ``folder`` (its PID no longer alive, or this
    process's own, which at a start can only be a dead one's reused PID); those of live writers stay."""
    removed = []
    for path in sorted(Path(folder).glob(".*.tmp-*")):
        match = _TEMP_NAME.fullmatch(path.name)
        if match is None or not path.is_file():
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or not _alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` and its `content_digest` to ``path`` atomically (tmp file + fsync + ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save({**state, CHECKSUM_KEY: content_digest(state)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small text file atomically (summary.json and friends)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", *,
                    required: Sequence[str] = ()) -> dict:
    """Load a checkpoint written by `save_checkpoint` (``weights_only=True``: no code runs), check its digest
    and that it holds the ``required`` keys; ValueError naming the file otherwise."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path} holds a {type(state).__name__}, not a sparsegt checkpoint (a dict)")
    stored = state.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != content_digest(state):
        raise ValueError(f"checkpoint {path} is damaged: its contents do not match the SHA-256 stored with them "
                         "(a flipped byte, a partial copy); use another copy (best.pt, last.pt, a backup)")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(f"checkpoint {path} has no {', '.join(map(repr, missing))} (it holds {sorted(state)}): it "
                         "was not written by sparsegt's trainer, or for another purpose")
    return state


def load_model_weights(model: torch.nn.Module, weights: dict, source: str, hint: str = "") -> None:
    """``model.load_state_dict(weights)``; names or shapes that do not fit are a ValueError naming ``source``
    (with ``hint``: what to do), not a traceback."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ValueError(f"{source}: the weights do not fit this model{hint}: " + " ".join(first[1:3] or first)) \
            from None


def capture_rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), NumPy and Python RNG states as tensors/lists/numbers."""
    version, internal, gauss_next = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": {
            "version": int(version),
            "state": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(
        (
            npy["name"],
            npy["keys"].numpy().astype(np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
