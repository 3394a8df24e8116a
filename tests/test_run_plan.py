"""A run's plan and what `fastrnn train` tells its user: resume continues the plan, a time budget bounds the
whole run (its final validation included), cadences scale with the run's length, a closed standard output
never loses a run, the parser's hints. Run for real in subprocesses."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fastrnn.checkpoint import load_checkpoint
from fastrnn.metrics import read_metrics
from fastrnn.plan import MAX_EVERY, Plan, auto_cadences, round_every

from conftest import YORK_TEXT

TINY = ["--hidden-size", "16", "--seq-length", "10", "--seed", "1", "--sample-every", "0"]


def fastrnn(*args, cwd, timeout=180, **kwargs):
    return subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **kwargs)


@pytest.fixture
def text(tmp_path):
    path = tmp_path / "york.txt"
    path.write_text(YORK_TEXT * 20, encoding="utf-8")
    return path


def interrupt_when(args, cwd, ready):
    """Start `fastrnn train ARGS`, send Ctrl-C once ``ready(cwd)`` holds (polled), return (status, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready(cwd) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def saved_after(name, step):
    """A ``ready`` for :func:`interrupt_when`: checkpoint ``name`` exists and is past ``step``."""
    def ready(cwd):
        try:
            return load_checkpoint(cwd / name).state.n > step
        except Exception:  # not there yet, or being replaced
            return False
    return ready


# --- the plan, as pure functions ---------------------------------------------------------------------------

@pytest.mark.parametrize("steps, expected", [(0.5, 1), (1, 1), (7, 5), (10, 10), (19, 10), (20, 20), (49, 20),
                                             (50, 50), (999, 500), (1000, 1000), (2.5e6, 2_000_000)])
def test_round_every(steps, expected):
    assert round_every(steps) == expected


@pytest.mark.parametrize("total", [1, 30, 200, 3_000, 100_000, 10_000_000])
def test_auto_cadences_scale_with_the_run_and_keep_the_seed_defaults_as_bounds(total):
    every = auto_cadences(total)
    for name, most in MAX_EVERY.items():
        assert 1 <= every[name] <= most
    assert total / every["log_every"] >= min(total, 100) or every["log_every"] == MAX_EVERY["log_every"]
    assert total / every["eval_every"] >= min(total, 10) or every["eval_every"] == MAX_EVERY["eval_every"]
    if total == 100_000:  # min-char-rnn's run: the cadences fastrnn always had
        assert every == {"log_every": 1_000, "eval_every": 10_000, "sample_every": 10_000, "checkpoint_every": 10_000}


def test_auto_eval_cadence_stays_within_a_tenth_of_the_budget():
    # 1,000 steps in 60 s, a validation costing 3 s: at most 2 validations (6 s), not 10 (30 s).
    every = auto_cadences(1_000, seconds_per_eval=3.0, seconds=60.0)
    assert 1_000 // every["eval_every"] <= 2
    assert auto_cadences(1_000, seconds_per_eval=0.01, seconds=60.0)["eval_every"] == 100


def test_plan_updates_only_given_fields_and_describes_the_rest():
    plan = Plan(steps=200_000, sample_every=0, log_every=7)
    assert plan.updated(steps=None, log_every=9) == Plan(steps=200_000, sample_every=0, log_every=9)
    assert plan.describe_rest() == "trains on to step 200,000"
    budget = Plan(time_budget=60.0, elapsed=45.0, steps=10**6)
    assert "15 s left of its 60 s budget" in budget.describe_rest()
    assert Plan.from_dict(budget.to_dict()) == budget


# --- resume continues the run's plan -----------------------------------------------------------------------

def test_resume_continues_the_plan_it_was_started_with(tmp_path, text):
    code, out, err = interrupt_when(["train", text, *TINY, "--steps", 200_000, "--checkpoint-every", 50,
                                     "--eval-every", 0, "--log-every", 0, "--checkpoint", "run.npz"],
                                    tmp_path, saved_after("run.npz", 0))
    assert code == 130, err
    assert "continue with: fastrnn train --resume run.npz, which trains on to step 200,000" in err
    step = load_checkpoint(tmp_path / "run.npz").state.n
    assert step < 200_000
    # Resumed without flags: the same plan (steps, no samples, no log lines), not the defaults.
    code, out, err = interrupt_when(["train", "--resume", "run.npz"], tmp_path, saved_after("run.npz", step))
    assert code == 130, err
    ckpt = load_checkpoint(tmp_path / "run.npz")
    assert ckpt.plan["steps"] == 200_000 and ckpt.plan["sample_every"] == 0 and ckpt.plan["log_every"] == 0
    assert "----" not in out and "\niter " not in out
    assert "200,000 steps" in out
    # A flag given on resume replaces that field and is recorded; the rest of the plan stays.
    r = fastrnn("train", "--resume", "run.npz", "--steps", ckpt.state.n + 30, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ckpt2 = load_checkpoint(tmp_path / "run.npz")
    assert ckpt2.state.n == ckpt.state.n + 30
    assert ckpt2.plan["steps"] == ckpt.state.n + 30 and ckpt2.plan["checkpoint_every"] == 50


def test_resume_keeps_the_time_budget_of_the_whole_run(tmp_path, text):
    r = fastrnn("train", text, *TINY, "--time-budget", 3, "--steps", 10**9, "--checkpoint", "b.npz", "--quiet",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(tmp_path / "b.npz")
    assert ckpt.plan["time_budget"] == 3 and ckpt.plan["elapsed"] == 3  # stopped by the budget: all of it used
    r = fastrnn("train", "--resume", "b.npz", cwd=tmp_path)  # the budget is spent: nothing more, not 100,000 steps
    assert r.returncode == 0, r.stderr
    assert "time budget of 3 s is spent" in r.stdout
    assert load_checkpoint(tmp_path / "b.npz").state.n == ckpt.state.n


def test_checkpoint_with_a_damaged_plan_is_refused(tmp_path, text):
    r = fastrnn("train", text, *TINY, "--steps", 20, "--checkpoint", "p.npz", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "p.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["plan"] = np.str_('{"steps": -5}')
    np.savez(tmp_path / "bad.npz", **arrays)
    r = fastrnn("train", "--resume", "bad.npz", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("fastrnn train: error: ") and "bad run plan" in r.stderr


# --- time budget, cadences, the done line -----------------------------------------------------------------

def test_time_budget_holds_the_whole_run_and_the_done_line_gives_the_validation(tmp_path, text):
    budget = 6
    start = time.perf_counter()
    r = fastrnn("train", text, *TINY, "--time-budget", budget, "--steps", 10**9, "--checkpoint", "t.npz",
                cwd=tmp_path)
    wall = time.perf_counter() - start
    assert r.returncode == 0, r.stderr
    assert wall < budget + 4  # the interpreter's start and imports come before the budget's clock
    ckpt = load_checkpoint(tmp_path / "t.npz")
    assert ckpt.plan["elapsed"] == budget
    done = r.stdout.strip().splitlines()[-1]
    assert done.startswith(f"done: {ckpt.state.n:,} steps; validation ") and "bits/char" in done, done
    last_val = [line for line in r.stdout.splitlines() if line.startswith(f"step {ckpt.state.n:,}: validation")]
    assert last_val and last_val[-1].split("nats/char, ")[1].split(" bits")[0] in done
    # The cadences were chosen from the measured speed: many rows, several validations, not one of each.
    m = read_metrics(tmp_path / "t.npz.metrics.csv")
    assert len(m["step"]) >= 50
    assert np.count_nonzero(~np.isnan(m["val_loss"])) >= 2


@pytest.mark.parametrize("steps", [40, 3_000])
def test_cadences_not_given_scale_with_the_steps(tmp_path, text, steps):
    r = fastrnn("train", text, *TINY, "--steps", steps, "--checkpoint", "s.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = read_metrics(tmp_path / "s.npz.metrics.csv")
    assert len(m["step"]) >= min(steps, 100) // 2
    assert np.count_nonzero(~np.isnan(m["val_loss"])) >= 5


def test_metrics_train_loss_is_the_recent_mean_not_the_lagging_smoothed_loss(tmp_path, text):
    r = fastrnn("train", text, *TINY, "--steps", 400, "--log-every", 100, "--checkpoint", "s.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    m = read_metrics(tmp_path / "s.npz.metrics.csv")
    smoothed = [float(line.split("| ")[1].split(" nats")[0]) for line in r.stdout.splitlines()
                if line.startswith("iter 300,")]
    row = int(np.flatnonzero(m["step"] == 301)[0])
    assert m["train_loss"][row] < smoothed[0] - 0.2  # the smoothed one still carries the first steps' ~4 nats


def test_cosine_with_a_budget_and_few_steps_still_decays(tmp_path, text):
    r = fastrnn("train", text, *TINY, "--lr-schedule", "cosine", "--time-budget", 60, "--steps", 200,
                "--checkpoint", "c.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(tmp_path / "c.npz")
    assert ckpt.config.decay_steps == 200
    m = read_metrics(tmp_path / "c.npz.metrics.csv")
    assert m["learning_rate"][-1] == pytest.approx(0.01)


# --- standard output that goes away never loses the run -----------------------------------------------------

def test_closed_stdout_stops_saves_and_exits_141(tmp_path, text):
    args = ["train", text, *TINY, "--steps", 100_000, "--log-every", 1, "--checkpoint-every", 20,
            "--checkpoint", "d.npz"]
    proc = subprocess.Popen([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(3):  # `| head -n 3`
        proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 141, err
    assert err.startswith("fastrnn train: standard output was closed"), err
    assert "saved checkpoint d.npz" in err and "Traceback" not in err
    ckpt = load_checkpoint(tmp_path / "d.npz")
    assert 0 < ckpt.state.n < 100_000
    assert f"at step {ckpt.state.n:,}; saved checkpoint d.npz" in err


def test_stdout_on_a_full_disk_stops_saves_and_exits_2(tmp_path, text):
    with open("/dev/full", "w") as full:
        args = ["train", text, *TINY, "--steps", 100_000, "--checkpoint", "f.npz"]
        r = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=tmp_path, stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("fastrnn train: cannot write to standard output (No space left on device)")
    assert "saved checkpoint f.npz" in r.stderr and "Traceback" not in r.stderr
    assert load_checkpoint(tmp_path / "f.npz").state.n < 100_000


# --- the parser ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, meant", [("--lr", "--learning-rate"), ("--rnn_size", "--hidden-size"),
                                         ("-rnn_size", "--hidden-size"), ("--seq_length", "--seq-length"),
                                         ("--max_iters", "--steps"), ("--hiden-size", "--hidden-size")])
def test_other_trainers_flags_get_a_suggestion_not_an_abbreviation(tmp_path, flag, meant):
    r = fastrnn("train", flag, "0.01", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1
    assert f"{flag}: did you mean {meant}?" in r.stderr


def test_no_abbreviations(tmp_path):
    r = fastrnn("train", "--hidden", "8", cwd=tmp_path)  # once an abbreviation of --hidden-size
    assert r.returncode == 2 and "did you mean --hidden-size" in r.stderr


def test_plain_fastrnn_prints_the_help(tmp_path):
    r = fastrnn(cwd=tmp_path)
    assert r.returncode == 2
    assert "usage: fastrnn" in r.stdout and "train" in r.stdout and r.stderr == ""


def test_train_help_is_grouped_with_examples(tmp_path):
    r = fastrnn("train", "--help", cwd=tmp_path)
    assert r.returncode == 0
    for heading in ("data:", "model:", "optimization:", "checkpoints and output:", "examples:"):
        assert f"\n{heading}" in r.stdout, heading
    assert "--model lstm --time-budget 600" in r.stdout
