"""The batched trainer (batch_size > 1) against hand-driven batched steps on the shard windows; checkpoints.

The seed's case at B > 1 trains on the engine: here the trainer's shards, pointers, resets, losses and exact
resume are checked against the numpy twin's steps (the seed's arithmetic, 1e-10 relative in float64) on the
same windows.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastrnn import init_params, optim, rnn
from fastrnn import reference as ref
from fastrnn.model import ModelParams
from fastrnn.params import ADAGRAD_EPS
from fastrnn.checkpoint import (FORMAT_VERSION, V2_CONFIG_DEFAULTS, V3_CONFIG_DEFAULTS, V4_CONFIG_DEFAULTS, CheckpointError,
                                load_checkpoint, save_checkpoint)
from fastrnn.corpus import Corpus
from fastrnn.config import ConfigError, TrainConfig
from fastrnn.trainer import Trainer
from conftest import rewrite_npz

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs.\n" * 3
CONFIG = TrainConfig(hidden_size=8, seq_length=7, seed=3, val_fraction=0.1, batch_size=3, threads=2)


def batched_seed_loop(train_ids, V, config, steps, reset_hidden=True):
    """B copies of the seed's loop, one per shard, in lockstep, each step the twin's batched loss and gradients
    (summed over the B * T characters, / B), clipped by value, then the twin's Adagrad."""
    H, T, B = config.hidden_size, config.seq_length, config.batch_size
    S = train_ids.size // B
    params = ModelParams.from_seed(init_params(V, H, seed=config.seed, dtype=np.dtype(config.dtype)))
    memory = params.zeros_like()
    state = (np.zeros((1, B, H), params.dtype),)
    p, losses = 0, []
    for n in range(steps):
        if p + T + 1 >= S or n == 0:
            if reset_hidden or n == 0:
                state = (np.zeros((1, B, H), params.dtype),)
            p = 0
        windows = np.stack([train_ids[b * S + p: b * S + p + T + 1] for b in range(B)])  # (B, T+1)
        loss, grads, state = ref.stack_loss_and_grads(params, windows[:, :-1], windows[:, 1:], state, clip=None)
        g = grads.flat
        scale = optim.norm_scale(g, optim.clip_value(config.clip, g.dtype), config.clip_norm)
        ref.flat_adagrad_update(params.flat, g, memory.flat, config.learning_rate, ADAGRAD_EPS, config.clip, scale)
        losses.append(loss)
        p += T
    hprev = state[0][0]
    if p + T + 1 >= S:
        p, hprev = 0, np.zeros_like(hprev)
    return params, memory, hprev, p, losses


def assert_close_to_twin(a, b):
    assert a.dtype == b.dtype
    np.testing.assert_allclose(a.flat, b.flat, rtol=1e-10, atol=1e-13)


def assert_bit_identical(a, b):
    for name, x, y in zip(("Wxh", "Whh", "Why", "bh", "by"), a, b):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("steps", [1, 9, 10, 11, 47])
def test_batched_trainer_is_b_seed_loops_on_the_shards(steps):
    corpus = Corpus.from_text(TEXT)
    trainer = Trainer(corpus, CONFIG)
    assert trainer.shard_length == trainer.train_ids.size // 3 == 77
    assert trainer.num_starts == 10  # p = 0, 7, ..., 63; p = 70 would need 78 ids: reset
    seen = []
    trainer.train(steps, callback=lambda t: seen.append(t.smooth_loss), every=1)
    params, memory, hprev, p, losses = batched_seed_loop(trainer.train_ids, len(corpus.vocab), CONFIG, steps)
    assert_close_to_twin(trainer.params, params)
    assert_close_to_twin(trainer.memory, memory)
    np.testing.assert_allclose(trainer.hprev, hprev, rtol=1e-10, atol=1e-13)
    assert (trainer.n, trainer.p) == (steps, p)
    np.testing.assert_array_equal(trainer.pointers, [p, 77 + p, 154 + p])
    smooth = -np.log(1.0 / len(corpus.vocab)) * CONFIG.seq_length
    for i, loss in enumerate(losses):
        smooth = smooth * 0.999 + loss * 0.001
        assert seen[i] == pytest.approx(smooth, rel=1e-12)  # the step's loss: summed over B*T, / B


def test_streams_reset_together_at_the_shard_ends():
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    trainer.train(9)
    assert trainer.p == 63 and np.abs(trainer.hprev).min(axis=1).max() > 0  # every stream carries a state
    trainer.train(1)  # the 10th step used p = 63; p = 70 would run off the shard: all streams reset
    assert trainer.p == 0 and not trainer.hprev.any()


def test_comparison_with_the_shard_loops_can_fail():
    # Carrying the hidden states across the shard ends (a plausible bug) must be caught.
    corpus = Corpus.from_text(TEXT)
    trainer = Trainer(corpus, CONFIG)
    trainer.train(25)
    params, *_ = batched_seed_loop(trainer.train_ids, len(corpus.vocab), CONFIG, 25, reset_hidden=False)
    assert float(np.abs(trainer.params.flat - params.flat).max()) > 1e-9


def test_batch_size_1_is_the_seeds_loop_whatever_the_threads():
    corpus = Corpus.from_text(TEXT)
    base = dict(hidden_size=8, seq_length=7, seed=3, val_fraction=0.1)
    a = Trainer(corpus, TrainConfig(**base))
    b = Trainer(corpus, TrainConfig(**base, batch_size=1, threads=2))
    assert a.config.batch_size == 1 and a.hprev.shape == (8,)
    a.train(60)
    b.train(60)
    assert_bit_identical(a.params, b.params)
    np.testing.assert_array_equal(a.hprev, b.hprev)
    assert (a.p, a.smooth_loss) == (b.p, b.smooth_loss)


def test_batch_size_1_is_train_step_bit_for_bit():
    # The per-block gather of ids must not move batch 1: same as the kernel's single step on the full split.
    corpus = Corpus.from_text(TEXT)
    config = TrainConfig(hidden_size=8, seq_length=7, seed=3, val_fraction=0.1)
    trainer = Trainer(corpus, config)
    trainer.train(80)  # 33 starts: wraps twice
    data = np.asarray(trainer.train_ids, np.int64)
    params = init_params(len(corpus.vocab), 8, seed=3)
    memory = params.zeros_like()
    ws = rnn.Workspace(len(corpus.vocab), 8, 7)
    p, h = 0, np.zeros(8)
    for n in range(80):
        if p + 8 >= data.size or n == 0:
            p, h = 0, np.zeros(8)
        _, h = rnn.train_step(params, memory, data[p:p + 7], data[p + 1:p + 8], h, 0.1, workspace=ws)
        p += 7
    assert_bit_identical(trainer.params, params)
    assert_bit_identical(trainer.memory, memory)
    assert trainer.p == p and np.array_equal(trainer.hprev, h)


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("id_dtype", [np.uint8, np.uint16, np.uint32])
def test_memory_mapped_ids_of_any_width_train_the_same(tmp_path, batch_size, id_dtype):
    corpus = Corpus.from_text(TEXT)
    path = tmp_path / "ids.bin"
    corpus.ids.astype(id_dtype).tofile(path)
    mapped = Corpus(np.memmap(path, dtype=id_dtype, mode="r"), corpus.vocab, corpus.fingerprint)
    config = TrainConfig(hidden_size=6, seq_length=7, seed=1, val_fraction=0.1, batch_size=batch_size, threads=1)
    a, b = Trainer(corpus, config), Trainer(mapped, config)
    a.train(23)
    b.train(23)
    assert_bit_identical(a.params, b.params)
    assert a.smooth_loss == b.smooth_loss


def test_shards_too_short_and_bad_values_are_refused():
    corpus = Corpus.from_text(TEXT)  # 233 training characters at val-fraction 0.1
    Trainer(corpus, TrainConfig(hidden_size=4, seq_length=7, val_fraction=0.1, batch_size=25))  # shards of 9
    with pytest.raises(ConfigError, match="batch-size 26 cuts the 233 training characters into shards of 8; "
                                          "seq-length 7 needs at least 9 per shard"):
        Trainer(corpus, TrainConfig(hidden_size=4, seq_length=7, val_fraction=0.1, batch_size=26))
    for kwargs, message in ((dict(batch_size=0), "batch-size must be a positive integer"),
                            (dict(batch_size=2.5), "batch-size must be a positive integer"),
                            (dict(threads=0), "threads must be a positive integer")):
        with pytest.raises(ConfigError, match=message):
            Trainer(corpus, TrainConfig(hidden_size=4, **kwargs))


def test_sample_and_validation_use_stream_0_and_the_params():
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    trainer.train(12)
    assert len(trainer.sample(30)) == 30
    assert trainer.validation_loss().count == 25  # 10 % of 258: the split does not depend on the batch
    assert len(trainer.model.sample(10, prime="the", seed=0)) == 10


def test_float32_batched_trains():
    corpus = Corpus.from_text(TEXT)
    t32 = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=7, seed=3, batch_size=3, threads=2, dtype="float32"))
    t64 = Trainer(corpus, TrainConfig(hidden_size=8, seq_length=7, seed=3, batch_size=3, threads=2))
    t32.train(30)
    t64.train(30)
    assert t32.params.Whh.dtype == np.float32 and t32.hprev.dtype == np.float32
    assert t32.smooth_loss == pytest.approx(t64.smooth_loss, rel=1e-3)


# --- checkpoints -------------------------------------------------------------------

def _state(t):
    return (*t.params, *t.memory, t.hprev)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batched_resume_is_bit_identical(tmp_path, dtype):
    corpus = Corpus.from_text(TEXT)
    config = TrainConfig(hidden_size=8, seq_length=7, seed=3, val_fraction=0.1, batch_size=3, threads=2,
                         dtype=dtype)
    N = 14  # crosses the shard ends (every 10 steps)
    straight = Trainer(corpus, config)
    straight.train(N)
    straight_sample = straight.sample(20)
    straight.train(N)

    first = Trainer(corpus, config)
    first.train(N)
    save_checkpoint(tmp_path / "c.npz", first)
    ckpt = load_checkpoint(tmp_path / "c.npz")
    assert ckpt.config == config
    np.testing.assert_array_equal(ckpt.pointers, first.pointers)
    resumed = ckpt.trainer(corpus)
    assert resumed.sample(20) == straight_sample
    resumed.train(N)
    for x, y in zip(_state(straight), _state(resumed)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert (straight.p, straight.n, straight.smooth_loss) == (resumed.p, resumed.n, resumed.smooth_loss)


def test_batched_checkpoint_contents(tmp_path):
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    trainer.train(4)
    path = save_checkpoint(tmp_path / "c.npz", trainer)
    with np.load(path, allow_pickle=False) as npz:
        assert npz["hprev"].shape == (3, 8)
        np.testing.assert_array_equal(npz["pointers"], [28, 105, 182])
        assert int(npz["p"]) == 28 and int(npz["format_version"]) == FORMAT_VERSION
        config = json.loads(str(npz["config"]))
        assert (config["batch_size"], config["threads"]) == (3, 2)


def test_resume_with_other_threads_continues_to_rounding(tmp_path):
    corpus = Corpus.from_text(TEXT)
    config = TrainConfig(hidden_size=8, seq_length=7, seed=3, val_fraction=0.1, batch_size=4, threads=2)
    straight = Trainer(corpus, config)
    straight.train(20)
    first = Trainer(corpus, config)
    first.train(10)
    save_checkpoint(tmp_path / "c.npz", first)
    resumed = load_checkpoint(tmp_path / "c.npz").trainer(corpus, threads=1)
    assert resumed.config.threads == 1 and resumed.workspace.n_chunks == 1
    resumed.train(10)
    for x, y in zip(_state(straight), _state(resumed)):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)


def test_version_1_checkpoints_still_load_and_resume_exactly(tmp_path):
    corpus = Corpus.from_text(TEXT)
    config = TrainConfig(hidden_size=8, seq_length=7, seed=3, val_fraction=0.1)
    straight = Trainer(corpus, config)
    straight.train(30)
    first = Trainer(corpus, config)
    first.train(15)
    new = save_checkpoint(tmp_path / "v2.npz", first)
    # A version-1 file's config: without batch_size and threads, nor what versions 3, 4 and 5 added.
    old_config = {k: v for k, v in config.to_dict().items()
                  if k not in ("batch_size", "threads") + V2_CONFIG_DEFAULTS + V3_CONFIG_DEFAULTS + V4_CONFIG_DEFAULTS}
    old = rewrite_npz(new, tmp_path / "v1.npz", pointers=None, format_version=np.int64(1),
                   config=np.str_(json.dumps(old_config)))
    ckpt = load_checkpoint(old)
    assert ckpt.config.batch_size == 1 and ckpt.pointers is None
    resumed = ckpt.trainer(corpus)
    resumed.train(15)
    for x, y in zip(_state(straight), _state(resumed)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("changes, message", [
    (dict(pointers=None), "missing pointers"),
    (dict(pointers=np.array([28, 105], np.int64)), "pointers must be 3 stream positions"),
    (dict(pointers=np.array([0, 105, 182], np.int64)), "the first equal to p=28"),
    (dict(hprev=np.zeros(8)), r"hprev has shape \(8,\)"),
])
def test_bad_batched_checkpoints_are_refused(tmp_path, changes, message):
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    trainer.train(4)
    good = save_checkpoint(tmp_path / "c.npz", trainer)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(rewrite_npz(good, tmp_path / "bad.npz", **changes))


def test_pointers_that_do_not_fit_the_shards_are_refused(tmp_path):
    corpus = Corpus.from_text(TEXT)
    trainer = Trainer(corpus, CONFIG)
    trainer.train(4)
    good = save_checkpoint(tmp_path / "c.npz", trainer)
    bad = rewrite_npz(good, tmp_path / "bad.npz", pointers=np.array([28, 100, 182], np.int64))
    with pytest.raises(CheckpointError, match="stream pointers .* are not those of shards of 77"):
        load_checkpoint(bad).trainer(corpus)
