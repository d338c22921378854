"""The `sparsegt` command line: help, config errors before any work, show-config, presets."""

from __future__ import annotations

import os
import sys

import pytest

from sparsegt import cli
from sparsegt.cli import build_parser, main


def test_help_lists_every_command(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for command in ("train", "eval", "predict", "show-attention", "sparsify", "datasets", "bench", "patterns"):
        assert command in out
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--preset", "--config", "--resume", "--seeds", "--quiet", "gps-pattern", "KEY=VALUE"):
        assert text in out


def test_unknown_override_key_is_an_error_with_suggestion(capsys):
    assert main(["train", "--preset", "gps-pattern", "train.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key train.epoch" in err and "train.epochs" in err
    assert main(["train", "--preset", "gps-pattern", "model.hiden=3"]) == 2
    assert "model.hidden" in capsys.readouterr().err


def test_unknown_preset_and_bad_value(capsys):
    assert main(["train", "--preset", "gps-patern"]) == 2
    assert "gps-pattern" in capsys.readouterr().err
    assert main(["train", "--preset", "gps-pattern", "model.layer=transformer"]) == 2
    assert "model.layer" in capsys.readouterr().err


def test_show_config_applies_overrides(capsys, tmp_path):
    assert (
        main(
            [
                "train",
                "--preset",
                "gps-cluster",
                "--show-config",
                "train.epochs=3",
                "model.hidden=32",
                "data.options.num_graphs=5",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "hidden: 32" in out and "num_graphs: 5" in out
    (tmp_path / "c.yaml").write_text(out)
    assert main(["train", "--config", str(tmp_path / "c.yaml"), "--show-config"]) == 0
    assert capsys.readouterr().out == out


def test_optional_sections_switch_on_and_off(capsys):
    assert main(["train", "--preset", "gps-pattern", "--show-config", "model.lap_pe=null", "model.rwse.steps=8"]) == 0
    out = capsys.readouterr().out
    assert "lap_pe: null" in out and "steps: 8" in out


def test_resume_of_a_folder_that_is_not_a_run(capsys, tmp_path):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_parser_accepts_seeds_and_quiet():
    args = build_parser().parse_args(["train", "--preset", "demo", "--seeds", "0", "1", "2", "--quiet", "a.b=1"])
    assert args.seeds == [0, 1, 2] and args.quiet and args.overrides == ["a.b=1"]


def test_overrides_may_follow_an_option(capsys):
    """Issue #14.1: overrides split by an option were rejected as unrecognized arguments."""
    assert main(["train", "--preset", "demo", "train.epochs=3", "--show-config", "train.lr=0.001"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 3" in out and "lr: 0.001" in out
    with pytest.raises(SystemExit):
        main(["train", "--preset", "demo", "--show-config", "--no-such-flag"])


def test_runs_lists_runs_and_prints_their_epochs(capsys, tmp_path):
    """`sparsegt runs` reads run directories back: one row per run; --epochs --markdown a row per epoch whose
    values are the run's metrics.jsonl; a run whose history outgrew its summary shows as running."""
    import json

    from .test_train import fit_tiny

    fit_tiny(tmp_path / "a")
    history = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "completed" in out and f"{len(history)}/3" in out
    assert main(["runs", str(tmp_path / "a"), "--epochs", "--markdown"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(lines) == 1 + len(history)  # header + one per epoch
    for line, record in zip(lines[1:], history, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == str(record["epoch"] + 1) and cells[2] == f"{record['train_loss']:.4f}"
    extra = dict(history[-1], epoch=history[-1]["epoch"] + 1, best=False)
    with open(tmp_path / "a" / "metrics.jsonl", "a") as f:
        f.write(json.dumps(extra) + "\n{torn")
    assert main(["runs", str(tmp_path / "a")]) == 0
    assert "running" in capsys.readouterr().out
    assert main(["runs", str(tmp_path / "missing")]) == 2


def test_a_run_without_a_summary_reads_its_metric_from_its_config(tmp_path):
    """A run still going (no summary.json yet) is scored with its dataset's metric, so its tables show
    percentages, not raw fractions."""
    import json

    from sparsegt.train.config import apply_overrides, dump_config
    from sparsegt.train.presets import get_preset
    from sparsegt.train.run_records import read_summary

    run = tmp_path / "run"
    run.mkdir()
    dump_config(apply_overrides(get_preset("gps-pattern"), ["data.name=pattern-tiny"]), run / "config.yaml")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "train_loss": 0.5, "lr": 1e-3, "best": False}) + "\n")
    assert read_summary(run)["metric"] == "weighted_accuracy"
    (run / "config.yaml").unlink()
    assert "metric" not in read_summary(run)   # nothing to read it from: the tables fall back to raw values


def test_epoch_table_shows_the_moving_average_selection_where_recorded():
    from sparsegt.train.run_records import epoch_rows

    plain = {"epoch": 0, "lr": 1e-3, "train_loss": 0.5, "train_metric": 0.7, "val_metric": 0.8, "best": True,
             "test_metric": 0.75, "test_metric_per_batch": 0.74, "epoch_time_s": 60.0}
    header, rows = epoch_rows([plain], "accuracy")
    assert len(header) == 7 and "moving" not in " ".join(header)
    moving = dict(plain, epoch=1, val_metric_moving_stats=0.85, test_metric_moving_stats=0.9,
                  test_metric_per_batch_moving_stats=0.88)
    header, rows = epoch_rows([plain, dict(moving, best=False, test_metric=None)], "accuracy")
    assert header[5:8] == ["val (moving-average BN)", "test at val gains (whole / per batch)",
                           "test at moving-average val gains (whole / per batch)"]
    assert [row[7] for row in rows] == ["-", "90.00 / 88.00"] and [row[6] for row in rows] == ["75.00 / 74.00", "-"]


def test_result_table_names_the_moving_average_selection_where_recorded():
    from rich.console import Console

    from sparsegt.train.report import print_run_table

    plain = {"name": "a", "status": "completed", "metric": "accuracy", "epochs_run": 2, "epochs_planned": 2,
             "best_epoch": 2, "val_metric": 0.8, "test_metric": 0.75, "train_time_s": 10.0}
    moving = dict(plain, name="b", moving_stats={"best_epoch": 1, "val_metric": 0.85, "test_metric": 0.9,
                                                 "test_metric_per_batch": 0.88},
                  final_test_metric_moving_stats=0.7, final_test_metric_per_batch_moving_stats=0.69)
    console = Console(record=True, width=200)
    print_run_table([plain, moving], console)
    text = console.export_text()
    assert "a, with moving" not in text
    assert ("b, with moving-average BatchNorm statistics: GraphGPS's selection: best epoch 1, val 85.00, test "
            "90.00 / 88.00 per batch; final model: test 70.00 / 69.00 per batch") in text


def test_epoch_line_shows_the_moving_average_scores_where_recorded(capsys):
    from sparsegt.train.progress import PlainReporter

    record = {"epoch": 4, "train_loss": 0.5, "train_metric": 0.7, "val_metric": 0.8, "lr": 1e-3,
              "graphs_per_s": 10.0, "epoch_time_s": 3.0}
    reporter = PlainReporter(metric="accuracy", epochs=10)
    reporter.end_epoch(record)
    reporter.end_epoch(dict(record, val_metric_moving_stats=0.85))
    reporter.end_epoch(dict(record, val_metric_moving_stats=0.85, test_metric_moving_stats=0.9))
    plain, moving, gain = capsys.readouterr().out.splitlines()
    assert "moving" not in plain
    assert "moving-BN val 85.00 |" in moving and "moving-BN val 85.00 test 90.00 |" in gain


class _Restarted(Exception):
    pass


def _record_execv(monkeypatch) -> list:
    calls = []

    def execv(path, args):
        calls.append((path, list(args), os.environ.get("OMP_WAIT_POLICY")))
        raise _Restarted

    monkeypatch.setattr(cli.os, "execv", execv)
    return calls


@pytest.mark.skipif(os.name != "posix", reason="the restart is POSIX-only")
def test_the_train_command_restarts_itself_with_sleeping_openmp_threads(monkeypatch):
    """OpenMP reads OMP_WAIT_POLICY when torch loads it, before the command runs: the command owns its
    process, so it sets the variable and runs its own command line again (issue #20; `import sparsegt`
    sets nothing)."""
    calls = _record_execv(monkeypatch)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(sys, "argv", ["sparsegt", "train", "--show-config"])
    with pytest.raises(_Restarted):
        main()
    assert calls == [(sys.executable, [sys.executable, *sys.orig_argv[1:]], "PASSIVE")]


def test_no_restart_when_the_user_chose_a_policy_or_python_called_main(monkeypatch, capsys):
    calls = _record_execv(monkeypatch)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setattr(sys, "argv", ["sparsegt", "train", "--show-config"])
    assert main() == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert main(["train", "--show-config"]) == 0  # called from Python: the process is the caller's
    assert "OMP_WAIT_POLICY" not in os.environ
    assert calls == []
