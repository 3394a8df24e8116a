"""What validation can and cannot tell: the held-out split against the training split, a model that works only
from the carried hidden state, validation rising while training falls (fastrnn.split_check, and its warnings
from ``fastrnn train``)."""
from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pytest

from fastrnn.corpus import Corpus, load_corpus
from fastrnn.split_check import (
    GAP_WARN_BITS, MIN_HELD_OUT, SHIFT_WARN_BITS, HeldOutWatch, compare_split, overfit_warning, spread_blocks,
    split_warning, state_warning,
)
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from conftest import CORPUS, YORK_TEXT

ONSETS = ["b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch",
          "cl", "st", "tr", "sh", "th", "kr", "gr", "fl"]
VOWELS = ["a", "e", "i", "o", "u", "y", "ae", "ia", "ou", "ee", "ai"]
CODAS = ["n", "r", "l", "s", "th", "x", "m", "d", "tt", "ne", "lla", "son", "ton", "ra", "el", "ine", "ie", "o"]


def names(count, seed=0, capitalized=True):
    """``count`` distinct made-up names ('Abrisoson', ..., 'Zyfoud'), sorted alphabetically."""
    rng = random.Random(seed)
    out = set()
    while len(out) < count:
        name = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) for _ in range(rng.randint(1, 3))) + rng.choice(CODAS)
        if rng.random() < 0.3:
            name = rng.choice(VOWELS) + name
        out.add(name.capitalize() if capitalized else name)
    return sorted(out)


def name_list(count=400, capitalized=True, shuffled=False):
    lines = names(count, capitalized=capitalized)
    if shuffled:
        random.Random(1).shuffle(lines)
    return "\n".join(lines) + "\n"


def comparison_of(text, val_fraction):
    corpus = Corpus.from_text(text)
    train, _, held_out = corpus.split(val_fraction)
    return compare_split(train, held_out, len(corpus.vocab)), corpus


# --- the held-out split against the training split ----------------------------------------------------------

@pytest.mark.parametrize("capitalized", [True, False], ids=["Capitalized", "lowercase"])
@pytest.mark.parametrize("val_fraction", [0.1, 0.2])
def test_a_sorted_list_of_names_holds_out_something_else(capitalized, val_fraction):
    c, corpus = comparison_of(name_list(capitalized=capitalized), val_fraction)
    assert c.shift_bits >= SHIFT_WARN_BITS
    text = split_warning(c, val_fraction, lambda i: corpus.vocab.decode(np.array([i])))
    assert text is not None and "shuffle its lines" in text
    if capitalized:  # the last letters' capitals never start a name in the training split
        assert c.unseen and "'Z'" in text


@pytest.mark.parametrize("capitalized", [True, False], ids=["Capitalized", "lowercase"])
@pytest.mark.parametrize("val_fraction", [0.1, 0.2])
def test_the_same_names_shuffled_hold_out_the_same_kind(capitalized, val_fraction):
    c, _ = comparison_of(name_list(capitalized=capitalized, shuffled=True), val_fraction)
    assert abs(c.shift_bits) < SHIFT_WARN_BITS / 2 and not c.unseen
    assert split_warning(c, val_fraction) is None


@pytest.mark.parametrize("val_fraction", [0.05, 0.1, 0.2])
def test_tiny_shakespeare_is_alike(val_fraction):
    corpus = load_corpus()
    train, _, held_out = corpus.split(val_fraction)
    c = compare_split(train, held_out, len(corpus.vocab))
    assert abs(c.shift_bits) < 0.2 and not c.unseen  # measured: +0.05 to +0.09
    assert split_warning(c, val_fraction) is None


def test_too_little_held_out_to_judge():
    corpus = Corpus.from_text(YORK_TEXT)  # 978 characters: 48 held out at 0.05
    train, _, held_out = corpus.split(0.05)
    assert held_out.size < MIN_HELD_OUT
    assert compare_split(train, held_out, len(corpus.vocab)) is None
    assert split_warning(None, 0.05) is None


def test_reads_a_bounded_sample_of_a_long_split():
    """A long split is read in spread blocks (any integer dtype): the measure stays that of the whole text."""
    ids = np.tile(np.arange(7, dtype=np.uint16), 200_000)  # the same text throughout: no shift
    c = compare_split(ids[:1_300_000], ids[1_300_000:], 7, max_ids=10_000)
    assert c.read_count <= 10_000 and c.held_out_count == 100_000
    assert abs(c.shift_bits) < 0.01


@pytest.mark.parametrize("length, total", [(100, 1000), (100, 100), (10_000, 640), (10_000, 10), (50, 3)])
def test_spread_blocks_cover_at_most_total_in_order(length, total):
    spans = spread_blocks(length, total)
    assert all(0 <= a < b <= length for a, b in spans)
    assert all(b1 <= a2 for (_, b1), (a2, _) in zip(spans, spans[1:]))
    covered = sum(b - a for a, b in spans)
    assert covered == length if total >= length else covered <= max(total, 2)


# --- validation from a zero state against the carried state ------------------------------------------------

def test_state_warning_needs_both_gaps():
    args = dict(step=5000, val_bits=7.55, train_bits=3.26, uniform_bits=6.02, sliced=10_000, next_reset=42_384)
    text = state_warning(zero_bits=7.49, carried_bits=3.63, **args)
    assert "worse than a uniform guess's 6.02" in text and "3.63" in text and "step 42,384" in text
    assert state_warning(zero_bits=7.49, carried_bits=7.2, **args) is None  # not the state: the text itself
    assert state_warning(zero_bits=7.49, carried_bits=3.63, **{**args, "val_bits": 3.26 + GAP_WARN_BITS - 0.01}) is None
    blown_up = dict(args, val_bits=1e300, train_bits=1e299)  # fails from every state: the loss watch says so
    assert state_warning(zero_bits=1e300, carried_bits=1e298, **blown_up) is None


def bistable_trainer():
    """A seed-model trainer on 'b' + 'a' * 1999 whose single hidden unit keeps its sign (Whh 5): from +1 it
    predicts 'a', from a zero state bh pulls it to -1, where it predicts 'b'."""
    corpus = Corpus.from_text("b" + "a" * 1999)
    trainer = Trainer(corpus, TrainConfig(hidden_size=1, seq_length=10, seed=0))
    a, b = (int(i) for i in corpus.vocab.encode("ab"))
    p = trainer.params.as_seed()
    p.Wxh[:] = 0
    p.Whh[:] = 5.0
    p.bh[:] = -0.5
    p.Why[a, 0], p.Why[b, 0] = 5.0, -5.0
    p.by[:] = 0
    trainer.hidden[0][...] = 1.0
    trainer.smooth_loss = 0.01 * trainer.config.seq_length
    return trainer


def test_watch_says_when_only_the_carried_state_works():
    trainer = bistable_trainer()
    watch = HeldOutWatch()
    assert watch.start(trainer) == []
    score = trainer.validation_loss()
    assert score.bits_per_char > 10  # from zero: 'b' predicted
    (text,) = watch.after_validation(trainer, score)
    assert text.startswith("at step 0 validation is ")
    assert "from the hidden state training carries, the first 100 held-out symbols score 0.00 bits/char" in text
    assert watch.after_validation(trainer, score) == []  # once a run


# --- validation rising while training falls ---------------------------------------------------------------

RISING = [(1000, 3.0, 2.00), (2000, 2.9, 2.05), (3000, 2.5, 2.10), (4000, 2.0, 2.30)]


@pytest.mark.parametrize("history, epochs, fires", [
    (RISING, 12.3, True),
    (RISING, 0.9, False),  # before a whole pass nothing was seen twice
    (RISING[1:], 12.3, False),  # two validations after the lowest only
    ([(s, 1.0 + i, v) for i, (s, _, v) in enumerate(RISING)], 12.3, False),  # training rose too
    ([(s, t, 2.0 + i * 0.001) for i, (s, t, _) in enumerate(RISING)], 12.3, False),  # a rise within noise
    ([(1000, 3.0, 2.0), (2000, 2.9, 2.1), (3000, 2.5, 2.05), (4000, 2.0, 2.3)], 12.3, True),  # up and down, above
    ([(1000, 3.0, 2.0), (2000, 2.9, 2.1), (3000, 2.5, 1.95), (4000, 2.0, 2.3)], 12.3, False),  # a new lowest
])
def test_overfit_warning(history, epochs, fires):
    text = overfit_warning(history, epochs)
    assert (text is not None) == fires
    if fires:
        assert text.startswith("validation has stayed above its lowest, 2.000 bits/char at step 1,000, for 3 ")
        assert f"({epochs:,.1f} passes over it so far)" in text


# --- through the command -----------------------------------------------------------------------------------

def train(corpus, cwd, *flags):
    corpus_args = [str(corpus)] if corpus is not None else []
    return subprocess.run([sys.executable, "-m", "fastrnn", "train", *corpus_args, "--hidden-size", "16",
                           "--seq-length", "10", "--seed", "1", "--steps", "20", "--sample-every", "0", "--quiet",
                           *flags], cwd=cwd, capture_output=True, text=True, timeout=180)


def test_train_warns_about_a_sorted_list_of_names(tmp_path):
    (tmp_path / "names.txt").write_text(name_list(), encoding="utf-8")
    r = train("names.txt", tmp_path, "--val-fraction", "0.1")
    assert r.returncode == 0, r.stderr
    first = r.stderr.splitlines()[0]
    assert first.startswith("fastrnn train: warning: the held-out split (the last 10% of the text, ")
    assert "shuffle its lines" in first


def test_train_warns_when_validation_rises_over_many_passes(tmp_path):
    """2,000 characters of tiny shakespeare, 8,000 steps of the seed's model: ~105 passes; validation is lowest
    near step 1,500-2,500 (3.5-3.7 bits/char, seeds 1-4) and rises while the training loss falls."""
    (tmp_path / "small.txt").write_text(CORPUS.read_text(encoding="utf-8")[:2000], encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "fastrnn", "train", "small.txt", "--seed", "1", "--steps", "8000",
                        "--eval-every", "500", "--sample-every", "0", "--quiet"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (line,) = r.stderr.splitlines()
    assert line.startswith("fastrnn train: warning: validation has stayed above its lowest, ")
    assert "passes over it so far" in line


@pytest.mark.parametrize("which", ["york", "tinyshakespeare"])
def test_train_says_nothing_about_an_ordinary_text(tmp_path, corpus_file, which):
    corpus = corpus_file if which == "york" else None  # None: the embedded tiny shakespeare
    r = train(corpus, tmp_path, "--val-fraction", "0.2", "--checkpoint", "m.npz")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
