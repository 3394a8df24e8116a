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
  previous row;
- ``new_best``: 1 on a row whose validation loss, as written, is below every
  earlier one of the run (what ``--keep-best`` saves), else empty. Logs written
  before this column existed have the first seven only; a resumed run goes on
  appending seven, and the reader gives them ``new_best`` 0.

Older versions named it ``NAME.metrics.csv`` for ``NAME.npz``, ``NAME.ckpt.npz``,
``NAME.ckpt`` and ``NAME`` alike (:func:`legacy_metrics_path`); a resumed run whose
log has that name and none the new one goes on appending to it
(:func:`run_metrics_path`).

A resumed run appends to the file; nothing ever rewrites a row. Each row is
one ``write`` of a whole line on a file opened for appending, so an interrupted
run keeps its rows and leaves at most one torn last row (no line end), which a
resume cuts off before it appends. A resume from a checkpoint older than the
last rows (a crash between saves) appends rows whose steps go back:
:func:`read_metrics` keeps the later ones. Rows that are not the header's numbers
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

COLUMNS = ("step", "chars_seen", "wall_seconds", "train_loss", "val_loss", "learning_rate", "chars_per_second",
           "new_best")
HEADER = ",".join(COLUMNS)
HEADER_7 = ",".join(COLUMNS[:7])  # logs of earlier versions: no new_best
HEADERS = {HEADER.encode(): len(COLUMNS), HEADER_7.encode(): 7}  # header: columns per row
_VAL, _BEST = COLUMNS.index("val_loss"), COLUMNS.index("new_best")
LOSS_FORMAT = ".6g"  # how a row writes val_loss


def as_logged(loss: float) -> float:
    """``loss`` as a row writes it (read back): validations are compared at this precision, so the best of a
    run is the minimum of its log's ``val_loss`` column, exactly."""
    return float(f"{loss:{LOSS_FORMAT}}")

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
    return header in (HEADER, HEADER_7, "")


def _values(line: bytes, columns: int) -> list | None:
    """The numbers of a row of ``columns`` fields, as :data:`COLUMNS` (``val_loss`` NaN where empty,
    ``new_best`` 0 where empty or absent), or None for anything else."""
    fields = line.rstrip(b"\r").split(b",")
    if len(fields) != columns:
        return None
    values = []
    for i, text in enumerate(fields):
        if not text and i in (_VAL, _BEST):
            values.append(math.nan if i == _VAL else 0.0)
            continue
        try:
            value = float(text)
        except ValueError:
            return None
        if not math.isfinite(value) and i != _VAL:
            return None
        values.append(value)
    return values + [0.0] * (len(COLUMNS) - columns)


def _rows(path: Path):
    """``(line number, values or None)`` for each row; a last line without its line end is a torn row (None)."""
    try:
        with open(path, "rb") as f:
            columns = HEADERS.get(f.readline().rstrip(b"\r\n"))
            if columns is None:
                raise MetricsError(f"{str(path)!r} is not a fastrnn metrics log (its header is not {HEADER!r})")
            for number, line in enumerate(f, start=2):
                yield number, _values(line[:-1], columns) if line.endswith(b"\n") else None
    except OSError as e:
        raise MetricsError(f"cannot read {str(path)!r}: {e.strerror or e}") from None


def _last_seconds(path: Path, step: int) -> float:
    """``wall_seconds`` of the last row at or before ``step`` (0 when none)."""
    seconds = 0.0
    for _, values in _rows(path):
        if values is not None and values[0] <= step:
            seconds = values[2]
    return seconds


def _cut_torn_row(fd, path: Path) -> int:
    """Truncate the open log ``fd`` after its last line end (a crash mid-row leaves a row without one);
    a log cut inside its header is emptied. Returns the columns per row of its header (that of
    :data:`HEADER` for an emptied log); :class:`MetricsError` for a file that is not a log."""
    data = os.pread(fd, os.fstat(fd).st_size, 0)
    first = data.split(b"\n", 1)[0].rstrip(b"\r")
    if b"\n" not in data and HEADER.encode().startswith(data):
        os.ftruncate(fd, 0)
        return len(COLUMNS)
    if first not in HEADERS:
        raise MetricsError(f"{str(path)!r} is not a fastrnn metrics log (its first line is not {HEADER!r}); "
                           f"move it away or choose another --checkpoint")
    if not data.endswith(b"\n"):
        os.ftruncate(fd, data.rfind(b"\n") + 1)
    return HEADERS[first]


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
            self._columns = _cut_torn_row(self._fd, self.path)
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

    def row(self, trainer, val=None, new_best=False):
        """One row for ``trainer``'s state now; ``val``: the validation :class:`~fastrnn.charmodel.Score` or None;
        ``new_best``: its loss is the run's best so far (marked where the log has the column)."""
        n0, t0 = self._mark if self._mark is not None else (trainer.n, trainer.train_seconds)
        dt = trainer.train_seconds - t0
        cps = (trainer.n - n0) * trainer.chars_per_step / dt if dt > 0 else 0.0
        self._mark = (trainer.n, trainer.train_seconds)
        val_loss = "" if val is None else f"{val.nats_per_char:{LOSS_FORMAT}}"
        seconds = self._seconds0 + time.perf_counter() - self._clock0
        rate = trainer.config.learning_rate_at(max(trainer.n, 1))  # the schedule's rate at this step
        best = ("," + ("1" if new_best else "")) if self._columns == len(COLUMNS) else ""
        self._write(f"{trainer.n},{trainer.n * trainer.chars_per_step},{seconds:.3f},"
                    f"{trainer.recent_loss_per_char():.6g},{val_loss},{rate:g},{cps:.0f}{best}")

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
    the history of the run that reached the last row. Malformed rows (not seven or
    eight numbers as the header says, or a last row without its line end) are skipped, and ``warn`` is
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
