"""Checkpoints: contents, exact resume, atomic writes, and loads that refuse bad files with clear messages."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

import fastrnn.checkpoint as checkpoint_module
from fastrnn.checkpoint import FORMAT_VERSION, CheckpointError, load_checkpoint, save_checkpoint
from fastrnn.corpus import Corpus
from fastrnn.params import PARAM_NAMES
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer
from conftest import rewrite_npz

TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 4
CONFIG = TrainConfig(hidden_size=10, seq_length=7, seed=11, val_fraction=0.1)


def _arrays(trainer):
    return (*trainer.params, *trainer.memory, trainer.hprev)


def assert_same_state(a, b):
    for x, y in zip(_arrays(a), _arrays(b)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    assert (a.p, a.n, a.smooth_loss) == (b.p, b.n, b.smooth_loss)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


def test_checkpoint_holds_everything_under_the_seeds_names(tmp_path):
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    trainer.train(13)
    path = save_checkpoint(tmp_path / "c.npz", trainer)
    with np.load(path, allow_pickle=False) as npz:
        names = set(npz.files)
        for name in PARAM_NAMES:
            np.testing.assert_array_equal(npz[name], getattr(trainer.params, name))
            np.testing.assert_array_equal(npz["m" + name], getattr(trainer.memory, name))
        assert int(npz["n"]) == 13 and int(npz["p"]) == trainer.p
        assert float(npz["smooth_loss"]) == trainer.smooth_loss
        assert json.loads(str(npz["config"]))["hidden_size"] == 10
        assert json.loads(str(npz["rng_state"])) == trainer.rng.bit_generator.state
        np.testing.assert_array_equal(npz["vocab"], [ord(c) for c in sorted(set(TEXT))])
        assert int(npz["format_version"]) == FORMAT_VERSION
        assert int(npz["corpus_length"]) == len(TEXT.encode()) and len(str(npz["corpus_sha256"])) == 64
    assert {"hprev", "bytes_mode", "corpus_path", "format"} <= names
    loaded = load_checkpoint(path)
    assert loaded.config == trainer.config and loaded.vocab == trainer.vocab
    assert loaded.model.sample(20, seed=1) == trainer.model.sample(20, seed=1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_is_bit_identical(tmp_path, dtype):
    corpus = Corpus.from_text(TEXT)
    config = TrainConfig(hidden_size=10, seq_length=7, seed=11, val_fraction=0.1, dtype=dtype)
    N = 60  # crosses a wrap-around of the 324-character training split
    straight = Trainer(corpus, config)
    straight.train(N)
    straight_sample = straight.sample(25)
    straight.train(N)

    first = Trainer(corpus, config)
    first.train(N)
    save_checkpoint(tmp_path / "c.npz", first)
    del first
    resumed = load_checkpoint(tmp_path / "c.npz").trainer(corpus)
    assert resumed.sample(25) == straight_sample  # the sampling RNG state travels too
    resumed.train(N)
    assert_same_state(straight, resumed)


def test_resume_refuses_another_text(tmp_path):
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    save_checkpoint(tmp_path / "c.npz", trainer)
    ckpt = load_checkpoint(tmp_path / "c.npz")
    with pytest.raises(CheckpointError, match="is not the text"):
        ckpt.trainer(Corpus.from_text(TEXT.replace("wisdom", "wisdam")))
    with pytest.raises(CheckpointError, match="trained on characters"):
        ckpt.trainer(Corpus.from_text(TEXT.encode()))


def test_atomic_write_leaves_the_old_checkpoint_when_saving_fails(tmp_path, monkeypatch):
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    path = save_checkpoint(tmp_path / "c.npz", trainer)
    before = path.read_bytes()
    trainer.train(5)

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, trainer)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind
    assert load_checkpoint(path).state.n == 0


def test_save_fsyncs_then_renames(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(checkpoint_module.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    monkeypatch.setattr(checkpoint_module.os, "replace",
                        lambda a, b: (calls.append(("replace", os.path.dirname(a) == os.path.dirname(b))),
                                      real_replace(a, b)))
    save_checkpoint(tmp_path / "c.npz", Trainer(Corpus.from_text(TEXT), CONFIG))
    assert calls[0] == "fsync" and calls[1] == ("replace", True)


def test_refuses_to_save_non_finite_parameters(tmp_path):
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    trainer.params.Whh[0, 0] = np.inf
    with pytest.raises(CheckpointError, match="not finite"):
        save_checkpoint(tmp_path / "c.npz", trainer)
    assert not (tmp_path / "c.npz").exists()


# --- loading bad files ------------------------------------------------------------

@pytest.fixture
def good(tmp_path):
    trainer = Trainer(Corpus.from_text(TEXT), CONFIG)
    trainer.train(3)
    return save_checkpoint(tmp_path / "good.npz", trainer)


def test_load_missing_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_load_truncated(good, tmp_path):
    data = good.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        bad = tmp_path / f"cut{cut}.npz"
        bad.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="not a usable fastrnn checkpoint"):
            load_checkpoint(bad)


def test_load_corrupted_member(good, tmp_path):
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("Whh.npy")
    start = info.header_offset + 30 + len(info.filename) + 200  # inside Whh's stored bytes
    data[start:start + 8] = b"\xff" * 8
    bad = tmp_path / "bad.npz"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(bad)


def test_load_not_a_checkpoint(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not an .npz file"):
        load_checkpoint(text)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="no fastrnn format marker"):
        load_checkpoint(other)


def test_load_other_format_version(good, tmp_path):
    bad = rewrite_npz(good, tmp_path / "v2.npz", format_version=np.int64(FORMAT_VERSION + 1))
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}; this fastrnn .* reads versions 1, 2, 3, 4, 5"):
        load_checkpoint(bad)


@pytest.mark.parametrize("changes, message", [
    (dict(Whh=None), "missing Whh"),
    (dict(Whh=np.zeros((3, 3))), r"Whh has shape \(3, 3\)"),
    (dict(mWxh=np.zeros((10, 30), np.float32)), "mWxh has shape"),
    (dict(bh=np.full(10, np.nan)), "bh holds NaN"),
    (dict(config=np.str_("{not json")), "damaged JSON"),
    (dict(config=np.str_('{"hidden_size": 10}')), "hyperparameters are incomplete"),
    (dict(vocab=np.array([5, 3, 5])), "bad vocabulary"),
    (dict(rng_state=np.str_('{"bit_generator": "MT19937"}')), "random generator state"),
    (dict(p=np.int64(3)), "bad data pointer"),
    (dict(corpus_sha256=np.str_("abc")), "corpus fingerprint"),
])
def test_load_inconsistent_contents(good, tmp_path, changes, message):
    bad = rewrite_npz(good, tmp_path / "bad.npz", **changes)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(bad)
