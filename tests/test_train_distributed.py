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


PARTITIONED_RUNNER = """
import json, pathlib, sys, torch
torch.set_num_threads(1)
from sparsegt.train.config import RunConfig, apply_overrides
from sparsegt.train.run import make_loader_for, train_run
from sparsegt.train.trainer import seed_everything
out, cache = pathlib.Path(sys.argv[1]), sys.argv[2]
config = apply_overrides(RunConfig(), [
    "data.name=dcsbm-tiny", "data.fanouts=[4,3]", "data.batch_size=512", "data.eval_batch_size=2048",
    "data.partition=metis", "model.layer=largegt", "model.num_layers=1", "model.hidden=16", "model.num_heads=2",
    "model.num_centroids=16", "model.codebook_dim=8", "train.epochs=2", "train.threads=1",
    "train.chance_check_epochs=0", "train.bn_recalibration=0", "data.root=" + cache])
standard = make_loader_for(config)

def recording(*args, **kwargs):  # the trainer's own loader, noting which seeds each epoch visits
    loader = standard(*args, **kwargs)
    seen, batches = {}, loader.batches
    def recorded(epoch, start=0):
        seen[epoch] = loader.indices(epoch).tolist()
        (out.parent / f"seeds-rank{loader.rank}.json").write_text(json.dumps(seen))
        return batches(epoch, start)
    loader.batches = recorded
    return loader

seed_everything(0)
train_run(config, run_dir=out, make_loader=recording, quiet=True)
"""


@pytest.mark.timeout(300)
def test_two_process_largegt_samples_from_disjoint_metis_parts(tmp_path):
    """torchrun's 2-process path on a one-graph dataset: each rank draws its seeds from its own METIS part of
    the training nodes, DDP all-reduces the gradients (and the codebook statistics), and the run completes."""
    pytest.importorskip("pymetis")
    from sparsegt.data import load_dataset

    cache = tmp_path / "cache"
    dataset = load_dataset("dcsbm-tiny", root=cache)  # generated once, before the ranks read the cache
    train_nodes = set(torch.nonzero(dataset.train[0].node_data["target_mask"]).reshape(-1).tolist())
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2"}
        procs.append(subprocess.Popen([sys.executable, "-c", PARTITIONED_RUNNER, str(tmp_path / "ddp"), str(cache)],
                                      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outs = [p.communicate(timeout=280)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    seeds = [json.loads((tmp_path / f"seeds-rank{r}.json").read_text()) for r in range(2)]
    assert set(seeds[0]) == set(seeds[1]) == {"0", "1"}
    for epoch in ("0", "1"):
        parts = [set(s[epoch]) for s in seeds]
        assert parts[0].isdisjoint(parts[1]) and parts[0] | parts[1] == train_nodes
        assert len(seeds[0][epoch]) == len(seeds[1][epoch])  # the same number of steps on both ranks
