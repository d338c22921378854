"""SIGKILL campaign (issue #14): kill a training run at random moments, resume it, compare with an unbroken run.

1. **Reference.** A tiny run (``demo-pattern`` on ``pattern-tiny``, hidden 8, one layer, a checkpoint after
   every batch) trains to completion without interruption.
2. **Campaign.** The same command starts in another folder and is killed with SIGKILL, then continued with
   ``sparsegt train --resume RUN_DIR``, again and again, until it completes. The kills follow a plan:

   - ``first-write``: while no ``last.pt`` exists, poll the run folder and kill as soon as a
     ``.last.pt.tmp-PID`` file appears: a kill during the very first checkpoint write. The resume must start
     the run afresh by itself.
   - ``write``: once this process has written a checkpoint, wait a random 0-0.3 s, then poll for a temporary
     checkpoint file and kill as soon as one appears: a kill during a checkpoint write.
   - ``training``: once this process has written a checkpoint, kill after a random 0-0.4 s.
   - ``startup``: kill a random 0.3-3 s after the launch (imports, data, compilation, the load of ``last.pt``).

   Where a kill landed is read from the disk after the process is dead: a temporary file still there means the
   kill hit a write (a poll can be late; a kill that missed its write counts as a ``training`` kill). A
   ``first-write`` or ``write`` kill that missed is tried again at the next launch, up to ``--retries``
   times, so the counts asked for are reached.
3. **Comparison.** ``metrics.jsonl`` record by record (every field but the three times), ``summary.json`` (all
   but times and the folder), and ``best.pt``/``last.pt`` (model, optimizer, every RNG state, the data position:
   everything but ``elapsed_s``), bit for bit; both checkpoints load with their SHA-256 verified; no temporary
   file is left.
4. **Flipped bytes.** In a copy of the finished run, 64 random bytes of ``last.pt`` (then of ``best.pt``) are
   flipped; ``sparsegt train --resume`` and ``sparsegt eval --checkpoint NAME`` must each refuse with an
   ``error:`` line naming the file (no traceback), or, where the command does not need that file to go on
   (a finished run resumed reads ``best.pt`` only for its confusion plot), name it in a ``warning:``.

Every run is a subprocess ``python -m sparsegt train ...`` of this checkout (``PYTHONPATH`` = the repo root)
with the environment of this script: run it as ``OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 nice -n 19 ...`` on a
shared machine. Exit status 0 when everything is bit-identical, 1 otherwise.

    python bench/kill_resume.py                       # 12 kills, at least 4 in a write, 1 in the first write
    python bench/kill_resume.py --kills 2 --writes 1  # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sparsegt.train.checkpoint import load_checkpoint  # noqa: E402

TRAIN_ARGS = ["--preset", "demo-pattern", "data.name=pattern-tiny", "model.hidden=8", "model.num_layers=1",
              "model.lap_pe=null", "train.epochs=10", "train.checkpoint_every_batches=1", "name=kr", "-q"]
TIME_KEYS = {"epoch_time_s", "elapsed_s", "graphs_per_s", "train_time_s"}
POLL_S = 0.0002


def launch(python: str, args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        return subprocess.Popen([python, "-m", "sparsegt", "train", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd="/tmp")


def run_dir_in(out_dir: Path) -> Path | None:
    dirs = [p for p in out_dir.glob("kr-*") if p.is_dir()] if out_dir.exists() else []
    return dirs[0] if len(dirs) == 1 else None


def temp_files(run_dir: Path | None, pattern: str = ".*.tmp-*") -> list[Path]:
    return sorted(run_dir.glob(pattern)) if run_dir is not None and run_dir.exists() else []


def checkpoint_temps(run_dir: Path | None) -> list[Path]:
    """The temporary files of checkpoint writes in progress (or killed): ``.last.pt.tmp-PID``, ``.best.pt.tmp-PID``."""
    return temp_files(run_dir, ".last.pt.tmp-*") + temp_files(run_dir, ".best.pt.tmp-*")


def position(run_dir: Path) -> str:
    """Where ``last.pt`` stands: 'epoch E batch B' (the next batch to run), or why there is none."""
    path = run_dir / "last.pt"
    if not path.exists():
        return "no last.pt"
    state = load_checkpoint(path)
    return f"last.pt at epoch {state['epoch']} batch {state['next_batch']}"


def disk_state(run_dir: Path | None, pid: int | None = None) -> str:
    """``last.pt``'s position and the temporary files (those not of process ``pid`` marked as an earlier kill's)."""
    if run_dir is None:
        return "no run folder"
    def describe(p: Path) -> str:
        earlier = pid is not None and not p.name.endswith(f"-{pid}")
        return f"{p.name} ({p.stat().st_size} B{', earlier kill' if earlier else ''})"
    temps = ", ".join(describe(p) for p in temp_files(run_dir))
    return position(run_dir) + (f"; {temps}" if temps else "")


def wait_for(predicate, proc: subprocess.Popen, poll: float = POLL_S) -> bool:
    """Poll ``predicate`` until it holds (True) or the process ends (False)."""
    while proc.poll() is None:
        if predicate():
            return True
        time.sleep(poll)
    return False


def checkpoint_written_since(run_dir_of, since: float):
    def written() -> bool:
        run_dir = run_dir_of()
        path = run_dir / "last.pt" if run_dir is not None else None
        try:
            return path is not None and path.stat().st_mtime > since
        except FileNotFoundError:
            return False
    return written


def kill_plan(kills: int, writes: int) -> list[str]:
    """``first-write``, then ``writes - 1`` write kills and the rest training/startup kills, interleaved."""
    others = [("startup" if i % 4 == 3 else "training") for i in range(kills - writes)]
    plan = ["first-write"]
    rest = ["write"] * max(writes - 1, 0)
    while rest or others:
        if others:
            plan.append(others.pop(0))
        if rest:
            plan.append(rest.pop(0))
    return plan[:kills]


def strike(kind: str, proc: subprocess.Popen, out_dir: Path, rng: random.Random) -> bool:
    """Wait for the moment of a ``kind`` kill and SIGKILL ``proc``; False if it ended first."""
    start = time.time()

    def run_dir_of() -> Path | None:
        return run_dir_in(out_dir)

    if kind == "first-write":
        ready = wait_for(lambda: bool(temp_files(run_dir_of(), ".last.pt.tmp-*")), proc)
    elif kind == "write":
        ready = wait_for(checkpoint_written_since(run_dir_of, start), proc, poll=0.005)
        if ready:
            time.sleep(rng.uniform(0.0, 0.3))
            ready = wait_for(lambda: bool(temp_files(run_dir_of(), ".last.pt.tmp-*")), proc)
    elif kind == "training":
        ready = wait_for(checkpoint_written_since(run_dir_of, start), proc, poll=0.005)
        if ready:
            time.sleep(rng.uniform(0.0, 0.4))
    else:  # startup
        time.sleep(rng.uniform(0.3, 3.0))
        ready = True
    if proc.poll() is not None:
        return False
    if ready:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    return ready and proc.returncode == -signal.SIGKILL


def landed(before_last: bool, run_dir: Path | None, launched: float, pid: int) -> str:
    """Where the kill landed, read from the disk after the process ``pid`` died (a temporary file of its own)."""
    if any(p.name.endswith(f"-{pid}") for p in checkpoint_temps(run_dir)):
        return "first write" if before_last and not (run_dir / "last.pt").exists() else "checkpoint write"
    if run_dir is None or not (run_dir / "last.pt").exists():
        return "before the first checkpoint"
    return "training" if (run_dir / "last.pt").stat().st_mtime > launched else "startup (no checkpoint yet)"


def compare_runs(ref: Path, got: Path) -> list[tuple[str, bool, str]]:
    """(what, identical, detail) for metrics.jsonl, summary.json, best.pt, last.pt and leftover files."""
    checks = []
    rec_ref = [json.loads(x) for x in (ref / "metrics.jsonl").read_text().splitlines() if x]
    rec_got = [json.loads(x) for x in (got / "metrics.jsonl").read_text().splitlines() if x]
    strip = [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rec_ref]
    same = strip == [{k: v for k, v in r.items() if k not in TIME_KEYS} for r in rec_got]
    fields = len(strip[0]) if strip else 0
    checks.append(("metrics.jsonl", same, f"{len(rec_got)} vs {len(rec_ref)} records, {fields} fields each "
                                          "compared (all but times)"))
    sums = [{k: v for k, v in json.loads((d / "summary.json").read_text()).items()
             if k not in TIME_KEYS and k != "run_dir"} for d in (ref, got)]
    checks.append(("summary.json", sums[0] == sums[1], f"{len(sums[0])} fields (all but train_time_s, run_dir)"))
    for name in ("best.pt", "last.pt"):
        try:
            a, b = load_checkpoint(ref / name), load_checkpoint(got / name)  # verifies each SHA-256
        except ValueError as err:
            checks.append((name, False, str(err)))
            continue
        diffs = differences(a, b, name)
        checks.append((name, not diffs, "checksums verified; " + (
            "every tensor and value equal (elapsed_s aside)" if not diffs else "differ: " + ", ".join(diffs[:5]))))
    left = temp_files(got)
    checks.append(("temporary files", not left, ", ".join(p.name for p in left) or "none left"))
    return checks


def flipped_byte_checks(python: str, run_dir: Path, work: Path, rng: random.Random) -> list[dict]:
    """Flip 64 random bytes of ``last.pt`` (then of ``best.pt``) in a copy of the finished run, and record what
    ``train --resume`` and ``eval --checkpoint NAME`` say: a refusal that names the file, or what else."""
    results = []
    for name in ("last.pt", "best.pt"):
        copy = work / f"flipped-{name.split('.')[0]}"
        shutil.copytree(run_dir, copy)
        data = bytearray((copy / name).read_bytes())
        for offset in rng.sample(range(len(data)), 64):
            data[offset] ^= rng.randrange(1, 256)
        (copy / name).write_bytes(bytes(data))
        for command in (["train", "--resume", str(copy), "-q"], ["eval", str(copy), "--checkpoint", name]):
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            done = subprocess.run([python, "-m", "sparsegt", *command], capture_output=True, text=True, env=env,
                                  cwd="/tmp")
            text = done.stdout + done.stderr
            error = next((line for line in text.splitlines() if line.startswith("error:")), "")
            warning = next((line for line in text.splitlines() if line.startswith("warning:") and name in line), "")
            if done.returncode != 0 and name in error and "Traceback" not in text:
                outcome = "refused"
            elif done.returncode == 0 and warning:
                outcome = "warned"  # e.g. a finished run resumed: best.pt is only read for the confusion plot
            else:
                outcome = "NOT NOTICED"
            results.append({"file": name, "command": f"sparsegt {command[0]}", "rc": done.returncode,
                            "outcome": outcome, "message": (error or warning or text.strip()[-160:])[:160]})
    return results


def differences(a, b, where: str) -> list[str]:
    """Paths where two checkpoint trees differ (tensors: dtype, shape and bits; ``elapsed_s``/``sha256`` and
    the time fields of the history skipped)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
              and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                                                     b.view(-1).view(torch.uint8) if b.numel() else b))
        return [] if ok else [where]
    if isinstance(a, dict) and isinstance(b, dict):
        skip = TIME_KEYS | {"sha256"}
        keys = (set(a) | set(b)) - skip
        return [d for k in sorted(keys, key=str) for d in differences(a.get(k), b.get(k), f"{where}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [where]
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if a == b else [where]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    parser.add_argument("--kills", type=int, default=12, help="SIGKILLs in all (issue #14: 10+)")
    parser.add_argument("--writes", type=int, default=4,
                        help="of which during a checkpoint write, the first write included (issue #14: 3+ and 1)")
    parser.add_argument("--epochs", type=int, default=10,
                        help="train.epochs of the run (8 checkpoints an epoch); more epochs leave room for more kills")
    parser.add_argument("--retries", type=int, default=6, help="extra launches for a write kill that missed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--work", default="/tmp/sparsegt-kill-resume", help="folder for both runs (emptied)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs sparsegt")
    parser.add_argument("--no-flips", action="store_true", help="skip the flipped-byte check at the end")
    parser.add_argument("--json", default=None, help="also write the trials and the comparison here")
    parser.add_argument("--train-args", nargs=argparse.REMAINDER, default=None,
                        help=f"replace the training arguments (default: {' '.join(TRAIN_ARGS)})")
    args = parser.parse_args()
    train_args = args.train_args or [a if not a.startswith("train.epochs=") else f"train.epochs={args.epochs}"
                                     for a in TRAIN_ARGS]
    rng = random.Random(args.seed)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)

    started = time.time()
    ref_out = work / "reference"
    proc = launch(args.python, [*train_args, f"out_dir={ref_out}"], work / "logs" / "reference.log")
    if proc.wait() != 0:
        print((work / "logs" / "reference.log").read_text()[-3000:])
        return 1
    ref_dir = run_dir_in(ref_out)
    print(f"reference: {ref_dir} ({time.time() - started:.0f} s, uninterrupted)")

    out = work / "killed"
    plan = kill_plan(args.kills, args.writes)
    trials: list[dict] = []
    leg, retries, resume = 0, 0, False
    while True:
        run_dir = run_dir_in(out)
        before = disk_state(run_dir) if run_dir is not None else "no run folder"
        had_last = run_dir is not None and (run_dir / "last.pt").exists()
        cmd = ["--resume", str(run_dir)] if resume else [*train_args, f"out_dir={out}"]
        log = work / "logs" / f"leg{leg}.log"
        launched = time.time()
        proc = launch(args.python, cmd, log)
        kind = plan[len(trials)] if len(trials) < len(plan) else None
        if kind is None:
            rc = proc.wait()
            text = log.read_text()
            outcome = "completed" if rc == 0 else f"FAILED rc={rc}: {text[-400:]!r}"
            if trials:
                note = "removed temp files; " if "temporary file" in text else ""
                trials[-1]["resume"] = f"{note}continued from {before}; {outcome}"
            print(f"leg {leg}: ran to the end from {before}: {outcome}")
            break
        killed = strike(kind, proc, out, rng)
        run_dir = run_dir_in(out)
        text = log.read_text()
        note = "removed temp files; " if "temporary file" in text else ""
        start_note = (f"{note}continued from {before}" if had_last else f"{note}started afresh ({before})"
                      ) if resume else "first launch"
        if trials:
            trials[-1]["resume"] = start_note + ("; then killed" if killed else "")
        if not killed:
            rc = proc.returncode
            outcome = "completed" if rc == 0 else f"FAILED rc={rc}: {text[-400:]!r}"
            if trials:
                trials[-1]["resume"] += f"; {outcome} before the next kill"
            print(f"leg {leg}: the run ended before a {kind} kill: {outcome}")
            break
        where = landed(not had_last, run_dir, launched, proc.pid)
        hit = where in ("first write", "checkpoint write") if kind in ("first-write", "write") else True
        if kind == "first-write" and where != "first write":
            hit = False
        trials.append({"kill": len(trials) + 1, "planned": kind, "landed": where,
                       "on_disk": disk_state(run_dir, proc.pid),
                       "resume": ""})
        if not hit and retries < args.retries:  # a write kill that missed its write: aim again
            retries += 1
            plan.insert(len(trials), kind)
            if kind == "first-write" and run_dir is not None and (run_dir / "last.pt").exists():
                trials[-1]["on_disk"] += " (missed the first write; the campaign starts a new folder)"
                shutil.rmtree(out)  # a first write can only be aimed at in a fresh folder
                resume = False
                leg += 1
                continue
        resume = run_dir is not None
        leg += 1

    print()
    print(f"{'kill':>4}  {'planned':<11} {'landed':<27} {'on disk after the kill':<60} resume")
    for t in trials:
        print(f"{t['kill']:>4}  {t['planned']:<11} {t['landed']:<27} {t['on_disk']:<60} {t['resume']}")
    counts = {w: sum(t["landed"] == w for t in trials) for w in ("first write", "checkpoint write")}
    print(f"\n{len(trials)} kills: {counts['first write']} in the first write, {counts['checkpoint write']} in a later "
          f"checkpoint write, {len(trials) - sum(counts.values())} in training or startup; {leg + 1} launches")
    if len(trials) < args.kills:
        print(f"only {len(trials)} of the {args.kills} kills asked for: the run completed first (use more --epochs)")
    final = run_dir_in(out)
    checks = compare_runs(ref_dir, final) if final is not None else [("run", False, "no run folder")]
    print("\ncomparison with the uninterrupted run:")
    for what, same, detail in checks:
        print(f"  {what:<16} {'bit-identical' if same else 'DIFFERENT':<14} {detail}" if what != "temporary files"
              else f"  {what:<16} {'ok' if same else 'LEFT BEHIND':<14} {detail}")
    ok = all(same for _, same, _ in checks)
    if final is not None and not args.no_flips:
        flips = flipped_byte_checks(args.python, final, work, rng)
        print("\n64 flipped bytes in a copy of the finished run:")
        for f in flips:
            print(f"  {f['file']:<8} {f['command']:<15} rc={f['rc']}  {f['outcome']}: {f['message']}")
        ok = ok and all(f["outcome"] != "NOT NOTICED" for f in flips)
    else:
        flips = []
    print(f"\n{'PASS' if ok else 'FAIL'} ({time.time() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"train_args": train_args, "trials": trials,
                                               "comparison": [dict(zip(("what", "identical", "detail"), c, strict=True))
                                                              for c in checks], "flipped_bytes": flips,
                                               "pass": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
