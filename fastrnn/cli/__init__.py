"""The ``fastrnn`` command: ``train``, ``sample``, ``eval``, ``prepare``, ``export``, ``plot``, ``info``,
``visualize`` and ``serve``, a thin layer over the Python API; one module per command, the grammar in
:mod:`~fastrnn.cli.parser`, exit statuses and signals in :mod:`~fastrnn.cli.exits`.

Bad input (a missing or broken file, an impossible option, a size the machine cannot hold, a checkpoint that
does not fit, one another run is writing) prints one line on stderr and exits with status 2 before anything
is written. Training's own statuses and signals: :mod:`~fastrnn.cli.run_loop`. Elsewhere SIGTERM acts like
Ctrl-C: the same cleanup, then exit 143 (from the start of the entry point: see :mod:`fastrnn._entry`).
"""
from __future__ import annotations

import sys

from .._entry import Terminated, interrupted_status, silence_stdout
from .._files import OutputWriteError
from ..checkpoint import CheckpointError
from ..config import ConfigError
from ..corpus import CorpusError
from ..lock import CheckpointBusy
from ..metrics import MetricsError
from ..vocab import UnknownSymbolsError
from . import evaluate, export, info, plot, prepare, sample, serve, train, visualize
from .exits import (EXIT_USAGE, StdoutFailures, UsageError, error_line, following_rank, os_error_text,
                    sigterm_as_interrupt)
from .mpi import single_process
from .parser import build_parser

#: command: its function of the parsed arguments; every command but train runs as one process only
COMMANDS = {"train": train.run_train, "sample": single_process(sample.run_sample),
            "eval": single_process(evaluate.run_eval), "prepare": single_process(prepare.run_prepare),
            "export": single_process(export.run_export), "plot": single_process(plot.run_plot),
            "info": single_process(info.run_info), "visualize": single_process(visualize.run_visualize),
            "serve": single_process(serve.run_serve)}


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `fastrnn`: what it can do, and a mistake all the same
        if not following_rank():
            parser.print_help()
        return EXIT_USAGE
    args.world = None  # set by train under an MPI launcher (fastrnn.distributed)
    try:
        with sigterm_as_interrupt():
            status = _run(args)
    except BaseException:
        if args.world is not None and args.world.is_leader:  # a bug: no rank may be left waiting for rank 0
            import traceback
            traceback.print_exc()
            args.world.abort(1)
        raise
    if args.world is not None and args.world.is_leader:
        args.world.leave(status)
    return status


def _run(args) -> int:
    """Run the command; its exit status. Bad input and environment failures: one line on stderr, status 2."""
    if sys.stdout is None and args.command != "train":  # started with stdout closed (`>&-`): its output would be lost
        error_line(f"fastrnn {args.command}: error: standard output is closed; redirect it to a file "
                   f"(or to /dev/null)")
        return EXIT_USAGE
    try:
        with StdoutFailures.tagged():
            status = COMMANDS[args.command](args)
            if sys.stdout is not None:
                sys.stdout.flush()  # here, not at exit: a full disk or a closed pipe is seen while it can be told
        return status
    except (UsageError, CorpusError, ConfigError, CheckpointError, UnknownSymbolsError, CheckpointBusy,
            MetricsError, OutputWriteError) as e:
        error_line(f"fastrnn {args.command}: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        error_line(f"fastrnn {args.command}: {'terminated' if terminated else 'interrupted'}")
        return interrupted_status(e)
    except BrokenPipeError:  # e.g. `fastrnn sample ... | head`: the reader has all it wanted
        silence_stdout()
        return 0
    except OSError as e:  # a full disk, a quota, an I/O error: on standard output or on a file
        if StdoutFailures.is_stdout(e):
            silence_stdout()
            error_line(f"fastrnn {args.command}: error: cannot write to standard output: {e.strerror or e}")
        else:
            error_line(f"fastrnn {args.command}: error: {os_error_text(e)}")
        return EXIT_USAGE
