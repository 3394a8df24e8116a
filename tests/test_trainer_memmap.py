"""Training and validation from a prepared (memory-mapped) corpus equal those from the in-memory corpus.

Issue 5: a corpus larger than memory is trained on through ``prepare_corpus``'s
memmap of uint8/uint16 ids; the held-out split is scored window by window.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from fastrnn import trainer as trainer_module
from fastrnn.checkpoint import load_checkpoint
from fastrnn.corpus import load_corpus
from fastrnn.prepared import cache_folder, prepare_corpus
from fastrnn.charmodel import score_windows
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from conftest import YORK_TEXT
from test_cli import fastrnn

ASCII = YORK_TEXT * 2  # ~1,600 characters: V < 256, uint8 ids


def _wide_text(n=3000, symbols=300, seed=0):
    """A text over 300 distinct characters (beyond U+00FF), so that its ids are uint16."""
    rng = np.random.default_rng(seed)
    alphabet = [chr(0x100 + i) for i in range(symbols)]
    return "".join(alphabet[i] for i in rng.integers(0, symbols, n)) + "".join(alphabet)


@pytest.fixture(params=["uint8", "uint16"])
def corpus(request, tmp_path):
    """``(path, expected id dtype)`` of a corpus file."""
    text = ASCII if request.param == "uint8" else _wide_text()
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    return path, np.dtype(request.param)


def _state_arrays(t: Trainer):
    return (*t.params, *t.memory, t.hprev)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_training_from_the_memmap_is_bit_identical(corpus, batch_size):
    corpus_path, dtype = corpus
    prepared = prepare_corpus(corpus_path)
    assert prepared.ids.dtype == dtype
    memory = load_corpus(corpus_path)
    config = TrainConfig(hidden_size=8, seq_length=7, seed=3, batch_size=batch_size, threads=2, val_fraction=0.1)
    a, b = Trainer(prepared, config), Trainer(memory, config)
    assert isinstance(a.train_ids, np.memmap) and isinstance(a.val_targets, np.memmap)  # views, no copies
    for steps in (1, 100, 300, 613):  # several wraps of the pointer walk, blocks of different sizes
        a.train(steps)
        b.train(steps)
        for x, y in zip(_state_arrays(a), _state_arrays(b)):
            np.testing.assert_array_equal(x, y)
        assert (a.p, a.n, a.smooth_loss) == (b.p, b.n, b.smooth_loss)
    assert a.sample(20) == b.sample(20)
    va, vb = a.validation_loss(), b.validation_loss()
    assert va.count == vb.count and va.nats == vb.nats  # one window each: the same single kernel call


def test_release_pages_after_each_block_and_each_validation_window(corpus):
    prepared = prepare_corpus(corpus[0])
    calls = []
    prepared.release_pages = lambda: calls.append(1)
    t = Trainer(prepared, TrainConfig(hidden_size=8, seq_length=7, seed=3, val_fraction=0.1))
    t.train(trainer_module.BLOCK_STEPS * 2 + 5)  # three blocks
    assert len(calls) == 3
    calls.clear()
    t.validation_loss()  # a single window at this size
    assert len(calls) == 1
    _, count, _ = score_windows(t.params, t.val_inputs, t.val_targets, window=50, after_window=prepared.release_pages)
    assert len(calls) == 1 + -(-count // 50)


@pytest.mark.parametrize("window", [1, 7, 50, 10_000])
def test_windowed_validation_equals_one_pass(corpus, window):
    prepared = prepare_corpus(corpus[0])
    t = Trainer(prepared, TrainConfig(hidden_size=8, seq_length=7, seed=3, val_fraction=0.2))
    t.train(200)
    inputs, targets = np.array(t.val_inputs, np.int64), np.array(t.val_targets, np.int64)
    whole, count, _ = score_windows(t.params, inputs, targets, window=targets.size)
    nats, n, _ = score_windows(t.params, t.val_inputs, t.val_targets, window=window)
    assert n == count == targets.size
    # Only the order of summation differs (the windows' float64 sums are added in float64).
    assert nats == pytest.approx(whole, rel=1e-12)
    # Per-character log-probabilities carry the hidden state exactly: identical, window or not.
    _, _, lp_whole = score_windows(t.params, inputs, targets, per_char=True, window=targets.size)
    lp_nats, _, lp = score_windows(t.params, t.val_inputs, t.val_targets, per_char=True, window=window)
    np.testing.assert_array_equal(lp, lp_whole)
    assert lp_nats == pytest.approx(whole, rel=1e-12)
    assert t.model.score_ids(t.val_inputs, t.val_targets).nats == whole  # one window by default here


def test_cli_train_prepares_the_corpus_and_eval_reuses_it(tmp_path):
    corpus = tmp_path / "york.txt"
    corpus.write_text(YORK_TEXT, encoding="utf-8")
    small = ["--hidden-size", "16", "--seq-length", "10", "--seed", "1", "--sample-every", "0"]
    r = fastrnn("train", corpus, *small, "--steps", 50, "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    folder = cache_folder(corpus)
    assert folder == tmp_path / "york.txt.fastrnn-ids" and (folder / "chars.json").is_file()
    ids_file, = folder.glob("chars-*.ids")
    mtime = ids_file.stat().st_mtime_ns
    ckpt = load_checkpoint(tmp_path / "m.npz")
    assert ckpt.corpus_path == str(corpus) and ckpt.corpus_fingerprint == load_corpus(corpus).fingerprint

    trainer = Trainer(load_corpus(corpus), TrainConfig(hidden_size=16, seq_length=10, seed=1))
    trainer.train(50)
    np.testing.assert_array_equal(ckpt.state.params.Wxh, trainer.params.Wxh)  # bit for bit, in memory or not
    val = trainer.validation_loss()
    r = fastrnn("eval", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{val.nats_per_char:.4f} nats/char, {val.bits_per_char:.4f} bits/char" in r.stdout
    assert "held-out split" in r.stdout
    r = fastrnn("eval", "m.npz", "--per-char", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 1 + val.count + 1
    r = fastrnn("train", "--resume", "m.npz", "--steps", 60, "--sample-every", 0, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ids_file.stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert sorted(p.name for p in folder.iterdir()) == sorted(["chars.json", ids_file.name])


def test_cli_bytes_mode_prepares_its_own_ids(tmp_path):
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 3 + "café".encode("latin-1") * 20)
    r = fastrnn("train", "blob.bin", "--bytes", "--hidden-size", "8", "--steps", 20, "--checkpoint", "b.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "blob.bin.fastrnn-ids" / "bytes.json").is_file()
    r = fastrnn("eval", "b.npz", cwd=tmp_path)
    assert r.returncode == 0 and "bytes" in r.stdout


def test_cli_bad_corpus_leaves_no_cache_folder(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("Now is the winter\nof our discontent, café".encode("latin-1"))
    (tmp_path / "hundred.txt").write_text("abcdefghij" * 10)
    for args in (["latin1.txt"], ["hundred.txt", "--val-fraction", "0.001"]):
        r = fastrnn("train", *args, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hundred.txt", "latin1.txt"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_cli_read_only_folder_falls_back_to_memory(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    folder.chmod(0o555)
    try:
        r = fastrnn("train", folder / "york.txt", "--hidden-size", "8", "--steps", 10, "--checkpoint", "m.npz",
                    cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in folder.iterdir()) == ["york.txt"]
    finally:
        folder.chmod(0o755)
