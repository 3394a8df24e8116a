"""The trainer against the seed's loop written with the reference twin; config checks; sampling; scoring."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastrnn import init_params, reference, rnn
from fastrnn.corpus import Corpus
from fastrnn.charmodel import CharModel
from fastrnn.config import ConfigError, TrainConfig
from fastrnn.trainer import Trainer, TrainingDiverged

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n" * 3


def seed_loop(data, vocab_size, hidden_size, seq_length, learning_rate, seed, steps, reset_hidden=True):
    """min-char-rnn's training loop, as in the walkthrough, over the reference twin (float64)."""
    params = init_params(vocab_size, hidden_size, seed=seed)
    memory = params.zeros_like()
    n, p = 0, 0
    smooth_loss = -np.log(1.0 / vocab_size) * seq_length
    losses = []
    for _ in range(steps):
        if p + seq_length + 1 >= len(data) or n == 0:
            if reset_hidden or n == 0:
                hprev = np.zeros((hidden_size, 1))
            p = 0
        inputs, targets = data[p:p + seq_length], data[p + 1:p + seq_length + 1]
        loss, hprev = reference.train_step(params, memory, inputs, targets, hprev, learning_rate)
        smooth_loss = smooth_loss * 0.999 + loss * 0.001
        losses.append(loss)
        p += seq_length
        n += 1
    if p + seq_length + 1 >= len(data):  # the state the seed has at the top of its next iteration
        p, hprev = 0, np.zeros(hidden_size)
    return params, memory, np.ravel(hprev), p, n, smooth_loss, losses


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.parametrize("steps", [1, 37, 150])
def test_trainer_is_the_seeds_loop(steps):
    corpus = Corpus.from_text(TEXT)
    config = TrainConfig(hidden_size=12, seq_length=9, learning_rate=0.1, seed=5, val_fraction=0.1)
    trainer = Trainer(corpus, config)
    trainer.train(steps)
    # The seed's loop over the training split only (several wrap-arounds at 150 steps).
    data = corpus.ids[:trainer.train_ids.size]
    params, memory, hprev, p, n, smooth, _ = seed_loop(data, len(corpus.vocab), 12, 9, 0.1, 5, steps)
    assert (trainer.n, trainer.p) == (n, p)
    assert _max_diff(trainer.params, params) < 1e-9
    assert _max_diff(trainer.memory, memory) < 1e-9
    assert np.max(np.abs(trainer.hprev - hprev)) < 1e-9
    assert trainer.smooth_loss == pytest.approx(smooth, rel=1e-12)


def test_comparison_with_the_seed_can_fail():
    # The same check against a seed loop that carries the hidden state across the wrap-around
    # (a plausible bug) must fail: the comparison is sensitive to it.
    corpus = Corpus.from_text(TEXT)
    trainer = Trainer(corpus, TrainConfig(hidden_size=12, seq_length=9, seed=5, val_fraction=0.1))
    trainer.train(150)
    data = corpus.ids[:trainer.train_ids.size]
    params, *_ = seed_loop(data, len(corpus.vocab), 12, 9, 0.1, 5, 150, reset_hidden=False)
    assert _max_diff(trainer.params, params) > 1e-6


def test_first_smooth_loss_and_initial_state():
    corpus = Corpus.from_text(TEXT)
    trainer = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=5, seed=1))
    V = len(corpus.vocab)
    assert trainer.smooth_loss == -math.log(1.0 / V) * 5
    data = trainer.train_ids
    params = init_params(V, 8, seed=1)
    for a, b in zip(trainer.params, params):
        np.testing.assert_array_equal(a, b)
    loss, _ = reference.train_step(params, params.zeros_like(), data[:5], data[1:6], np.zeros(8), 0.1)
    trainer.train(1)
    assert trainer.smooth_loss == pytest.approx(-math.log(1.0 / V) * 5 * 0.999 + loss * 0.001, rel=1e-12)


def test_train_in_pieces_is_bit_identical_to_one_call():
    corpus = Corpus.from_text(TEXT)
    config = TrainConfig(hidden_size=10, seq_length=7, seed=2)
    a, b = Trainer(corpus, config), Trainer(corpus, config)
    a.train(300)
    for k in (1, 2, 255, 3, 39):
        b.train(k)
    for x, y in zip((*a.params, *a.memory, a.hprev), (*b.params, *b.memory, b.hprev)):
        np.testing.assert_array_equal(x, y)
    assert (a.p, a.n, a.smooth_loss) == (b.p, b.n, b.smooth_loss)


def test_callback_every_and_stop():
    trainer = Trainer(Corpus.from_text(TEXT), TrainConfig(hidden_size=6, seq_length=5, seed=0))
    seen = []

    def callback(t):
        seen.append(t.n)
        if t.n == 30:
            t.request_stop()

    assert trainer.train(100, callback=callback, every=10) is False
    assert seen == [10, 20, 30] and trainer.n == 30
    assert trainer.train(5, callback=callback) is True  # the stop request was consumed
    assert seen[-1] == 35


def test_nan_loss_raises_training_diverged():
    trainer = Trainer(Corpus.from_text(TEXT), TrainConfig(hidden_size=6, seq_length=5, seed=0))
    trainer.train(3)
    trainer.params.Why[0, 0] = np.nan
    with pytest.raises(TrainingDiverged) as info:
        trainer.train(10)
    assert info.value.step == 4 and math.isnan(info.value.loss)
    assert not trainer.is_finite()


def test_float32_trains_and_stays_close_to_float64():
    corpus = Corpus.from_text(TEXT)
    t64 = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=6, seed=3))
    t32 = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=6, seed=3, dtype="float32"))
    t64.train(50)
    t32.train(50)
    assert t32.params.Whh.dtype == np.float32
    assert t32.smooth_loss == pytest.approx(t64.smooth_loss, rel=1e-3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(hidden_size=0), "hidden-size must be a positive integer"),
    (dict(seq_length=-3), "seq-length must be a positive integer"),
    (dict(learning_rate=0.0), "learning-rate must be a positive number"),
    (dict(learning_rate=float("nan")), "learning-rate must be a positive number"),
    (dict(val_fraction=1.0), r"val-fraction must be in \[0, 1\)"),
    (dict(val_fraction=-0.1), r"val-fraction must be in \[0, 1\)"),
    (dict(dtype="float16"), "dtype must be"),
    (dict(seed=-1), "seed must be"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(Corpus.from_text(TEXT), TrainConfig(**kwargs))


def test_corpus_too_short_or_split_too_small():
    with pytest.raises(ConfigError, match="needs at least 27"):
        Trainer(Corpus.from_text("x" * 26), TrainConfig(val_fraction=0))
    Trainer(Corpus.from_text("xy" * 13 + "z"), TrainConfig(hidden_size=4, val_fraction=0))  # 27 is enough
    with pytest.raises(ConfigError, match="left to train on"):
        Trainer(Corpus.from_text("x" * 40), TrainConfig(val_fraction=0.5))
    with pytest.raises(ConfigError, match="holds out nothing"):
        Trainer(Corpus.from_text("x" * 40), TrainConfig(val_fraction=0.01))


def test_smallest_corpus_resets_every_step():
    corpus = Corpus.from_text("abcdefg")  # seq_length 5 + 2
    trainer = Trainer(corpus, TrainConfig(hidden_size=4, seq_length=5, seed=0, val_fraction=0))
    trainer.train(4)
    params, memory, hprev, p, n, smooth, _ = seed_loop(corpus.ids, 7, 4, 5, 0.1, 0, 4)
    assert trainer.p == p == 0 and _max_diff(trainer.params, params) < 1e-12


def test_validation_loss_is_the_forward_over_the_held_out_split():
    corpus = Corpus.from_text(TEXT)
    trainer = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=5, seed=0, val_fraction=0.2))
    trainer.train(20)
    score = trainer.validation_loss()
    k = int(len(corpus) * 0.2)
    nats, _ = reference.sequence_loss(trainer.params, corpus.ids[-k - 1:-1], corpus.ids[-k:], np.zeros(8))
    assert score.count == k
    assert score.nats == pytest.approx(nats, rel=1e-10)
    assert score.bits_per_char == pytest.approx(nats / k / math.log(2), rel=1e-10)
    no_val = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=5, seed=0, val_fraction=0))
    assert no_val.validation_loss() is None


def test_trainer_samples_are_reproducible_from_the_rng_state():
    corpus = Corpus.from_text(TEXT)
    a = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=5, seed=4))
    b = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=5, seed=4))
    first = a.sample(30)
    assert first == b.sample(30) and len(first) == 30
    assert a.sample(30) != first  # the stream moves on


# --- CharModel: sample and score -------------------------------------------------

def _model():
    trainer = Trainer(Corpus.from_text(TEXT), TrainConfig(hidden_size=10, seq_length=8, seed=9))
    trainer.train(200)
    return trainer.model


def test_prime_warms_the_state_then_seeds_with_its_last_character():
    model = _model()
    prime = "the quick"
    ids = model.encode(prime)
    h = np.zeros(10)
    for t in range(ids.size - 1):  # the forward over all but the last character
        _, h = reference.sequence_loss(model.params, ids[t:t + 1], ids[t + 1:t + 2], h)
    expected = rnn.sample(model.params, h, ids[-1], 40, seed=7)
    assert model.sample(40, prime=prime, seed=7) == model.vocab.decode(expected)
    assert model.sample(40, prime=prime, seed=7) != model.sample(40, prime="the lazy", seed=7)


def test_sample_without_prime_starts_from_a_newline_and_argmax_is_greedy():
    model = _model()
    newline = int(model.encode("\n")[0])
    expected = rnn.sample(model.params, np.zeros(10), newline, 25, seed=3)
    assert model.sample(25, seed=3) == model.vocab.decode(expected)
    greedy = model.sample(25, argmax=True, seed=1)
    assert greedy == model.sample(25, argmax=True, seed=2)
    with pytest.raises(ValueError, match="temperature"):
        model.sample(5, temperature=0)
    with pytest.raises(ValueError, match="not in the model's vocabulary: 'Z'"):
        model.sample(5, prime="Zebra")


def test_score_matches_the_reference_and_per_char():
    model = _model()
    text = "the lazy dog jumps"
    ids = model.encode(text)
    nats, _ = reference.sequence_loss(model.params, ids[:-1], ids[1:], np.zeros(10))
    score = model.score(text, per_char=True)
    assert score.count == len(text) - 1
    assert score.nats == pytest.approx(nats, rel=1e-10)
    assert -score.log_probs.sum() == pytest.approx(nats, rel=1e-10)
    assert model.score(text).nats == pytest.approx(nats, rel=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        model.score("t")


def test_bytes_mode_trainer_and_model():
    data = bytes(range(0, 250, 7)) * 8
    corpus = Corpus.from_text(data)
    trainer = Trainer(corpus, TrainConfig(hidden_size=6, seq_length=5, seed=0))
    trainer.train(20)
    out = trainer.model.sample(10, prime=data[:3], seed=0)
    assert isinstance(out, bytes) and len(out) == 10 and set(out) <= set(data)


def test_char_model_alone():
    corpus = Corpus.from_text("abcabc")
    model = CharModel(init_params(3, 4, seed=0), corpus.vocab)
    assert len(model.sample(7, prime="ab", seed=0)) == 7


def test_non_finite_state_stops_training_even_with_a_finite_loss():
    # An infinite Adagrad memory leaves the loss finite (the update becomes 0) but the state is no longer
    # checkpointable: the trainer must stop.
    trainer = Trainer(Corpus.from_text(TEXT), TrainConfig(hidden_size=6, seq_length=5, seed=0))
    trainer.train(2)
    trainer.memory.Wxh[0, 0] = np.inf
    with pytest.raises(TrainingDiverged, match="overflowed to NaN or infinity by step 7") as info:
        trainer.train(5)
    assert info.value.step == 7 and math.isfinite(info.value.loss)  # checked once per block of steps


def test_warm_up_leaves_the_state_alone():
    trainer = Trainer(Corpus.from_text(TEXT), TrainConfig(hidden_size=6, seq_length=5, seed=0))
    trainer.train(7)
    before = [a.copy() for a in (*trainer.params, *trainer.memory, trainer.hprev)]
    trainer.warm_up()
    for a, b in zip(before, (*trainer.params, *trainer.memory, trainer.hprev)):
        np.testing.assert_array_equal(a, b)
    assert trainer.n == 7


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("budget", [None, 100, 600])
def test_recipe_from_python_is_the_command_lines(cell, budget):
    from fastrnn import recipe_config
    from fastrnn.config import recipes_for
    config = TrainConfig.recipe(cell, time_budget=budget, seed=3)
    assert config == recipe_config(time_budget=budget, cell=cell, seed=3)
    recipe = recipes_for(budget)[cell]
    assert all(getattr(config, name) == value for name, value in recipe.items())
    assert TrainConfig(cell=cell).num_layers == 1  # the dataclass itself keeps min-char-rnn's defaults


def test_score_repr_gives_per_char_figures():
    from fastrnn.charmodel import Score
    text = repr(Score(nats=200.0, count=100))
    assert "nats_per_char=2," in text and "bits_per_char=2.88539" in text and "count=100" in text
