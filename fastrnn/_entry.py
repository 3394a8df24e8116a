"""The ``fastrnn`` command's entry point: signal handling first, then the heavy imports.

Importing the command line loads numpy and Numba's kernels, a second or more.
Before that, SIGTERM is made to raise :class:`Terminated` (a KeyboardInterrupt,
as Ctrl-C raises), and an interruption anywhere up to the command's own handling
exits 130 (Ctrl-C) or 143 (SIGTERM) with one line instead of a traceback or a
death by signal. Standard library only, so that it loads in milliseconds.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
COMMANDS = ("train", "sample", "eval", "prepare", "export", "plot")
ANNOUNCE_ENV = "FASTRNN_TEST_ANNOUNCE_IMPORT"  # tests: say on stderr when the heavy imports begin


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so the same cleanup runs (exit 143)."""


def _on_sigterm(signum, frame):
    raise Terminated()


def interrupted_status(e: KeyboardInterrupt) -> int:
    return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED


def main(argv=None) -> int:
    """Run the ``fastrnn`` command (``argv``: the arguments, default ``sys.argv[1:]``); its exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = next((f" {a}" for a in args[:1] if a in COMMANDS), "")
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN):
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        if os.environ.get(ANNOUNCE_ENV):
            print("fastrnn: importing", file=sys.stderr, flush=True)
        from .cli import main as cli_main
        status = cli_main(args)
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"fastrnn{command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        status = interrupted_status(e)
    if argv is None:  # the process's own entry: the work is done and its status known; exit with it
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, signal.SIG_IGN)
    return status
