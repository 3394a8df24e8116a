"""The metrics log ``NAME.metrics.csv`` that ``fastrnn train`` writes beside its checkpoint, and ``fastrnn plot``."""
from __future__ import annotations

import math
import os
import re
import signal

import numpy as np
import pytest

from fastrnn.checkpoint import load_checkpoint
from fastrnn.corpus import load_corpus
from fastrnn.metrics import COLUMNS, HEADER, MetricsError, metrics_path, read_metrics
from fastrnn.trainer import Trainer

from conftest import YORK_TEXT
from test_cli import _train_then_signal, fastrnn as run_cli
from test_export import _need, _without

SMALL = ["--hidden-size", 12, "--seq-length", 8, "--seed", 3, "--sample-every", 0, "--quiet"]


def rows(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER and lines.count(HEADER) == 1
    return [dict(zip(COLUMNS, line.split(","))) for line in lines[1:]]


def test_metrics_path():
    assert metrics_path("runs/x.npz") == metrics_path("runs/x.ckpt.npz") == metrics_path("runs/x")
    assert str(metrics_path("runs/x.npz")) == os.path.join("runs", "x.metrics.csv")


@pytest.mark.parametrize("model,batch", [([], 1), (["--model", "lstm", "--num-layers", 2, "--dtype", "float32"], 2)])
def test_train_writes_rows_at_log_and_eval_points_and_resume_appends(tmp_path, corpus_file, model, batch):
    model = [*model, "--batch-size", batch]
    r = run_cli("train", corpus_file, *SMALL, *model, "--steps", 30, "--log-every", 10, "--eval-every", 15,
                "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "m.metrics.csv"
    first = path.read_bytes()
    table = rows(path)
    assert [int(t["step"]) for t in table] == [1, 11, 15, 21, 30]  # logs at iter 0, 10, 20; evals at 15, 30
    assert [t["val_loss"] != "" for t in table] == [False, False, True, False, True]
    ckpt = load_checkpoint(tmp_path / "m.npz")
    assert all(int(t["chars_seen"]) == int(t["step"]) * 8 * batch for t in table)
    # the rate of each row's step: constant for the seed's rnn, the recipe's warmup and cosine for the lstm
    assert all(math.isclose(float(t["learning_rate"]), ckpt.config.learning_rate_at(int(t["step"])), rel_tol=1e-5)
               for t in table)
    assert len({t["learning_rate"] for t in table}) == (1 if batch == 1 else len(table))
    # train_loss: the mean loss per char of the steps since the previous row (22..30), not the smoothed loss
    trainer = Trainer(load_corpus(corpus_file), ckpt.config)
    trainer.train(21)
    trainer.recent_loss_per_char()
    trainer.train(9)
    assert math.isclose(float(table[-1]["train_loss"]), trainer.recent_loss_per_char(), rel_tol=1e-5)
    assert not math.isclose(float(table[-1]["train_loss"]), ckpt.state.smooth_loss / 8, rel_tol=1e-3)
    ev = run_cli("eval", "m.npz", cwd=tmp_path)
    printed = float(re.search(r"([0-9.]+) nats/char", ev.stdout).group(1))  # rounded to 4 places
    assert abs(float(table[-1]["val_loss"]) - printed) <= 0.5e-4 + 1e-9
    seconds = [float(t["wall_seconds"]) for t in table]
    assert seconds == sorted(seconds) and all(float(t["chars_per_second"]) >= 0 for t in table)

    r = run_cli("train", "--resume", "m.npz", "--steps", 45, "--log-every", 10, "--eval-every", 15, "--quiet",
                "--sample-every", 0, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert path.read_bytes().startswith(first)  # appended, never rewritten
    table = rows(path)
    assert [int(t["step"]) for t in table][5:] == [31, 41, 45]
    seconds = [float(t["wall_seconds"]) for t in table]
    assert seconds == sorted(seconds)  # the resumed run's clock continues
    m = read_metrics(path)
    assert m["step"].tolist() == [1, 11, 15, 21, 30, 31, 41, 45] and np.isnan(m["val_loss"]).sum() == 5


def test_an_interrupted_run_keeps_its_rows(tmp_path, corpus_file):
    status, err = _train_then_signal(tmp_path, corpus_file, signal.SIGINT, "int.npz")
    assert status == 130, err
    table = rows(tmp_path / "int.metrics.csv")
    assert len(table) >= 3 and [t["step"] for t in table[:3]] == ["1", "201", "401"]


def test_a_new_run_refuses_another_runs_metrics(tmp_path, corpus_file):
    path = tmp_path / "m.metrics.csv"
    path.write_text(HEADER + "\n1,8,0.1,4.1,,0.1,100\n", encoding="utf-8")
    before = path.read_bytes()
    r = run_cli("train", corpus_file, *SMALL, "--steps", 2, "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 2 and "'m.metrics.csv' already exists" in r.stderr
    assert path.read_bytes() == before and not (tmp_path / "m.npz").exists()
    r = run_cli("train", corpus_file, *SMALL, "--steps", 2, "--checkpoint", "m.npz", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [t["step"] for t in rows(path)] == ["1", "2"]
    (tmp_path / "other.metrics.csv").write_text("a,b\n1,2\n")
    r = run_cli("train", corpus_file, *SMALL, "--steps", 2, "--checkpoint", "other.npz", "--overwrite",
                cwd=tmp_path)
    assert r.returncode == 2 and "replaces only a fastrnn metrics log" in r.stderr
    assert (tmp_path / "other.metrics.csv").read_text() == "a,b\n1,2\n"


def test_read_metrics_keeps_the_history_of_the_last_run(tmp_path):
    """A resume from an older checkpoint appends steps that go back: the rows it replays are superseded."""
    path = tmp_path / "r.metrics.csv"
    lines = [HEADER] + [f"{s},{8 * s},{s / 10},{4 - s / 100},,0.1,80" for s in (1, 11, 21, 31)]
    lines += [f"{s},{8 * s},{s / 10 + 0.05},{3 - s / 100},{2.5 if s == 30 else ''},0.1,80" for s in (21, 30, 41)]
    path.write_text("\n".join(lines) + "\n")
    m = read_metrics(path)
    assert m["step"].tolist() == [1, 11, 21, 30, 41]
    assert m["train_loss"].tolist()[2:] == [3 - 0.21, 3 - 0.30, 3 - 0.41]
    assert np.isnan(m["val_loss"]).tolist() == [True, True, True, False, True]
    path.write_text("step,loss\n1,2\n")
    with pytest.raises(MetricsError, match="not a fastrnn metrics log"):
        read_metrics(path)
    path.write_text(HEADER + "\n1,x,0,0,,0,0\n")
    with pytest.raises(MetricsError, match="line 2"):
        read_metrics(path)


# --- fastrnn plot -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def matplotlib():
    """The plot extra: skip without it, fail without it under CI."""
    return _need("matplotlib")


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("plot")
    (folder / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    for name, cell in (("tanh", "rnn"), ("gated", "gru")):
        r = run_cli("train", "york.txt", *SMALL, "--model", cell, "--steps", 40, "--log-every", 5, "--eval-every", 10,
                    "--checkpoint", f"{name}.npz", cwd=folder)
        assert r.returncode == 0, r.stderr
    return folder


@pytest.mark.parametrize("x", ["step", "chars", "seconds"])
def test_figure_overlays_runs_named_after_their_files(matplotlib, two_runs, x):
    from fastrnn.plot import X_AXES, figure

    paths = [two_runs / "tanh.metrics.csv", two_runs / "gated.metrics.csv"]
    fig = figure(paths, x=x)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "tanh train", "tanh validation", "gated train", "gated validation"]
    assert ax.get_xlabel() == X_AXES[x][1] and ax.get_ylabel() == "bits per character"
    train, val = ax.get_lines()[:2]
    m = read_metrics(paths[0])
    assert np.allclose(train.get_xdata(), m[X_AXES[x][0]])
    assert np.allclose(train.get_ydata(), m["train_loss"] / np.log(2))
    assert len(val.get_xdata()) == 4  # validations at steps 10, 20, 30, 40


def test_cli_plot_writes_a_png(matplotlib, two_runs):
    import matplotlib.image

    r = run_cli("plot", "tanh.metrics.csv", "gated.metrics.csv", "-o", "runs.png", "--x", "chars", cwd=two_runs)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "wrote runs.png: 2 runs against chars\n"
    image = matplotlib.image.imread(two_runs / "runs.png")
    assert image.shape[:2] == (500, 800) and image.std() > 0.05


@pytest.mark.parametrize("args,message", [
    (["missing.metrics.csv", "-o", "x.png"], "'missing.metrics.csv' does not exist"),
    (["york.txt", "-o", "x.png"], "not a fastrnn metrics log"),
    (["tanh.metrics.csv", "-o", "x.jpg"], "writes PNG files"),
    (["tanh.metrics.csv", "-o", "nowhere/x.png"], "does not exist"),
    (["tanh.metrics.csv", "-o", "x.png", "--x", "hours"], "invalid choice"),
    (["tanh.metrics.csv"], "required: -o"),
])
def test_cli_plot_errors_exit_2(two_runs, args, message):
    r = run_cli("plot", *args, cwd=two_runs)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (two_runs / "x.png").exists()


def test_cli_plot_without_matplotlib_names_the_extra(two_runs, tmp_path):
    r = run_cli("plot", "tanh.metrics.csv", "-o", "x.png", cwd=two_runs, env=_without(tmp_path, "matplotlib"))
    assert r.returncode == 2, r.stderr
    assert "fastrnn plot needs the matplotlib package: pip install 'fastrnn[plot]'" in r.stderr
