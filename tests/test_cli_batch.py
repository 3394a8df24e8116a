"""``fastrnn train --batch-size/--threads`` in subprocesses: exact resume, the log, and bad values."""
from __future__ import annotations

import re

import numpy as np
import pytest

from fastrnn.checkpoint import load_checkpoint
from fastrnn.corpus import load_corpus
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from test_cli import fastrnn, npz_arrays

SMALL = ["--hidden-size", "16", "--seq-length", "10", "--seed", "1", "--batch-size", "4", "--threads", "2"]


def test_batched_train_logs_and_matches_the_python_api(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 30, "--log-every", 10, "--sample-every", 0,
                "--checkpoint", "b.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "seed 1, batch-size 4 (shards of 232 characters), 2 threads; 30 steps" in r.stdout
    trainer = Trainer(load_corpus(corpus_file),
                      TrainConfig(hidden_size=16, seq_length=10, seed=1, batch_size=4, threads=2))
    trainer.train(1)
    assert f"iter 0, loss: {trainer.smooth_loss:.2f} | {trainer.smooth_loss / 10:.3f} nats/char" in r.stdout
    assert re.search(r"bits/char \| [\d,]+ chars/s", r.stdout)
    trainer.train(29)
    ckpt = load_checkpoint(tmp_path / "b.npz")
    assert ckpt.config == trainer.config and ckpt.state.hprev.shape == (4, 16)
    np.testing.assert_array_equal(ckpt.state.params.Whh, trainer.params.Whh)
    r = fastrnn("sample", "b.npz", "--seed", 0, "--length", 20, cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout) == 21
    r = fastrnn("eval", "b.npz", cwd=tmp_path)
    assert r.returncode == 0 and "held-out split" in r.stdout


def test_batched_resume_through_the_cli_is_bit_identical(tmp_path, corpus_file):
    common = [corpus_file, *SMALL, "--log-every", 10, "--sample-every", 15, "--sample-length", 30,
              "--eval-every", 0]
    r = fastrnn("train", *common, "--steps", 60, "--checkpoint", "full.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r1 = fastrnn("train", *common, "--steps", 30, "--checkpoint", "half.npz", cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    r2 = fastrnn("train", "--resume", "half.npz", "--steps", 60, "--log-every", 10, "--sample-every", 15,
                 "--sample-length", 30, "--eval-every", 0, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    assert "batch-size 4 (shards of 232 characters), 2 threads" in r2.stdout  # recorded, kept on resume
    full, half = npz_arrays(tmp_path / "full.npz"), npz_arrays(tmp_path / "half.npz")
    assert int(half["n"]) == 60
    for name in ("Wxh", "Whh", "Why", "bh", "by", "mWxh", "mWhh", "mWhy", "mbh", "mby", "hprev", "p",
                 "pointers", "smooth_loss", "rng_state", "config"):
        np.testing.assert_array_equal(full[name], half[name], err_msg=name)


def test_large_model_few_streams_per_thread_splits_by_hidden_units(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, "--hidden-size", "256", "--seq-length", "10", "--batch-size", "4",
                "--threads", "2", "--steps", 3, "--sample-every", 0, "--checkpoint", "w.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "batch-size 4 (shards of 232 characters), 2 threads (split by hidden units); 3 steps" in r.stdout
    assert load_checkpoint(tmp_path / "w.npz").state.n == 3


def test_threads_on_resume_is_not_a_contradiction_but_batch_size_is(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 10, "--quiet", "--checkpoint", "c.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = (tmp_path / "c.npz").read_bytes()
    r = fastrnn("train", "--resume", "c.npz", "--steps", 20, "--batch-size", 8, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--batch-size 8 (checkpoint: 4) contradicts the checkpoint; drop it to resume" in r.stderr
    assert (tmp_path / "c.npz").read_bytes() == before
    r = fastrnn("train", "--resume", "c.npz", "--steps", 20, "--threads", 1, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ckpt = load_checkpoint(tmp_path / "c.npz")
    assert (ckpt.state.n, ckpt.config.threads, ckpt.config.batch_size) == (20, 1, 4)


@pytest.mark.parametrize("args, pattern", [
    (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
    (["--batch-size", "-3"], "--batch-size must be a positive integer, got -3"),
    (["--batch-size", "two"], "invalid int value: 'two'"),
    (["--threads", "0"], "--threads must be a positive integer, got 0"),
    (["--threads", "1.5"], "invalid int value: '1.5'"),
    (["--batch-size", "100"], "batch-size 100 cuts the 930 training characters into shards of 9; "
                              "seq-length 10 needs at least 12 per shard"),
])
def test_bad_batch_flags(tmp_path, corpus_file, args, pattern):
    r = fastrnn("train", corpus_file, "--hidden-size", "8", "--seq-length", "10", *args, "--checkpoint", "x.npz",
                cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1 and r.stderr.startswith("fastrnn")
    assert re.search(re.escape(pattern) if "cuts" in pattern else pattern, r.stderr), r.stderr
    assert not (tmp_path / "x.npz").exists()
