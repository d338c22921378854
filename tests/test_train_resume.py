"""A run killed with SIGKILL mid-epoch and resumed ends exactly where an uninterrupted run ends.

The real thing: ``python -m sparsegt train`` on pattern-tiny with a small GraphGPS that has every source of
randomness a run can have (attention dropout, dropout, LapPE sign flips, shuffling).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sparsegt.train.checkpoint import load_checkpoint
from sparsegt.train.run import evaluate_run

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
name: tiny-gps
data: {name: pattern-tiny, batch_size: 8}
model:
  layer: gps
  local: gatedgcn
  attention: full
  num_layers: 1
  hidden: 16
  num_heads: 2
  dropout: 0.1
  attn_dropout: 0.2
  lap_pe: {k: 4, dim: 4}
train:
  epochs: 3
  lr: 0.005
  warmup_epochs: 0.5
  threads: 1
  checkpoint_every_batches: 1
  checkpoint_every_s: 0
"""


def _position(path: Path) -> tuple[int, int] | None:
    try:
        state = load_checkpoint(path)
    except ValueError:
        return None
    return state["epoch"], state["next_batch"]


def _train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "sparsegt", "train", "--quiet", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.mark.timeout(180)
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(tmp_path):
    (tmp_path / "run.yaml").write_text(CONFIG)
    killed = tmp_path / "killed"
    straight = _train("--config", str(tmp_path / "run.yaml"), "--out-dir", str(tmp_path / "one"))
    proc = _train("--config", str(tmp_path / "run.yaml"), "--out-dir", str(killed))
    deadline, position = time.monotonic() + 150, None
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list(killed.glob("tiny-gps-*/last.pt"))
        position = _position(runs[0]) if runs else None
        if position is not None and position[0] == 1 and position[1] >= 2:
            break
        time.sleep(0.01)
    assert proc.poll() is None, f"the run ended before it was killed: {proc.stdout.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    (run_dir,) = killed.glob("tiny-gps-*")
    assert not (run_dir / "summary.json").exists()
    epoch, next_batch = _position(run_dir / "last.pt")
    assert epoch == 1 and next_batch >= 2  # killed mid-epoch 2

    resumed = _train("--resume", str(run_dir))
    out = resumed.communicate(timeout=150)[0].decode()
    assert resumed.returncode == 0, out[-3000:]
    assert f"resuming at epoch 2, batch {next_batch + 1}" in out
    out = straight.communicate(timeout=150)[0].decode()
    assert straight.returncode == 0, out[-3000:]
    (straight,) = (tmp_path / "one").glob("tiny-gps-*")

    a = json.loads((run_dir / "summary.json").read_text())
    b = json.loads((straight / "summary.json").read_text())
    for key in ("val_metric", "test_metric", "final_train_loss", "best_epoch", "epochs_run"):
        assert a[key] == b[key], key
    history = [
        [json.loads(x)["train_loss"] for x in (d / "metrics.jsonl").read_text().splitlines()]
        for d in (run_dir, straight)
    ]
    assert history[0] == history[1] and len(history[0]) == 3
    wa, wb = load_checkpoint(run_dir / "last.pt")["model"], load_checkpoint(straight / "last.pt")["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    # `sparsegt eval RUN_DIR` rebuilds data and model from config.yaml and scores best.pt the same way
    torch.set_num_threads(1)
    scores = evaluate_run(run_dir)
    assert scores["test"]["metric"] == pytest.approx(a["test_metric"], abs=1e-6)
    assert scores["val"]["metric"] == pytest.approx(a["val_metric"], abs=1e-6)
