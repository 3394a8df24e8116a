"""Fine-tuning (``fastrnn train NEW --init-from CKPT``, :func:`fastrnn.fine_tune`): the parent's ids and
weights kept, new symbols appended as a fresh model's, a fresh run that resumes exactly, under MPI too, and
one line and exit 2 for what cannot be fine-tuned."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fastrnn._validate import check_model
from fastrnn.checkpoint import load_checkpoint, save_checkpoint
from fastrnn.config import ConfigError, TrainConfig
from fastrnn.corpus import load_corpus
from fastrnn.fine_tuning import fine_tune, grafted
from fastrnn.model import init_params
from fastrnn.prepared import file_sha256, prepare_corpus
from fastrnn.trainer import Trainer
from fastrnn.vocab import Vocab

from test_cli import fastrnn
from test_distributed import assert_same_run, mpiexec, run_mpi  # noqa: F401 (mpiexec: a fixture)

PARENT_TEXT = "the cat sat on the mat.\nthe dog ran.\n" * 40
CHILD_TEXT = "Zoe's 3 dogs (and 2 cats) ran 40 km!\n" * 40 + "the end\n"  # capitals, digits, brackets: new symbols
SMALL = ["--hidden-size", "8", "--seq-length", "6", "--seed", "4", "--sample-every", "0", "--log-every", "0"]


def test_extended_vocab_keeps_every_id_and_appends_the_new_symbols_sorted():
    parent = Vocab.from_text("ba\n")
    child = parent.extended(Vocab.from_text("zb1a"))
    assert child.codes.tolist() == [10, ord("a"), ord("b"), ord("1"), ord("z")]
    assert parent.extended(Vocab.from_text("ab")) == parent
    text = "ab\n1z"
    assert child.decode(child.encode(text)) == text
    assert child.encode("a1").tolist() == [1, 3] and child.id_of(ord("z")) == 4 and child.id_of(ord("q")) is None
    assert child.ids_of([ord("1"), -1, 10 ** 7]).tolist() == [3, -1, -1]
    with pytest.raises(ValueError, match="distinct"):
        Vocab([3, 2, 3])
    with pytest.raises(ValueError, match="bytes"):
        parent.extended(Vocab.from_text(b"a"))


@pytest.mark.parametrize("kind", ["memory", "prepared"])
def test_a_corpus_in_a_larger_vocabulary_has_the_same_text(tmp_path, kind):
    path = tmp_path / "c.txt"
    path.write_text(CHILD_TEXT, encoding="utf-8")
    corpus = load_corpus(path) if kind == "memory" else prepare_corpus(path)
    vocab = Vocab.from_text(PARENT_TEXT).extended(corpus.vocab)
    recoded = corpus.in_vocab(vocab)
    assert recoded.vocab == vocab and recoded.fingerprint == corpus.fingerprint
    assert vocab.decode(np.asarray(recoded.ids)) == CHILD_TEXT
    assert corpus.in_vocab(corpus.vocab) is corpus
    if kind == "prepared":  # a second file beside the ids, reused
        assert recoded.ids_path.parent == corpus.ids_path.parent and recoded.ids_path != corpus.ids_path
        again = prepare_corpus(path).in_vocab(vocab)
        assert again.ids_path == recoded.ids_path
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        corpus.in_vocab(Vocab.from_text(PARENT_TEXT))


def parent_checkpoint(tmp_path, cell, layers, dtype="float64", steps=6):
    corpus = load_corpus(write(tmp_path / "p.txt", PARENT_TEXT))
    config = TrainConfig(hidden_size=8, seq_length=6, seed=2, cell=cell, num_layers=layers, dtype=dtype,
                         batch_size=2, threads=1, optimizer="adagrad" if cell == "rnn" else "adam")
    trainer = Trainer(corpus, config)
    trainer.train(steps)
    return save_checkpoint(tmp_path / "p.npz", trainer)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("cell, layers", [("rnn", 1), ("rnn", 2), ("lstm", 2), ("gru", 1)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_fine_tuned_model_starts_from_the_parents_weights_and_a_fresh_models_new_rows(tmp_path, cell, layers,
                                                                                          dtype):
    parent = load_checkpoint(parent_checkpoint(tmp_path, cell, layers))
    corpus = load_corpus(write(tmp_path / "c.txt", CHILD_TEXT))
    config = TrainConfig(hidden_size=8, seq_length=6, seed=9, cell=cell, num_layers=layers, dtype=dtype,
                         batch_size=2, threads=1)
    trainer = fine_tune(parent, corpus, config)
    V, V2 = len(parent.vocab), len(trainer.vocab)
    assert V2 > V and np.array_equal(trainer.vocab.codes[:V], parent.vocab.codes)
    fresh = check_model(init_params(V2, 8, cell, layers, seed=9, dtype=np.dtype(dtype)))
    for name, a in trainer.params.arrays.items():
        old, new = parent.state.params.arrays[name], fresh.arrays[name]
        assert a.dtype == np.dtype(dtype)
        if a.shape == old.shape:
            np.testing.assert_array_equal(a, old.astype(dtype), err_msg=name)
        else:  # the vocabulary's axis: the parent's part, then the fresh model's
            axis = [i for i, (s, t) in enumerate(zip(old.shape, a.shape)) if s != t][0]
            np.testing.assert_array_equal(np.take(a, range(V), axis), old.astype(dtype), err_msg=name)
            np.testing.assert_array_equal(np.take(a, range(V, V2), axis), np.take(new, range(V, V2), axis))
    assert trainer.n == 0 and all(not b.flat.any() for b in trainer.opt_state)
    assert trainer.parent["sha256"] == file_sha256(parent.path).sha256 and trainer.parent["step"] == 6
    trainer.train(3)  # it trains on the new text, in the extended ids
    assert trainer.is_finite() and trainer.vocab.decode(np.asarray(trainer.train_ids)) == CHILD_TEXT[:len(
        trainer.train_ids)]
    with pytest.raises(ConfigError, match="hidden-size 16 is not the parent's 8"):
        fine_tune(parent, corpus, TrainConfig(hidden_size=16, cell=cell, num_layers=layers))
    with pytest.raises(ValueError, match="does not fit"):
        grafted(check_model(init_params(V, 4, cell, layers, seed=1)), parent.state.params)


def test_init_from_on_the_command_line_resumes_exactly_and_info_names_the_parent(tmp_path):
    write(tmp_path / "p.txt", PARENT_TEXT)
    write(tmp_path / "c.txt", CHILD_TEXT)
    r = fastrnn("train", "p.txt", *SMALL, "--model", "lstm", "--steps", 20, "--checkpoint", "p.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    parent = load_checkpoint(tmp_path / "p.npz")
    run = ["c.txt", "--init-from", "p.npz", "--seed", "7", "--sample-every", "0", "--eval-every", "10",
           "--decay-steps", "20", "--seq-length", "6", "--batch-size", "4"]
    r = fastrnn("train", *run, "--steps", 20, "--checkpoint", "whole.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "fine-tuning" in r.stdout and "new symbols appended to its" in r.stdout
    whole = load_checkpoint(tmp_path / "whole.npz")
    c = whole.config
    assert (c.cell, c.num_layers, c.hidden_size, c.dtype) == ("lstm", 2, 8, "float32")  # the parent's
    assert c.lr_schedule == "cosine" and c.warmup_steps > 0  # the recipe's, from step 0
    assert np.array_equal(whole.vocab.codes[:len(parent.vocab)], parent.vocab.codes)
    assert whole.parent == {"path": str(tmp_path / "p.npz"), "length": (tmp_path / "p.npz").stat().st_size,
                            "sha256": file_sha256(tmp_path / "p.npz").sha256, "step": 20,
                            "corpus": str(tmp_path / "p.txt")}
    r = fastrnn("train", *run, "--steps", 10 ** 6, "--checkpoint", "budget.npz", "--time-budget", 3, cwd=tmp_path)
    assert r.returncode == 0 and load_checkpoint(tmp_path / "budget.npz").parent == whole.parent, r.stderr
    r = fastrnn("train", *run, "--steps", 10, "--checkpoint", "half.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = fastrnn("train", "--resume", "half.npz", "--steps", 20, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    half = load_checkpoint(tmp_path / "half.npz")
    assert half.parent == whole.parent and half.vocab == whole.vocab
    assert np.array_equal(half.state.params.flat, whole.state.params.flat)  # a resumed fine-tuning is exact
    info = fastrnn("info", "half.npz", "--json", cwd=tmp_path)
    assert info.returncode == 0 and json.loads(info.stdout)["parent"] == whole.parent, info.stderr
    text = fastrnn("info", "half.npz", cwd=tmp_path).stdout
    assert f"fine-tuned from {tmp_path / 'p.npz'} at its step 20" in text
    items = fastrnn("sample", "half.npz", "--lines", 2, "--novel", "--max-draws", 200, "--seed", 1, cwd=tmp_path)
    assert items.returncode in (0, 1) and "draws" in items.stderr, items.stderr  # --novel reads c.txt recoded


@pytest.mark.parametrize("flags, message", [
    (["--resume", "p.npz"], "give one of them"),
    (["--bytes"], "models characters: drop --bytes"),
    (["--hidden-size", "9", "--model", "gru"], "--model gru (checkpoint: rnn); --hidden-size 9 (checkpoint: 8) "
                                               "contradict"),
    (["--checkpoint", "p.npz", "--overwrite"], "is the --init-from file itself"),
    (["--beta1", "0.8"], "does not use it"),  # the parent's cell's recipe (adagrad for an rnn)
], ids=["with-resume", "bytes", "architecture", "over-parent", "unused-option"])
def test_what_cannot_be_fine_tuned_is_one_line_and_exit_2(tmp_path, flags, message):
    write(tmp_path / "p.txt", PARENT_TEXT)
    write(tmp_path / "c.txt", CHILD_TEXT)
    assert fastrnn("train", "p.txt", *SMALL, "--steps", 5, "--checkpoint", "p.npz", cwd=tmp_path).returncode == 0
    r = fastrnn("train", "c.txt", "--init-from", "p.npz", *flags, "--steps", 5, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr


@pytest.mark.parametrize("content, message", [(None, "does not exist"), (b"not a zip", "not a usable fastrnn"),
                                              ("bytes-model", "models raw bytes: pass --bytes")],
                         ids=["missing", "damaged", "bytes-parent"])
def test_a_parent_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, content, message):
    write(tmp_path / "c.txt", CHILD_TEXT)
    if content == "bytes-model":
        write(tmp_path / "p.txt", PARENT_TEXT)
        assert fastrnn("train", "p.txt", "--bytes", *SMALL, "--steps", 5, "--checkpoint", "p.npz",
                       cwd=tmp_path).returncode == 0
    elif content is not None:
        (tmp_path / "p.npz").write_bytes(content)
    r = fastrnn("train", "c.txt", "--init-from", "p.npz", "--steps", 5, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (tmp_path / "c.ckpt.npz").exists()


def test_mpiexec_fine_tunes_as_one_process(mpiexec, tmp_path):  # noqa: F811 (the fixture)
    """2 ranks x 1 thread fine-tune bit for bit as 1 process x 2 threads (the seed's case)."""
    parent = parent_checkpoint(tmp_path, "rnn", 1)
    child = load_corpus(write(tmp_path / "c.txt", CHILD_TEXT))
    one = fine_tune(load_checkpoint(parent), child, TrainConfig(hidden_size=8, seq_length=6, batch_size=4,
                                                                seed=3, threads=2))
    one.train(30)
    r = run_mpi(mpiexec, 2, "train", "c.txt", "--init-from", "p.npz", "--hidden-size", 8, "--seq-length", 6,
                "--batch-size", 4, "--seed", 3, "--threads", 1, "--steps", 30, "--sample-every", 0,
                "--eval-every", 0, "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_same_run(load_checkpoint(tmp_path / "m.npz").trainer(child), one, exact=True)
