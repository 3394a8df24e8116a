"""The ``fastrnn`` command's entry point: signal handling first, then the heavy imports.

Importing the command line loads numpy and Numba's kernels, a second or more.
Before that, SIGTERM is made to raise :class:`Terminated` (a KeyboardInterrupt,
as Ctrl-C raises), and an interruption anywhere up to the command's own handling
exits 130 (Ctrl-C) or 143 (SIGTERM) with one line instead of a traceback or a
death by signal. Ctrl-C is handled the same way, by the same handler
(:func:`raise_interruption`), which also records the signal: an interruption
raised inside a C callback (Numba's compiler calls back into Python while it
compiles) is printed and dropped there, and :func:`raise_dropped_interruption`
raises it again where the command can act on it. Standard library only, so that it loads
in milliseconds.

Standard output: a file descriptor 0, 1 or 2 closed at the start (``>&-``) is
held open on the null device, so that no file the command opens takes its
number (``sys.stdout`` stays None: commands see that it is closed). Whatever is
still buffered is flushed here, before the interpreter's own flush at exit: a
failure (a full disk, ``> /dev/full``) is one line on stderr and exit status 2,
and a closed pipe (``| head``) is quiet; never "Exception ignored ...".
"""
from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM
EXIT_OUTPUT_FAILED = 2  # as a usage error: the command's one-line errors share status 2
COMMANDS = ("train", "sample", "eval", "prepare", "export", "plot", "info", "visualize", "serve")  # fastrnn.cli.COMMANDS' names
ANNOUNCE_ENV = "FASTRNN_TEST_ANNOUNCE_IMPORT"  # tests: say on stderr when the heavy imports begin


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt, so the same cleanup runs (exit 143)."""


_raised = []  # the signals whose interruption raise_interruption raised, in order


def interruption(signum) -> KeyboardInterrupt:
    """What signal ``signum`` (SIGINT or SIGTERM) raises."""
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def raise_interruption(signum, frame):
    """The command's SIGINT and SIGTERM handler until training installs its own: record the signal, and
    raise its :func:`interruption` where the main thread is."""
    _raised.append(signum)
    raise interruption(signum)


def raise_dropped_interruption():
    """Raise again the interruption of a signal that :func:`raise_interruption` raised, if any.

    Call it where reaching the line means no interruption reached the command's handling: such an
    exception was printed and dropped by a C callback (as Numba's compiler's object-cache callback
    does), and the command would otherwise run on as if no signal had come.
    """
    if _raised:
        raise interruption(_raised[0])


def forget_interruptions():
    """Forget the signals recorded so far (a command run in-process has ended, handled or not)."""
    _raised.clear()


def interrupted_status(e: KeyboardInterrupt) -> int:
    """The exit status of an interruption: 143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED


def silence_stdout():
    """Point file descriptor 1 at the null device after standard output failed: the interpreter's flush at
    exit then writes nowhere instead of failing again with "Exception ignored ..." (what was unwritten is lost)."""
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, sys.stdout.fileno())
        os.close(null)
    except (AttributeError, ValueError, OSError):
        pass


def flush_stdout(command="") -> bool:
    """Flush ``sys.stdout``; False (after one line on stderr) if that fails other than by a closed pipe."""
    if sys.stdout is None:
        return True
    try:
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        silence_stdout()
    except OSError as e:
        silence_stdout()
        print(f"fastrnn{command}: error: cannot write to standard output: {e.strerror or e}", file=sys.stderr)
        return False
    return True


def _hold_closed_descriptors():
    """Open the null device on each of descriptors 0, 1 and 2 that is closed (``>&-``)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
                if null != fd:
                    os.dup2(null, fd)
                    os.close(null)
            except OSError:
                pass


def main(argv=None) -> int:
    """Run the ``fastrnn`` command (``argv``: the arguments, default ``sys.argv[1:]``); its exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    command = next((f" {a}" for a in args[:1] if a in COMMANDS), "")
    if argv is None:
        _hold_closed_descriptors()
    forget_interruptions()
    if threading.current_thread() is threading.main_thread():
        for signum, default in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
            if signal.getsignal(signum) is default:
                signal.signal(signum, raise_interruption)
    try:
        if os.environ.get(ANNOUNCE_ENV):
            print("fastrnn: importing", file=sys.stderr, flush=True)
        from .cli import main as cli_main
        status = cli_main(args)
    except SystemExit:  # argparse's --help or usage error: its text may still be buffered
        if argv is None and not flush_stdout(command):
            raise SystemExit(EXIT_OUTPUT_FAILED) from None
        raise
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        print(f"fastrnn{command}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        status = interrupted_status(e)
    if argv is None and not flush_stdout(command):
        status = status or EXIT_OUTPUT_FAILED
    if argv is None:  # the process's own entry: the work is done and its status known; exit with it
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, signal.SIG_IGN)
    return status
