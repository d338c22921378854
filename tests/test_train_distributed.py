"""Two processes (gloo, localhost) train with DDP exactly like one process with the union of their batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsegt.train.checkpoint import load_checkpoint
from sparsegt.train.run import train_run
from sparsegt.train.trainer import seed_everything
from tests.test_train import TinyGraphModel, tiny_config, tiny_graph_dataset

ROOT = Path(__file__).resolve().parents[1]

RUNNER = """
import sys, torch, pathlib
torch.set_num_threads(1)
from sparsegt.train.run import train_run
from sparsegt.train.trainer import seed_everything
from tests.test_train import TinyGraphModel, tiny_config, tiny_graph_dataset
config = tiny_config(epochs=3, lr=5e-2)
config.data.batch_size = 4          # per process: 2 x 4 = the single process's 8
seed_everything(0)
train_run(config, run_dir=pathlib.Path(sys.argv[1]), model=TinyGraphModel(config.model),
          dataset=tiny_graph_dataset(), quiet=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_process_ddp_equals_one_process_with_double_batch(tmp_path):
    torch.set_num_threads(1)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE",
            "PYTHONPATH": str(ROOT),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": "2",
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", RUNNER, str(tmp_path / "ddp")],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outs = [p.communicate(timeout=110)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    ddp = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert ddp["world_size"] == 2 and ddp["status"] == "completed"

    config = tiny_config(epochs=3, lr=5e-2)
    config.data.batch_size = 8
    seed_everything(0)
    single = train_run(
        config,
        run_dir=tmp_path / "single",
        model=TinyGraphModel(config.model),
        dataset=tiny_graph_dataset(),
        quiet=True,
    ).summary
    # the same graphs per step and DDP's gradient average = the mean over the union: same training
    assert ddp["final_train_loss"] == pytest.approx(single["final_train_loss"], rel=1e-5, abs=1e-6)
    assert ddp["val_metric"] == pytest.approx(single["val_metric"])
    assert ddp["test_metric"] == pytest.approx(single["test_metric"])
    a = load_checkpoint(tmp_path / "ddp" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "single" / "last.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    # metrics reduced across ranks: val/test gathered from both shards equal a one-process evaluation
    history_ddp = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    history_one = [json.loads(x) for x in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_metric"] for r in history_ddp] == pytest.approx([r["val_metric"] for r in history_one])
