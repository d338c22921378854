"""What the sub-commands share: the console, the run config from --preset/--config and overrides."""

from __future__ import annotations

import argparse
import os


def _console(stderr: bool = False):
    from rich.console import Console

    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:  # logs and pipes: wide tables rather than rich's 80-column default
        console = Console(stderr=stderr, highlight=False, width=140)
    return console


def _resolve_train_config(args: argparse.Namespace):
    from ..train.config import apply_overrides, load_config
    from ..train.presets import DEFAULT_PRESET, get_preset

    if args.config:
        config = load_config(args.config)
    else:
        config = get_preset(args.preset or DEFAULT_PRESET)
    apply_overrides(config, args.overrides)
    if args.out_dir:
        config.out_dir = args.out_dir
    return config



def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0
