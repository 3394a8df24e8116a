"""A training run's metrics log: a CSV file beside the checkpoint, appended row by row, read back for plots.

``CHECKPOINT.metrics.csv`` beside checkpoint ``CHECKPOINT`` (its whole file name
plus ``.metrics.csv``: ``run.npz`` -> ``run.npz.metrics.csv``), so that distinct
checkpoints never share one; one header line, then one row per log point and
per validation:

- ``step``: steps done; ``chars_seen``: training characters those steps read
  (steps x batch size x seq-length);
- ``wall_seconds``: wall time of training since the run's first start (a
  resumed run continues from the last row it continues);
- ``train_loss``: the mean training loss of the steps since the previous row
  (not the seed's smoothed loss, which lags a short run by ~1,000 steps), and
  ``val_loss``: the validation loss where one was computed at that step (else
  empty), both in nats per character;
- ``learning_rate``: the rate of the row's step (its schedule's, see
  ``--lr-schedule``); ``chars_per_second``: training throughput since the
  previous row.

Older versions named it ``NAME.metrics.csv`` for ``NAME.npz``, ``NAME.ckpt.npz``,
``NAME.ckpt`` and ``NAME`` alike (:func:`legacy_metrics_path`); a resumed run whose
log has that name and none the new one goes on appending to it
(:func:`run_metrics_path`).

A resumed run appends to the file; nothing ever rewrites a row. Each row is
one ``write`` of a whole line on a file opened for appending, so an interrupted
run keeps its rows and leaves at most one torn last row (no line end), which a
resume cuts off before it appends. A resume from a checkpoint older than the
last rows (a crash between saves) appends rows whose steps go back:
:func:`read_metrics` keeps the later ones. Rows that are not seven numbers
(torn, or garbled by another program) are skipped by the reader, with one
warning.
"""
from __future__ import annotations

import errno
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

COLUMNS = ("step", "chars_seen", "wall_seconds", "train_loss", "val_loss", "learning_rate", "chars_per_second")
HEADER = ",".join(COLUMNS)
_VAL = COLUMNS.index("val_loss")

log = logging.getLogger(__name__)


class MetricsError(ValueError):
    """A metrics file that is not fastrnn's, or cannot be read."""


def metrics_path(checkpoint) -> Path:
    """``x.npz`` -> ``x.npz.metrics.csv``, ``x.ckpt.npz`` -> ``x.ckpt.npz.metrics.csv``, beside the checkpoint."""
    path = Path(checkpoint)
    return path.with_name(path.name + ".metrics.csv")


def legacy_metrics_path(checkpoint) -> Path:
    """The name older versions used: ``x.npz``, ``x.ckpt.npz``, ``x.ckpt`` and ``x`` all -> ``x.metrics.csv``."""
    path = Path(checkpoint)
    name = path.name
    for suffix in (".npz", ".ckpt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
    return path.with_name(name + ".metrics.csv")


def run_metrics_path(checkpoint, resuming: bool) -> Path:
    """The log a run saving to ``checkpoint`` writes: :func:`metrics_path`, except for a resumed run
    whose log only exists under the :func:`legacy_metrics_path` (it continues that file)."""
    path, legacy = metrics_path(checkpoint), legacy_metrics_path(checkpoint)
    if resuming and not os.path.lexists(path) and legacy.is_file():
        return legacy
    return path


def _header(path: Path) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.readline().rstrip(b"\r\n").decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"cannot read {str(path)!r}: {e}") from None


def is_metrics_file(path) -> bool:
    """Whether ``path`` holds fastrnn's header (or is empty)."""
    header = _header(Path(path))
    return header in (HEADER, "")


def _values(line: bytes) -> list | None:
    """The seven numbers of a row (``val_loss`` NaN where empty), or None for anything else."""
    fields = line.rstrip(b"\r").split(b",")
    if len(fields) != len(COLUMNS):
        return None
    values = []
    for i, text in enumerate(fields):
        if not text and i == _VAL:
            values.append(math.nan)
            continue
        try:
            value = float(text)
        except ValueError:
            return None
        if not math.isfinite(value) and i != _VAL:
            return None
        values.append(value)
    return values


def _rows(path: Path):
    """``(line number, values or None)`` for each row; a last line without its line end is a torn row (None)."""
    try:
        with open(path, "rb") as f:
            if f.readline().rstrip(b"\r\n") != HEADER.encode():
                raise MetricsError(f"{str(path)!r} is not a fastrnn metrics log (its header is not {HEADER!r})")
            for number, line in enumerate(f, start=2):
                yield number, _values(line[:-1]) if line.endswith(b"\n") else None
    except OSError as e:
        raise MetricsError(f"cannot read {str(path)!r}: {e.strerror or e}") from None


def _last_seconds(path: Path, step: int) -> float:
    """``wall_seconds`` of the last row at or before ``step`` (0 when none)."""
    seconds = 0.0
    for _, values in _rows(path):
        if values is not None and values[0] <= step:
            seconds = values[2]
    return seconds


def _cut_torn_row(fd, path: Path):
    """Truncate the open log ``fd`` after its last line end (a crash mid-row leaves a row without one);
    a log cut inside its header is emptied. Raises :class:`MetricsError` for a file that is not a log."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if b"\n" not in data and HEADER.encode().startswith(data):
        os.ftruncate(fd, 0)
        return
    if first != HEADER.encode():
        raise MetricsError(f"{str(path)!r} is not a fastrnn metrics log (its first line is not {HEADER!r}); "
                           f"move it away or choose another --checkpoint")
    if not data.endswith(b"\n"):
        os.ftruncate(fd, data.rfind(b"\n") + 1)


def _write_new(path: Path):
    """Put a log holding only the header at ``path``, replacing what is there in one step."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes((HEADER + "\n").encode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class MetricsLog:
    """Appends rows to a metrics file (the CLI's single writer: one process, the one that saves checkpoints).

    ``resume_step``: None for a new run (the file is started afresh, header
    first, replacing in one step what :func:`check_new` allowed); the step a
    resumed run starts from: rows are appended after those already there (a
    torn last row cut off first; a missing or empty file gets its header),
    ``wall_seconds`` continuing from the last row at or before that step. An
    existing file is never truncated to nothing nor opened for writing from its start.
    """

    def __init__(self, path, resume_step=None):
        self.path = Path(path)
        try:
            if resume_step is None:
                _write_new(self.path)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise MetricsError(f"cannot write the metrics log {str(self.path)!r}: {e.strerror or e}") from None
        try:
            _cut_torn_row(self._fd, self.path)
            if os.fstat(self._fd).st_size == 0:
                self._write(HEADER)
            self._seconds0 = _last_seconds(self.path, resume_step) if resume_step is not None else 0.0
        except BaseException:
            os.close(self._fd)
            raise
        self._clock0 = time.perf_counter()
        self._mark = None  # (step, train_seconds) of the previous row

    def _write(self, line):
        """One ``write`` of the whole line; a short one (a full disk) is taken back and raised as OSError."""
        data = (line + "\n").encode()
        size = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, data)
        except OSError:
            os.ftruncate(self._fd, size)
            raise
        if written != len(data):
            os.ftruncate(self._fd, size)  # never leave a torn row for the next one to be glued to
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def start(self, trainer):
        """Start the clock: training begins now (after the kernels are loaded)."""
        self._clock0 = time.perf_counter()
        self._mark = (trainer.n, trainer.train_seconds)

    def row(self, trainer, val=None):
        """One row for ``trainer``'s state now; ``val``: the validation :class:`~fastrnn.charmodel.Score` or None."""
        n0, t0 = self._mark if self._mark is not None else (trainer.n, trainer.train_seconds)
        dt = trainer.train_seconds - t0
        cps = (trainer.n - n0) * trainer.chars_per_step / dt if dt > 0 else 0.0
        self._mark = (trainer.n, trainer.train_seconds)
        val_loss = "" if val is None else f"{val.nats_per_char:.6g}"
        seconds = self._seconds0 + time.perf_counter() - self._clock0
        rate = trainer.config.learning_rate_at(max(trainer.n, 1))  # the schedule's rate at this step
        self._write(f"{trainer.n},{trainer.n * trainer.chars_per_step},{seconds:.3f},"
                    f"{trainer.recent_loss_per_char():.6g},{val_loss},{rate:g},{cps:.0f}")

    def close(self):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _skipped_note(path: Path, skipped: list) -> str:
    where = ", ".join(map(str, skipped[:5])) + (", ..." if len(skipped) > 5 else "")
    rows = "row" if len(skipped) == 1 else "rows"
    return (f"{str(path)!r}: skipped {len(skipped)} malformed {rows} (line{'s' if len(skipped) > 1 else ''} "
            f"{where}): torn by a crash or written by another program")


def read_metrics(path, warn=None) -> dict:
    """The columns of a metrics file as float64 arrays (``val_loss`` NaN where not evaluated).

    Where a resumed run's steps go back (it continued an older checkpoint),
    the earlier rows at or after its first step are dropped: what is left is
    the history of the run that reached the last row. Malformed rows (not seven
    numbers, or a last row without its line end) are skipped, and ``warn`` is
    called once with a one-line note naming their lines (default: a warning on
    the ``fastrnn.metrics`` logger, which prints that line on stderr unless
    logging is configured otherwise). :class:`MetricsError` for a file that
    does not exist or whose header is not fastrnn's.
    """
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"metrics file {str(path)!r} does not exist" if not path.exists() else
                           f"{str(path)!r} is not a file")
    rows, skipped = [], []
    for number, values in _rows(path):
        if values is None:
            skipped.append(number)
            continue
        while rows and rows[-1][0] >= values[0]:
            rows.pop()
        rows.append(values)
    if skipped:
        (warn or log.warning)(_skipped_note(path, skipped))
    table = np.array(rows, np.float64).reshape(-1, len(COLUMNS))
    return {c: table[:, i] for i, c in enumerate(COLUMNS)}


def check_new(path, overwrite: bool):
    """Before a new run: refuse an existing metrics file unless ``overwrite`` (and then only fastrnn's)."""
    path = Path(path)
    if not path.exists():
        return
    if not overwrite:
        raise MetricsError(f"{str(path)!r} already exists (another run's metrics); remove it, choose another "
                           f"--checkpoint, or pass --overwrite to replace it")
    if not path.is_file() or not is_metrics_file(path):
        raise MetricsError(f"--overwrite replaces only a fastrnn metrics log, and {str(path)!r} is not one; "
                           f"choose another --checkpoint")
    if not os.access(path, os.W_OK):
        raise MetricsError(f"{str(path)!r} is not writable")
