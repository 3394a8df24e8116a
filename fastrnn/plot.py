"""``fastrnn plot``: training and validation bits/char of one or more metrics logs, overlaid, as a PNG.

matplotlib (the ``plot`` extra), with its non-interactive Agg backend. Each
run keeps one colour: its training loss (the mean of each row's steps) as a line, its validation
losses as a dashed line with markers; the legend names each run after its
file (``NAME.metrics.csv`` -> ``NAME``). Titles and labels are drawn as
written: a ``$`` is a dollar sign, not the start of matplotlib's mathtext.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._files import atomic_write
from .extras import require
from .metrics import read_metrics

LN2 = math.log(2.0)
X_AXES = {"step": ("step", "steps"), "chars": ("chars_seen", "training characters seen"),
          "seconds": ("wall_seconds", "wall seconds")}


def run_name(path) -> str:
    """The run's name in the legend: ``runs/lstm.npz.metrics.csv`` (the log of checkpoint ``lstm.npz``),
    ``lstm.ckpt.npz.metrics.csv`` and an older run's ``lstm.metrics.csv`` -> ``lstm``; another file: its stem."""
    name = Path(path).name
    if not (name.endswith(".metrics.csv") and len(name) > len(".metrics.csv")):
        return Path(path).stem
    name = name[:-len(".metrics.csv")]
    for suffix in (".npz", ".ckpt"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
    return name


def figure(paths, x="step", title=None):
    """The matplotlib Figure of the runs of ``paths`` (metrics CSV files) against ``x`` (step, chars or seconds)."""
    if x not in X_AXES:
        raise ValueError(f"x must be one of {', '.join(X_AXES)}, got {x!r}")
    runs = [(run_name(p), read_metrics(p)) for p in paths]  # every file read before anything is drawn
    require("matplotlib", "plot", "fastrnn plot")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    column, label = X_AXES[x]
    fig = Figure(figsize=(8, 5), dpi=100)
    ax = fig.add_subplot()
    for i, (name, m) in enumerate(runs):
        colour = f"C{i % 10}"
        ax.plot(m[column], m["train_loss"] / LN2, color=colour, label=f"{name} train")
        val = ~np.isnan(m["val_loss"])
        if val.any():
            ax.plot(m[column][val], m["val_loss"][val] / LN2, color=colour, linestyle="--", marker="o",
                    markersize=4, label=f"{name} validation")
    ax.set_xlabel(label)
    ax.set_ylabel("bits per character")
    ax.set_title(title or ("training and validation loss" if len(runs) > 1 else runs[0][0]), parse_math=False)
    ax.grid(True, alpha=0.3)
    for text in ax.legend().get_texts():  # labels are file names: drawn as written
        text.set_parse_math(False)
    fig.tight_layout()
    return fig


def plot_runs(paths, out, x="step", title=None) -> Path:
    """Write :func:`figure` of ``paths`` to ``out`` as a PNG, whole or not at all (a temporary file beside it,
    then a rename: a full disk leaves what was at ``out`` as it was); an ``OSError`` is an
    :class:`~fastrnn._files.OutputWriteError`."""
    fig = figure(paths, x, title)
    return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
