"""Training every cell, depth and optimizer: the trainer's step equals the twin, resume is exact, the CLI.

The engine's kernels are checked against the twins in test_cells.py; here the
trainer's loop over them: one step equals the twin's step, resuming from a
checkpoint continues bit for bit, and ``fastrnn train`` takes the flags and
refuses bad ones with one line and exit 2.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

import fastrnn
from fastrnn import optim, workspaces
from fastrnn import reference as ref
from fastrnn.checkpoint import load_checkpoint, save_checkpoint
from fastrnn.corpus import Corpus
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from conftest import YORK_TEXT, allclose_report
from test_cli import fastrnn as run_cli, npz_arrays

MODELS = [("rnn", 1), ("rnn", 2), ("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2)]
UPDATES = [dict(optimizer="adagrad"), dict(optimizer="rmsprop"),
           dict(optimizer="adam", clip=None, clip_norm=1.0),
           # rates lr / 2, lr, lr / 10 at steps 1, 2, 3: warmup, peak, the cosine's floor
           dict(optimizer="adam", clip=None, clip_norm=1.0, lr_schedule="cosine", warmup_steps=2, decay_steps=3)]
UPDATE_IDS = ["adagrad", "rmsprop", "adam", "adam-cosine"]


def _config(cell, layers, batch_size=3, threads=1, **update):
    return TrainConfig(hidden_size=6, seq_length=5, seed=4, val_fraction=0.1, batch_size=batch_size, cell=cell,
                       num_layers=layers, threads=threads, **update)


def _state(trainer):
    return (trainer.params.flat, *(s.flat for s in trainer.opt_state), *trainer.hidden)


#: (threads, split): 2 "streams": the 3 streams run as chunks of 1 and 2 on two threads; 2 "units": every
#: recurrence's 6 units run as two parts of 3 (the split taken from UNIT_SPLIT_MIN_HIDDEN units on).
THREADS_SPLITS = [(1, "streams"), (2, "streams"), (2, "units")]
THREADS_IDS = ["1thread", "2threads-streams", "2threads-units"]


@pytest.fixture
def split_for(monkeypatch):
    """Make the trainer's default split (a hidden size of 6) the one a case asks for."""
    def take(split):
        monkeypatch.setattr(workspaces, "UNIT_SPLIT_MIN_HIDDEN", 1 if split == "units" else 1 << 30)
    return take


@pytest.mark.parametrize("threads, split", THREADS_SPLITS, ids=THREADS_IDS)
@pytest.mark.parametrize("update", UPDATES, ids=UPDATE_IDS)
@pytest.mark.parametrize("cell, layers", MODELS)
def test_one_trainer_step_equals_the_twin(cell, layers, update, threads, split, split_for):
    """Steps 1, 2 and 3 of the trainer: the twin's loss and gradients on the same windows, then the twin optimizer
    at the step's scheduled rate."""
    corpus = Corpus.from_text(YORK_TEXT)
    split_for(split)
    trainer = Trainer(corpus, _config(cell, layers, threads=threads, **update))
    assert trainer.workspace.split == split
    assert trainer.workspace.n_chunks == (threads if split == "streams" else 1)
    assert trainer.workspace.chunks[0].parts == (threads if split == "units" else 1)
    params, opt_state = trainer.params.copy(), [s.copy() for s in trainer.opt_state]
    state = tuple(h.copy() for h in trainer.hidden)
    opt = trainer.optimizer
    for step in (1, 2, 3):
        lr = trainer.config.learning_rate_at(step)
        ids = np.asarray(trainer.train_ids)
        starts = trainer.pointers
        windows = ids[starts[:, None] + np.arange(trainer.config.seq_length + 1)]
        loss, grads, state = ref.stack_loss_and_grads(params, windows[:, :-1], windows[:, 1:], state, clip=None)
        g = grads.flat
        scale = optim.norm_scale(g, optim.clip_value(trainer.config.clip, g.dtype), trainer.config.clip_norm)
        c = trainer.config.clip
        if opt.name == "adagrad":
            ref.flat_adagrad_update(params.flat, g, opt_state[0].flat, lr, opt.eps, c, scale)
        elif opt.name == "rmsprop":
            ref.flat_rmsprop_update(params.flat, g, opt_state[0].flat, lr, opt.alpha, opt.eps, c, scale)
        else:
            ref.flat_adam_update(params.flat, g, opt_state[0].flat, opt_state[1].flat, step, lr, opt.beta1,
                                 opt.beta2, opt.eps, c, scale)
        before = trainer.smooth_loss
        trainer.train(1)
        assert abs((trainer.smooth_loss - before * 0.999) / 0.001 - loss) < 1e-9 * loss
        ok, worst = allclose_report(trainer.params.flat, params.flat, rtol=1e-9, atol_scale=1e-12)
        assert ok, f"parameters after step {step}: worst/tol {worst:.3g}"
        for a, b in zip(trainer.hidden, state):
            assert allclose_report(a, b)[0]


@pytest.mark.parametrize("threads, split", THREADS_SPLITS, ids=THREADS_IDS)
@pytest.mark.parametrize("update", UPDATES, ids=UPDATE_IDS)
@pytest.mark.parametrize("cell, layers", MODELS + [("rnn", 1)])
def test_resume_is_bit_exact(tmp_path, cell, layers, update, threads, split, split_for):
    corpus = Corpus.from_text(YORK_TEXT)
    split_for(split)
    config = _config(cell, layers, threads=threads, **update)
    straight = Trainer(corpus, config)
    straight.train(12)
    first = Trainer(corpus, config)
    first.train(5)
    path = save_checkpoint(tmp_path / "c.npz", first)
    resumed = load_checkpoint(path).trainer(corpus)
    resumed.train(7)
    assert resumed.n == straight.n == 12 and resumed.p == straight.p
    for a, b in zip(_state(straight), _state(resumed)):
        np.testing.assert_array_equal(a, b)
    assert resumed.smooth_loss == straight.smooth_loss
    assert resumed.sample(20) == straight.sample(20)  # the sampling generator is restored too


def test_the_seed_case_keeps_its_checkpoint_names(tmp_path):
    trainer = Trainer(Corpus.from_text(YORK_TEXT), TrainConfig(hidden_size=6, seq_length=5, seed=4, val_fraction=0.1))
    trainer.train(3)
    with np.load(save_checkpoint(tmp_path / "c.npz", trainer)) as npz:
        assert {"Wxh", "Whh", "Why", "bh", "by", "mWxh", "mWhh", "mWhy", "mbh", "mby", "hprev"} <= set(npz.files)
        assert npz["hprev"].shape == (6,)


@pytest.mark.parametrize("optimizer", ["adagrad", "rmsprop", "adam"])
def test_memory_is_adagrads_buffer_only(optimizer):
    """``memory`` is the seed's name for Adagrad's one buffer: another optimizer's are opt_state, by name."""
    trainer = Trainer(Corpus.from_text(YORK_TEXT), TrainConfig(hidden_size=6, seq_length=5, seed=4,
                                                               optimizer=optimizer))
    if optimizer == "adagrad":
        assert trainer.memory is trainer.opt_state[0]
    else:
        with pytest.raises(AttributeError, match=f"{optimizer} keeps .* in opt_state"):
            trainer.memory


def test_validation_and_sampling_of_a_stacked_model():
    trainer = Trainer(Corpus.from_text(YORK_TEXT), _config("gru", 2))
    trainer.train(4)
    score = trainer.validation_loss()
    inputs, targets = np.asarray(trainer.val_inputs), np.asarray(trainer.val_targets)
    nats, _ = ref.stack_sequence_loss(trainer.params, inputs[None], targets[None])
    assert score.count == targets.size and abs(score.nats - nats) < 1e-10 * nats
    model = trainer.model
    text = model.sample(30, prime="York", seed=5)
    assert len(text) == 30 and text == model.sample(30, prime="York", seed=5)
    per_char = model.score("York and York", per_char=True)
    assert abs(-per_char.log_probs.sum() - per_char.nats) < 1e-9


SMALL = ["--hidden-size", "8", "--seq-length", "6", "--seed", "2", "--batch-size", "2", "--threads", "1",
         "--eval-every", "0", "--sample-every", "0", "--log-every", "5"]


def test_cli_trains_resumes_samples_and_evaluates_a_stacked_lstm(tmp_path, corpus_file):
    # The recipe's cosine schedule (warmup 20 steps shortened to 4) with its decay fixed at step 20 by both runs.
    model = ["--model", "lstm", "--num-layers", "2", "--optimizer", "adam", "--clip-norm", "2", "--warmup-steps", 4,
             "--decay-steps", 20]
    r = run_cli("train", corpus_file, *SMALL, *model, "--steps", 20, "--checkpoint", "full.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("2-layer lstm, hidden-size 8, seq-length 6, learning-rate 0.03, optimizer adam, clip-norm 2.0, "
            "warmup 4 steps, cosine decay to 0.1x by step 20, float32") in r.stdout
    r = run_cli("train", corpus_file, *SMALL, *model, "--steps", 10, "--checkpoint", "half.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = run_cli("train", "--resume", "half.npz", "--steps", 20, "--log-every", 5, "--sample-every", 0,
                "--eval-every", 0, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    full, half = npz_arrays(tmp_path / "full.npz"), npz_arrays(tmp_path / "half.npz")
    assert set(full) == set(half) and "exp_avg_sq.Whh_l1" in full and "cprev" in full
    for name in full:
        if name not in ("corpus_path", "plan"):  # the plan records wall time and each run's own cadences
            np.testing.assert_array_equal(full[name], half[name], err_msg=name)
    r = run_cli("sample", "full.npz", "--seed", 0, "--length", 25, "--prime", "York", cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) == len("York") + 25 + 1, r.stderr
    r = run_cli("eval", "full.npz", cwd=tmp_path)
    assert r.returncode == 0 and "held-out split" in r.stdout, r.stderr


@pytest.mark.parametrize("flags, message", [
    (["--model", "transformer"], "invalid choice: 'transformer'"),
    (["--optimizer", "sgd"], "invalid choice: 'sgd'"),
    (["--num-layers", "0"], "--num-layers must be a positive integer"),
    (["--optimizer", "rmsprop", "--alpha", "1"], r"--alpha must be in \[0, 1\)"),
    (["--optimizer", "adam", "--beta2", "-0.1"], r"--beta2 must be in \[0, 1\)"),
    (["--eps", "0"], "--eps must be a positive number"),
    (["--clip-norm", "-1"], "--clip-norm must be a positive number"),
    (["--clip", "3", "--clip-norm", "1"], "exclude each other"),
])
def test_bad_model_and_optimizer_flags(tmp_path, corpus_file, flags, message):
    r = run_cli("train", corpus_file, *SMALL, *flags, "--steps", 2, "--checkpoint", "x.npz", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert re.search(message, r.stderr), r.stderr
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.parametrize("flags, message", [
    (["--model", "gru"], r"--model gru \(checkpoint: lstm\)"),
    (["--num-layers", "1"], r"--num-layers 1 \(checkpoint: 2\)"),
    (["--optimizer", "adagrad"], r"--optimizer adagrad \(checkpoint: rmsprop\)"),
    (["--clip-norm", "1"], r"--clip off \(checkpoint: 5.0\)"),
    (["--decay-steps", "9"], r"--decay-steps 9 \(checkpoint: 4\)"),  # the recipe's cosine, over the run's 4 steps
    (["--lr-schedule", "constant"], r"--lr-schedule constant \(checkpoint: cosine\)"),
])
def test_resume_refuses_a_changed_model(tmp_path, corpus_file, flags, message):
    r = run_cli("train", corpus_file, *SMALL, "--model", "lstm", "--num-layers", "2", "--optimizer", "rmsprop",
                "--clip", 5, "--steps", 4, "--checkpoint", "c.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = (tmp_path / "c.npz").read_bytes()
    r = run_cli("train", "--resume", "c.npz", *flags, "--steps", 8, cwd=tmp_path)
    assert r.returncode == 2 and "contradict" in r.stderr
    assert re.search(message, r.stderr), r.stderr
    assert (tmp_path / "c.npz").read_bytes() == before


def test_public_api_names():
    params = fastrnn.init_params(5, 4, cell="gru", num_layers=2, seed=0, dtype=np.float32)
    assert isinstance(params, fastrnn.ModelParams) and params.dtype == np.float32
    assert params.names == ("Wxh", "Whh", "Wxh_l1", "Whh_l1", "Why", "bh", "bhn", "bh_l1", "bhn_l1", "by")
    assert isinstance(fastrnn.init_params(5, 4, seed=0), fastrnn.Params)  # the seed's, unchanged


def test_train_stops_at_a_deadline_on_a_block_boundary():
    import time
    trainer = Trainer(Corpus.from_text(YORK_TEXT), _config("lstm", 1))
    assert trainer.train(50, deadline=time.perf_counter() - 1) and trainer.n == 0
    assert trainer.train(5, deadline=time.perf_counter() + 60) and trainer.n == 5


def test_cli_time_budget_trains_until_it_then_validates_and_saves(tmp_path, corpus_file):
    import math
    import time
    # The budget counts from the command's start, compile included: a first run of the same model
    # fills the kernel cache and says how long a start takes here, so the budget leaves seconds to train.
    args = ("train", corpus_file, *SMALL, "--model", "gru")
    started = time.perf_counter()
    assert run_cli(*args, "--steps", 1, "--checkpoint", "warm.npz", cwd=tmp_path).returncode == 0
    budget = math.ceil(time.perf_counter() - started) + 3
    r = run_cli(*args, "--steps", 10_000_000, "--time-budget", budget, "--checkpoint", "t.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"10,000,000 steps or {budget} s" in r.stdout and "time budget of" in r.stdout
    assert "validation" in r.stdout and "saved checkpoint t.npz" in r.stdout
    arrays = npz_arrays(tmp_path / "t.npz")
    n = int(arrays["n"])
    assert 0 < n < 10_000_000 and f"time budget of {budget} s reached at step {n:,}" in r.stdout
    # gru's recipe decays the rate along a cosine: its end is sized to the budget from the measured speed
    sized = re.search(r"learning rate: cosine decay to 0.1x by step ([\d,]+) \(fixed at step", r.stdout)
    assert sized, r.stdout
    decay_steps = int(sized.group(1).replace(",", ""))
    assert json.loads(str(arrays["config"]))["decay_steps"] == decay_steps and 0 < decay_steps < 10_000_000


def test_the_recipe_and_its_longer_budget_forms():
    from fastrnn.config import LONG_BUDGET_SECONDS, MEDIUM_BUDGET_SECONDS, recipe_config
    short = recipe_config(cell="lstm")
    assert (short.hidden_size, short.num_layers, short.learning_rate, short.dropout) == (128, 2, 3e-2, 0.0)
    assert recipe_config(cell="gru", time_budget=MEDIUM_BUDGET_SECONDS - 1) == replace(short, cell="gru")
    assert recipe_config(cell="lstm", time_budget=25) == short
    for budget in (MEDIUM_BUDGET_SECONDS, LONG_BUDGET_SECONDS - 1):
        assert recipe_config(cell="lstm", time_budget=budget) == replace(short, hidden_size=192, warmup_steps=100)
    long = recipe_config(cell="lstm", time_budget=LONG_BUDGET_SECONDS)
    assert (long.hidden_size, long.learning_rate, long.dropout, long.warmup_steps) == (384, 2e-2, 0.4, 100)
    assert replace(long, hidden_size=128, learning_rate=3e-2, dropout=0.0, warmup_steps=20) == short  # the rest
    given = recipe_config(cell="lstm", time_budget=3600, hidden_size=512, dropout=0.5)
    assert (given.hidden_size, given.dropout, given.learning_rate) == (512, 0.5, 2e-2)
    assert recipe_config(time_budget=3600) == TrainConfig()  # --model rnn keeps the seed's defaults
