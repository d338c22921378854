"""`keep_large_allocations`: glibc takes the thresholds on Linux, the opt-outs change nothing, and
`sparsegt train` asks for it."""

import sys

import pytest

from sparsegt import cli
from sparsegt.train import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_glibc_takes_the_thresholds(monkeypatch):
    monkeypatch.delenv(allocator.OPT_OUT, raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert allocator.keep_large_allocations() is True


def test_opt_outs_change_nothing(monkeypatch):
    calls = []
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda *a, **k: calls.append(a))
    monkeypatch.setenv(allocator.OPT_OUT, "1")
    assert allocator.keep_large_allocations() is False
    monkeypatch.delenv(allocator.OPT_OUT)
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert allocator.keep_large_allocations() is False
    assert calls == []


def test_train_command_asks_for_it(monkeypatch):
    asked = []
    monkeypatch.setattr(allocator, "keep_large_allocations", lambda: asked.append(True) or True)
    assert cli.main(["train", "--show-config", "--preset", "gps-pattern"]) == 0
    assert asked == [True]
