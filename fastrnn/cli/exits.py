"""Exit statuses, the errors that are one line on stderr, and signals: SIGTERM as Ctrl-C, and the training
loop's two-signal stop.

The statuses: 0 done; 1 a run that diverged (:data:`EXIT_DIVERGED`); 2 bad input or an environment failure,
one line on stderr (:data:`EXIT_USAGE`); 130 / 143 interrupted by SIGINT / SIGTERM (128 + the signal, as
:mod:`fastrnn._entry` defines them); 141 a training run whose standard output was closed (128 + SIGPIPE).
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

from .._entry import forget_interruptions, interruption, raise_interruption

if TYPE_CHECKING:
    from ..trainer import Trainer


EXIT_DIVERGED = 1
EXIT_SHORT = 1  # sample --lines drew fewer items than asked within --max-draws (those found are printed)
EXIT_USAGE = 2
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader went away


class UsageError(Exception):
    """Bad command-line input: reported as one line on stderr, exit status 2."""


RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")  # as fastrnn.distributed.RANK_VARIABLES


def following_rank() -> bool:
    """True in a process an MPI launcher started as rank 1 or later: rank 0 alone prints errors."""
    if not any(os.environ.get(name) for name in RANK_VARIABLES):
        return False
    from ..distributed import launched_rank
    return launched_rank() != 0


def error_line(text):
    if not following_rank():
        print(text, file=sys.stderr)


def warn(text):
    print(f"fastrnn train: warning: {text}", file=sys.stderr, flush=True)


def os_error_text(e: OSError) -> str:
    """One line for an OSError: its own message when it names its file, else "FILE: REASON" or "REASON"."""
    if e.strerror is None:
        return str(e)
    return f"{e.filename}: {e.strerror}" if e.filename is not None else e.strerror


class StdoutFailures:
    """Tells write failures on standard output from those on files (:func:`silence_stdout` quiets it after).

    While :meth:`tagged` is active, ``sys.stdout`` (and its ``buffer``) are proxies that mark an
    ``OSError`` raised by their ``write`` or ``flush`` (the same exception, re-raised, so handlers of
    ``BrokenPipeError`` or ``OSError`` see it unchanged)."""

    MARK = "_fastrnn_stdout"

    @classmethod
    @contextlib.contextmanager
    def tagged(cls):
        real = sys.stdout
        if real is None or isinstance(real, MarkingStream):
            yield
            return
        sys.stdout = MarkingStream(real, cls.MARK)
        try:
            yield
        finally:
            if sys.stdout is not None and getattr(sys.stdout, "_stream", None) is real:
                sys.stdout = real

    @classmethod
    def is_stdout(cls, e: BaseException) -> bool:
        return getattr(e, cls.MARK, False)


class MarkingStream:
    """A stream whose ``write`` and ``flush`` mark the ``OSError`` they raise (``setattr(e, mark, True)``);
    everything else is the wrapped stream's. ``buffer`` (a text stream's bytes) is wrapped alike."""

    def __init__(self, stream, mark):
        self._stream, self._mark = stream, mark

    def _marked(self, method, *a):
        try:
            return method(*a)
        except OSError as e:
            setattr(e, self._mark, True)
            raise

    def write(self, data):
        return self._marked(self._stream.write, data)

    def flush(self):
        return self._marked(self._stream.flush)

    @property
    def buffer(self):
        return MarkingStream(self._stream.buffer, self._mark)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) while the command runs; restored after.

    Only in the main thread, the one place Python delivers signals, and not where SIGTERM is ignored."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN):
        yield
        return

    previous = signal.signal(signal.SIGTERM, raise_interruption)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        forget_interruptions()


class Abandoned(BaseException):
    """A first signal during a validation: it is dropped (it changes nothing) and the run saves at once."""


class StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM while training, as a context manager that installs and restores handlers.

    The first signal asks the trainer to stop at the end of its block of steps;
    the loop then saves and exits 128 + that signal (130 or 143). During a
    validation (:meth:`abandonable`), which changes no state, the first signal
    instead abandons it at once (at the end of its current window of ids) and the
    loop saves. Another signal while that stop is still pending (a long block or
    sample) stops at once without saving: it raises KeyboardInterrupt (or
    :class:`Terminated`) and the checkpoint file keeps its last complete version.
    Signals while a checkpoint is being written, or after the stop was honoured
    (the final save), are ignored, so they never cut a save short. A signal the
    process was told to ignore (``SIG_IGN``, e.g. under ``nohup``-like launchers)
    stays ignored. The loop checks :attr:`signum` after its last block and after
    its final save, so a signal is never dropped wherever it lands.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.signum = None  # the first signal received
        self.saving = False
        self._abandon = False
        self._finished = False
        self._previous = {}

    def __call__(self, signum, frame):
        if self._finished:
            return
        if self.signum is None:
            self.signum = signum
            if self._abandon:
                self._abandon = False
                raise Abandoned()
            self.trainer.request_stop(signum)
        elif self.trainer.stop_requested and not self.saving:
            raise interruption(signum)

    @contextlib.contextmanager
    def save(self):
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    @contextlib.contextmanager
    def abandonable(self):
        """A block a first signal may cut short with :class:`Abandoned` (one that changes no state)."""
        self._abandon = self.signum is None
        try:
            yield
        finally:
            self._abandon = False

    def finish(self):
        """The stop is honoured and saved: ignore signals from now on."""
        self._finished = True

    def __enter__(self):
        for signum in self.SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
