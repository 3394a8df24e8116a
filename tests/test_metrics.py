"""The metrics log ``CHECKPOINT.metrics.csv`` that ``fastrnn train`` writes beside its checkpoint, and ``fastrnn plot``."""
from __future__ import annotations

import math
import os
import re
import signal

import numpy as np
import pytest

from fastrnn.checkpoint import load_checkpoint
from fastrnn.corpus import load_corpus
from fastrnn.metrics import COLUMNS, HEADER, HEADER_7, MetricsError, metrics_path, read_metrics
from fastrnn.trainer import Trainer

from conftest import YORK_TEXT
from test_cli import _train_then_signal, fastrnn as run_cli
from test_export import _need, _without

SMALL = ["--hidden-size", 12, "--seq-length", 8, "--seed", 3, "--sample-every", 0, "--quiet"]


def rows(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == HEADER and lines.count(HEADER) == 1
    return [dict(zip(COLUMNS, line.split(","))) for line in lines[1:]]


def test_metrics_path_is_the_checkpoints_whole_name_so_no_two_checkpoints_share_one():
    names = ["x.npz", "x.ckpt.npz", "x.ckpt", "x"]
    paths = [metrics_path(os.path.join("runs", name)) for name in names]
    assert [str(p) for p in paths] == [os.path.join("runs", name + ".metrics.csv") for name in names]


@pytest.mark.parametrize("model,batch", [([], 1), (["--model", "lstm", "--num-layers", 2, "--dtype", "float32"], 2)])
def test_train_writes_rows_at_log_and_eval_points_and_resume_appends(tmp_path, corpus_file, model, batch):
    model = [*model, "--batch-size", batch]
    r = run_cli("train", corpus_file, *SMALL, *model, "--steps", 30, "--log-every", 10, "--eval-every", 15,
                "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    path = tmp_path / "m.npz.metrics.csv"
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
    table = rows(tmp_path / "int.npz.metrics.csv")
    assert len(table) >= 3 and [t["step"] for t in table[:3]] == ["1", "201", "401"]


def test_a_new_run_refuses_another_runs_metrics(tmp_path, corpus_file):
    path = tmp_path / "m.npz.metrics.csv"
    path.write_text(HEADER_7 + "\n1,8,0.1,4.1,,0.1,100\n", encoding="utf-8")
    before = path.read_bytes()
    r = run_cli("train", corpus_file, *SMALL, "--steps", 2, "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 2 and "'m.npz.metrics.csv' already exists" in r.stderr
    assert path.read_bytes() == before and not (tmp_path / "m.npz").exists()
    r = run_cli("train", corpus_file, *SMALL, "--steps", 2, "--checkpoint", "m.npz", "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert [t["step"] for t in rows(path)] == ["1", "2"]
    (tmp_path / "other.npz.metrics.csv").write_text("a,b\n1,2\n")
    r = run_cli("train", corpus_file, *SMALL, "--steps", 2, "--checkpoint", "other.npz", "--overwrite",
                cwd=tmp_path)
    assert r.returncode == 2 and "replaces only a fastrnn metrics log" in r.stderr
    assert (tmp_path / "other.npz.metrics.csv").read_text() == "a,b\n1,2\n"


def test_read_metrics_keeps_the_history_of_the_last_run(tmp_path):
    """A resume from an older checkpoint appends steps that go back: the rows it replays are superseded."""
    path = tmp_path / "r.metrics.csv"
    lines = [HEADER_7] + [f"{s},{8 * s},{s / 10},{4 - s / 100},,0.1,80" for s in (1, 11, 21, 31)]
    lines += [f"{s},{8 * s},{s / 10 + 0.05},{3 - s / 100},{2.5 if s == 30 else ''},0.1,80" for s in (21, 30, 41)]
    path.write_text("\n".join(lines) + "\n")
    m = read_metrics(path)
    assert m["step"].tolist() == [1, 11, 21, 30, 41]
    assert m["train_loss"].tolist()[2:] == [3 - 0.21, 3 - 0.30, 3 - 0.41]
    assert np.isnan(m["val_loss"]).tolist() == [True, True, True, False, True]
    path.write_text("step,loss\n1,2\n")
    with pytest.raises(MetricsError, match="not a fastrnn metrics log"):
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

    paths = [two_runs / "tanh.npz.metrics.csv", two_runs / "gated.npz.metrics.csv"]
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

    r = run_cli("plot", "tanh.npz.metrics.csv", "gated.npz.metrics.csv", "-o", "runs.png", "--x", "chars", cwd=two_runs)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "wrote runs.png: 2 runs against chars\n"
    image = matplotlib.image.imread(two_runs / "runs.png")
    assert image.shape[:2] == (500, 800) and image.std() > 0.05


@pytest.mark.parametrize("args,message", [
    (["missing.metrics.csv", "-o", "x.png"], "'missing.metrics.csv' does not exist"),
    (["york.txt", "-o", "x.png"], "not a fastrnn metrics log"),
    (["tanh.npz.metrics.csv", "-o", "x.jpg"], "writes PNG files"),
    (["tanh.npz.metrics.csv", "-o", "nowhere/x.png"], "does not exist"),
    (["tanh.npz.metrics.csv", "-o", "x.png", "--x", "hours"], "invalid choice"),
    (["tanh.npz.metrics.csv"], "required: -o"),
])
def test_cli_plot_errors_exit_2(two_runs, args, message):
    r = run_cli("plot", *args, cwd=two_runs)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (two_runs / "x.png").exists()


def test_cli_plot_without_matplotlib_names_the_extra(two_runs, tmp_path):
    r = run_cli("plot", "tanh.npz.metrics.csv", "-o", "x.png", cwd=two_runs, env=_without(tmp_path, "matplotlib"))
    assert r.returncode == 2, r.stderr
    assert "fastrnn plot needs the matplotlib package: pip install 'fastrnn[plot]'" in r.stderr


# --- torn and garbled rows (a crash mid-row, another program), and who may write a log --------------

#: Damaged logs: (text after the header, the steps read back, the lines named as skipped).
DAMAGED = {
    "torn last row": ("1,8,0.1,4.1,,0.1,80\n11,88,0.2,4.0,,0.1,8", [1], [3]),
    "glued rows": ("1,8,0.1,4.1,,0.1,80\n11,88,0.2,4.0,,0.1,75651411,88,0.2,4.0,,0.1,80\n21,168,0.3,3.9,,0.1,80\n",
                   [1, 21], [3]),
    "a field missing": ("1,8,0.1,4.1,,0.1\n11,88,0.2,4.0,,0.1,80\n", [11], [2]),
    "NUL bytes": ("1,8,0.1,4.1,,0.1,80\n\0\0\0\0,1\n11,88,0.2,4.0,,0.1,80\n\0\0\n", [1, 11], [3, 5]),
    "not a number": ("1,x,0,0,,0,0\n11,88,0.2,4.0,,0.1,80\n", [11], [2]),
}


@pytest.mark.parametrize("damage", DAMAGED)
def test_read_metrics_skips_malformed_rows_with_one_warning(tmp_path, damage):
    body, steps, skipped = DAMAGED[damage]
    path = tmp_path / "d.metrics.csv"
    path.write_bytes((HEADER_7 + "\n" + body).encode())
    notes = []
    m = read_metrics(path, warn=notes.append)
    assert m["step"].tolist() == steps
    assert len(notes) == 1 and "\n" not in notes[0], notes
    assert f"skipped {len(skipped)} malformed row" in notes[0] and notes[0].count("line") == 1
    assert all(str(n) in notes[0] for n in skipped)
    path.write_bytes((HEADER_7 + "\n1,8,0.1,4.1,,0.1,80\n").encode())
    read_metrics(path, warn=notes.append)
    assert len(notes) == 1  # a whole log: no note


def test_cli_plot_of_a_damaged_log_draws_the_rest_and_warns_in_one_line(matplotlib, tmp_path):
    body, _, _ = DAMAGED["glued rows"]
    (tmp_path / "d.metrics.csv").write_bytes((HEADER_7 + "\n" + body).encode())
    r = run_cli("plot", "d.metrics.csv", "-o", "d.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "skipped 1 malformed row (line 3)" in r.stderr, r.stderr
    assert (tmp_path / "d.png").stat().st_size > 0


def _train_small(tmp_path, corpus_file, *args):
    r = run_cli("train", corpus_file, *SMALL, "--log-every", 5, "--eval-every", 0, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("keep", [-1, -3, -10, 2])  # bytes of the last row left by the crash (<0: all but |keep|)
def test_resume_cuts_a_torn_last_row_and_appends_on_a_fresh_line(tmp_path, corpus_file, keep):
    _train_small(tmp_path, corpus_file, "--steps", 30, "--checkpoint", "t.npz")
    path = metrics_path(tmp_path / "t.npz")
    data = path.read_bytes()
    last = data.rindex(b"\n", 0, len(data) - 1) + 1  # where the last row begins
    torn = data[:len(data) - 1 + keep] if keep < 0 else data[:last + keep]
    path.write_bytes(torn)  # the crash: the last row cut (its line end first)
    r = run_cli("train", "--resume", "t.npz", "--steps", 40, "--log-every", 5, "--eval-every", 0, "--quiet",
                "--sample-every", 0, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    after = path.read_bytes()
    assert after.startswith(data[:last])  # the whole rows kept as they were
    table = rows(path)
    assert all(len(line.split(b",")) == len(COLUMNS) for line in after.splitlines()[1:]), after
    assert [int(t["step"]) for t in table] == [1, 6, 11, 16, 21, 26, 31, 36, 40]  # 30 (torn) cut; 31 on
    notes = []
    assert read_metrics(path, warn=notes.append)["step"].tolist()[-3:] == [31, 36, 40] and not notes


def test_distinct_checkpoints_keep_distinct_metrics_logs(tmp_path, corpus_file):
    """``a.npz``, ``a.ckpt.npz``, ``a.ckpt`` and ``a`` once all wrote ``a.metrics.csv``."""
    names = ["a.npz", "a.ckpt.npz", "a.ckpt", "a"]
    for steps, name in enumerate(names, start=2):
        _train_small(tmp_path, corpus_file, "--steps", steps, "--checkpoint", name)
    for steps, name in enumerate(names, start=2):
        assert [t["step"] for t in rows(metrics_path(tmp_path / name))] == ["1", str(steps)]


def test_a_resume_of_an_older_run_appends_to_its_log_under_the_old_name(tmp_path, corpus_file):
    _train_small(tmp_path, corpus_file, "--steps", 10, "--checkpoint", "old.npz")
    legacy = tmp_path / "old.metrics.csv"  # the name older versions gave it
    os.replace(metrics_path(tmp_path / "old.npz"), legacy)
    before = legacy.read_bytes()
    r = run_cli("train", "--resume", "old.npz", "--steps", 20, "--log-every", 5, "--quiet", "--sample-every", 0,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert legacy.read_bytes().startswith(before) and [t["step"] for t in rows(legacy)][-2:] == ["16", "20"]
    assert not (tmp_path / "old.npz.metrics.csv").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_whose_metrics_log_another_run_holds_exits_2_before_writing(tmp_path, corpus_file, resume):
    from fastrnn.lock import CheckpointLock

    if resume:  # an older run's log, shared by a.npz and a.ckpt.npz: both resumes would append to it
        _train_small(tmp_path, corpus_file, "--steps", 5, "--checkpoint", "a.npz")
        os.replace(metrics_path(tmp_path / "a.npz"), tmp_path / "a.metrics.csv")
        (tmp_path / "a.ckpt.npz").write_bytes((tmp_path / "a.npz").read_bytes())
        log, args = tmp_path / "a.metrics.csv", ["--resume", "a.ckpt.npz"]
    else:
        log, args = metrics_path(tmp_path / "a.ckpt.npz"), [corpus_file, *SMALL, "--checkpoint", "a.ckpt.npz"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with CheckpointLock(log):  # as another fastrnn train writing that log holds it
        r = run_cli("train", *args, "--steps", 10, "--quiet", "--sample-every", 0, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"fastrnn train: error: metrics log {log.name!r} is in use by process {os.getpid()} "
                        f"(another fastrnn train writing it); wait for it to finish or choose another --checkpoint\n")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
