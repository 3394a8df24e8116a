"""A training run's metrics log: a CSV file beside the checkpoint, appended row by row, read back for plots.

``NAME.metrics.csv`` beside checkpoint ``NAME.npz`` (or ``NAME.ckpt.npz``), one
header line, then one row per log point and per validation:

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

A resumed run appends to the file; nothing ever rewrites a row. Rows are
flushed as written, so an interrupted run keeps them. A resume from a
checkpoint older than the last rows (a crash between saves) appends rows whose
steps go back: :func:`read_metrics` keeps the later ones.
"""
from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

import numpy as np

COLUMNS = ("step", "chars_seen", "wall_seconds", "train_loss", "val_loss", "learning_rate", "chars_per_second")
HEADER = ",".join(COLUMNS)


class MetricsError(ValueError):
    """A metrics file that is not fastrnn's, or cannot be read."""


def metrics_path(checkpoint) -> Path:
    """``x.npz`` -> ``x.metrics.csv``, ``x.ckpt.npz`` -> ``x.metrics.csv``, beside the checkpoint."""
    path = Path(checkpoint)
    name = path.name
    for suffix in (".npz", ".ckpt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
    return path.with_name(name + ".metrics.csv")


def _header(path: Path) -> str | None:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.readline().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as e:
        raise MetricsError(f"cannot read {str(path)!r}: {e}") from None


def is_metrics_file(path) -> bool:
    """Whether ``path`` holds fastrnn's header (or is empty)."""
    header = _header(Path(path))
    return header in (HEADER, "")


def _last_seconds(path: Path, step: int) -> float:
    """``wall_seconds`` of the last row at or before ``step`` (0 when none)."""
    seconds = 0.0
    for row in _rows(path):
        if int(row["step"]) <= step:
            seconds = float(row["wall_seconds"])
    return seconds


class MetricsLog:
    """Appends rows to a metrics file (the CLI's single writer: one process, the one that saves checkpoints).

    ``resume_step``: None for a new run (the file is started afresh, header
    first); the step a resumed run starts from (rows are appended after those
    already there, ``wall_seconds`` continuing from the last row at or before it).
    """

    def __init__(self, path, resume_step=None):
        self.path = Path(path)
        exists = self.path.exists() and self.path.stat().st_size > 0
        if exists and not is_metrics_file(self.path):
            raise MetricsError(f"{str(self.path)!r} is not a fastrnn metrics log (its first line is not "
                               f"{HEADER!r}); move it away or choose another --checkpoint")
        append = resume_step is not None and exists
        self._seconds0 = _last_seconds(self.path, resume_step) if append else 0.0
        try:
            self._file = open(self.path, "a" if append else "w", encoding="utf-8", newline="")
        except OSError as e:
            raise MetricsError(f"cannot write the metrics log {str(self.path)!r}: {e.strerror or e}") from None
        if not append:
            self._write(HEADER)
        self._clock0 = time.perf_counter()
        self._mark = None  # (step, train_seconds) of the previous row

    def _write(self, line):
        self._file.write(line + "\n")
        self._file.flush()

    def start(self, trainer):
        """Start the clock: training begins now (after the kernels are loaded)."""
        self._clock0 = time.perf_counter()
        self._mark = (trainer.n, trainer.train_seconds)

    def row(self, trainer, val=None):
        """One row for ``trainer``'s state now; ``val``: the validation :class:`~fastrnn.trainer.Score` or None."""
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
        self._file.close()


def _rows(path: Path):
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise MetricsError(f"{str(path)!r} is not a fastrnn metrics log (its header is not {HEADER!r})")
        yield from reader


def read_metrics(path) -> dict:
    """The columns of a metrics file as float64 arrays (``val_loss`` NaN where not evaluated).

    Where a resumed run's steps go back (it continued an older checkpoint),
    the earlier rows at or after its first step are dropped: what is left is
    the history of the run that reached the last row.
    """
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"metrics file {str(path)!r} does not exist" if not path.exists() else
                           f"{str(path)!r} is not a file")
    rows = []
    try:
        for i, row in enumerate(_rows(path), start=2):
            try:
                values = [float(row[c]) if row[c] not in ("", None) else math.nan for c in COLUMNS]
            except ValueError:
                raise MetricsError(f"{str(path)!r} line {i}: not a number in {dict(row)}") from None
            while rows and rows[-1][0] >= values[0]:
                rows.pop()
            rows.append(values)
    except UnicodeDecodeError as e:
        raise MetricsError(f"cannot read {str(path)!r}: {e}") from None
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
