"""``--keep-best`` and ``--patience``: the best file is the metrics log's best row, early stops, resumes exact.

The corpus makes validation get worse as training goes on: the training text repeats "abc", the held-out
end repeats "acb", so a model that learns the first predicts the second worse and worse.
"""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn.checkpoint import load_checkpoint
from fastrnn.metrics import HEADER, HEADER_7, metrics_path, read_metrics

from test_cli import fastrnn, npz_arrays

TEXT = "abc" * 600 + "acb" * 60  # --val-fraction 0.1 holds out the "acb" end
RUN = ["--hidden-size", "16", "--seq-length", "8", "--seed", "5", "--eval-every", "10", "--sample-every", "0",
       "--log-every", "0", "--learning-rate", "0.05"]


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


def train(folder, *flags):
    return fastrnn("train", "t.txt", *RUN, "--val-fraction", "0.1", *flags, cwd=folder)


def best_rows(log):
    """Steps of the validations below every earlier one, and the first step of the minimum."""
    m = read_metrics(log)
    steps, val = m["step"][~np.isnan(m["val_loss"])], m["val_loss"][~np.isnan(m["val_loss"])]
    new = [s for i, s in enumerate(steps) if i == 0 or val[i] < val[:i].min()]
    return m, new, int(steps[np.argmin(val)]), val.min()


def test_patience_stops_early_and_the_best_file_is_the_logs_best_row(folder):
    r = train(folder, "--steps", "400", "--keep-best", "--patience", "3", "--checkpoint", "m.npz")
    assert r.returncode == 0, r.stderr
    assert "stopped early at step" in r.stdout and "--patience 3" in r.stdout
    ckpt = load_checkpoint(folder / "m.npz")
    m, new, best_step, best_loss = best_rows(metrics_path(folder / "m.npz"))
    assert ckpt.state.n < 400 and ckpt.state.n == best_step + 3 * 10  # three validations without a new best
    assert m["step"][m["new_best"] == 1].tolist() == new  # the log marks exactly the new bests
    best = load_checkpoint(folder / "m.best.npz")
    assert best.best_of == "m.npz" and best.state.n == best_step
    assert best.plan["best_loss"] == best_loss and best.plan["best_step"] == best_step  # the log's minimum, exactly
    ev = fastrnn("eval", "m.best.npz", cwd=folder)  # the best file scores the held-out split at its loss
    assert ev.returncode == 0 and f"{best_loss:.4f} nats/char" in ev.stdout, ev.stdout + ev.stderr
    info = fastrnn("info", "m.best.npz", cwd=folder)
    assert info.returncode == 0 and "best file (the best model of the run saved in m.npz)" in info.stdout
    r = fastrnn("train", "--resume", "m.best.npz", cwd=folder)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "resume that run's checkpoint" in r.stderr
    r = fastrnn("train", "--resume", "m.npz", "--steps", "400", cwd=folder)  # out of patience: nothing to do
    assert r.returncode == 0 and "nothing to do (pass a larger --patience" in r.stdout, r.stdout + r.stderr
    best_bytes = (folder / "m.best.npz").read_bytes()
    r = fastrnn("train", "--resume", "m.npz", "--steps", "400", "--patience", "0", "--no-keep-best", "--quiet",
                cwd=folder)  # both turned off: it trains on to the end and leaves the best file alone
    assert r.returncode == 0, r.stderr
    resumed = load_checkpoint(folder / "m.npz")
    assert resumed.state.n == 400 and resumed.plan["patience"] is None and resumed.plan["keep_best"] is False
    assert (folder / "m.best.npz").read_bytes() == best_bytes


def test_keep_best_and_patience_survive_a_resume_exactly(folder):
    whole = train(folder, "--steps", "400", "--keep-best", "--patience", "3", "--checkpoint", "a.npz")
    assert whole.returncode == 0, whole.stderr
    stop = load_checkpoint(folder / "a.npz").state.n
    first = train(folder, "--steps", str(stop - 20), "--keep-best", "--patience", "3", "--checkpoint", "b.npz")
    assert first.returncode == 0, first.stderr
    rest = fastrnn("train", "--resume", "b.npz", "--steps", "400", cwd=folder)
    assert rest.returncode == 0 and "stopped early at step" in rest.stdout, rest.stderr
    for name in ("", ".best"):
        a, b = npz_arrays(folder / f"a{name}.npz"), npz_arrays(folder / f"b{name}.npz")
        assert set(a) == set(b)
        for key in a:
            if key not in ("plan", "best_of"):  # the plan's elapsed wall time, the run's own name
                assert np.array_equal(a[key], b[key]), key
    ma, mb = read_metrics(metrics_path(folder / "a.npz")), read_metrics(metrics_path(folder / "b.npz"))
    assert ma["new_best"].tolist() == mb["new_best"].tolist() and ma["step"].tolist() == mb["step"].tolist()


@pytest.mark.parametrize("flags, message", [
    (["--patience", "-1"], "--patience must be 0 or more"),
    (["--keep-best", "--val-fraction", "0"], "--keep-best needs validations"),
    (["--keep-best", "--patience", "2", "--val-fraction", "0"], "--keep-best and --patience need validations"),
])
def test_bad_requests_exit_2_with_one_line(folder, flags, message):
    r = fastrnn("train", "t.txt", *RUN, "--steps", "20", *flags, cwd=folder)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (folder / "t.ckpt.npz").exists()


def test_a_new_run_does_not_replace_another_runs_best_file(folder):
    (folder / "m.best.npz").write_bytes(b"someone's file")
    r = train(folder, "--steps", "20", "--keep-best", "--checkpoint", "m.npz")
    assert r.returncode == 2 and "'m.best.npz' (where --keep-best saves) already exists" in r.stderr
    r = train(folder, "--steps", "20", "--keep-best", "--checkpoint", "m.npz", "--overwrite")
    assert r.returncode == 2 and "which is not an .npz file" in r.stderr
    assert (folder / "m.best.npz").read_bytes() == b"someone's file"


def test_an_old_log_keeps_its_seven_columns_on_resume(folder):
    r = train(folder, "--steps", "20", "--checkpoint", "m.npz")
    assert r.returncode == 0, r.stderr
    log = metrics_path(folder / "m.npz")
    lines = log.read_text().splitlines()
    assert lines[0] == HEADER
    log.write_text("\n".join([HEADER_7] + [line.rsplit(",", 1)[0] for line in lines[1:]]) + "\n")  # as before
    r = fastrnn("train", "--resume", "m.npz", "--steps", "40", cwd=folder)
    assert r.returncode == 0, r.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == HEADER_7 and all(line.count(",") == 6 for line in lines)
    m = read_metrics(log)
    assert m["step"].tolist()[-1] == 40 and not m["new_best"].any()
