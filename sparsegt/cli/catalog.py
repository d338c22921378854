"""`sparsegt datasets`, `bench` and `patterns`: what can be trained on, measured and drawn."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .common import _console


def cmd_datasets(args: argparse.Namespace) -> int:
    from .. import data

    console = _console()
    if args.action == "show" or args.name:
        if not args.name:
            raise ValueError("sparsegt datasets show NAME: which dataset? (sparsegt datasets lists them)")
        data.print_dataset_stats(args.name, console)
    else:
        data.print_dataset_table(console)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    folder = Path.cwd() / "bench"
    if not folder.is_dir():
        folder = Path(__file__).resolve().parents[2] / "bench"  # the repository root
    if not folder.is_dir():
        raise ValueError("no bench/ folder here: run sparsegt bench from the repository root")
    available = sorted(p.stem for p in folder.glob("*.py") if not p.stem.startswith("_"))
    names = args.names or available
    for name in names:
        if name not in available:
            import difflib

            close = difflib.get_close_matches(name, available, n=3)
            raise ValueError(
                f"no benchmark {name!r} in {folder}"
                + (f"; did you mean {', '.join(close)}?" if close else f"; have {', '.join(available)}")
            )
    failed = []
    for name in names:
        _console().rule(f"bench/{name}.py")
        rc = subprocess.call([sys.executable, str(folder / f"{name}.py")])
        if rc:
            failed.append(name)
    if failed:
        _console(stderr=True).print(f"[red]failed: {', '.join(failed)}[/]")
        return 1
    return 0


def _parse_params(items: list[str]) -> dict:
    import yaml

    params = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"pattern parameter {item!r} must look like key=value (e.g. degree=4)")
        key, value = item.split("=", 1)
        params[key] = yaml.safe_load(value) if value.strip() else ""
    return params


def cmd_patterns(args: argparse.Namespace) -> int:
    if args.action != "show":
        raise ValueError("usage: sparsegt patterns show NAME [key=value ...] -o FILE.png")
    from ..patterns import show_pattern

    out = args.output or f"{args.name}.png"
    show_pattern(args.name, _parse_params(args.params), out)
    _console().print(f"wrote {out}")
    return 0
