"""The `sparsegt` command line: train, sweep, runs, eval, predict, show-attention, sparsify, datasets, bench,
patterns.

One module a group of sub-commands: `parser` (the arguments), `training` (train, sweep, runs), `inference`
(eval, predict, show-attention), `sparsify` (sparsify), `catalog` (datasets, bench, patterns); `common` what they
share.

Every sub-command is a thin layer over a library call (`sparsegt.train.run.train_run`,
`evaluate_run`, `sparsegt.data.print_dataset_table`, `sparsegt.patterns.show_pattern`), so what the CLI
does can always be done from Python too.
"""

from __future__ import annotations

import os
import sys

from .catalog import cmd_bench, cmd_datasets, cmd_patterns
from .common import _console
from .inference import cmd_eval, cmd_predict, cmd_show_attention
from .parser import build_parser
from .sparsify import cmd_sparsify
from .training import cmd_runs, cmd_sweep, cmd_train

__all__ = ["main", "build_parser", "COMMANDS"]


COMMANDS = {
    "train": cmd_train,
    "eval": cmd_eval,
    "predict": cmd_predict,
    "show-attention": cmd_show_attention,
    "sparsify": cmd_sparsify,
    "datasets": cmd_datasets,
    "bench": cmd_bench,
    "sweep": cmd_sweep,
    "runs": cmd_runs,
    "patterns": cmd_patterns,
}
COMPUTING_COMMANDS = ("train", "eval", "sparsify")  # the ones whose speed depends on how idle OpenMP threads wait


def restart_with_sleeping_openmp_threads() -> None:
    """Start this command again with ``OMP_WAIT_POLICY=PASSIVE``, unless the variable is set already.

    Idle OpenMP threads (torch's and numba's) that spin while waiting starve the main thread whenever the
    cores are shared: 2.9 s -> 0.05 s per training step, measured on a busy 2-core machine. OpenMP reads
    the variable once, when torch loads it, which is before any of sparsegt runs; so the command that owns
    the process sets it and replaces itself with a fresh interpreter running the same command line (same
    process id, so torchrun and shells see no difference). A library import sets nothing: a program that
    imports sparsegt sets the variable itself (README, "Threads and OpenMP"). POSIX only.
    """
    if "OMP_WAIT_POLICY" in os.environ or os.name != "posix":
        return
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def main(argv: list[str] | None = None) -> int:
    """The `sparsegt` command. ``argv`` None: the process's own command line (the process is ours: see
    `restart_with_sleeping_openmp_threads`); a list: called from Python, the process is left as it is."""
    from rich.markup import escape

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may come after an option (`train --preset demo train.epochs=3 -q train.lr=1e-3`):
    # argparse stops collecting the positional list at the first option, so gather the rest here
    overrides_only = all("=" in a and not a.startswith("-") for a in extra)
    if extra and getattr(args, "overrides", None) is not None and overrides_only:
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help()
        return 0
    if argv is None and args.command in COMPUTING_COMMANDS:
        restart_with_sleeping_openmp_threads()
    err_console = _console(stderr=True)
    try:
        return COMMANDS[args.command](args)
    except ValueError as err:
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except ImportError as err:
        err_console.print(f"[bold red]missing package:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 3
    except OSError as err:  # a file that cannot be read or written (the error names it): a message, not a traceback
        err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: continue a run with sparsegt train --resume RUN_DIR")
        return 130
    except RuntimeError as err:
        from ..train.trainer import TrainingDiverged

        if isinstance(err, TrainingDiverged):
            err_console.print(f"[bold red]training stopped:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
