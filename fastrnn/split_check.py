"""Warnings about what validation measures: a held-out split unlike the training split, a model that works
only from the hidden state training carried, and validation rising while the training loss falls.

The held-out split is the text's tail (``--val-fraction``), so a text whose parts differ (a list sorted
alphabetically, files concatenated by kind) holds out something the training split does not show.
:func:`compare_split` measures that before training, with a character-pair (bigram) model fit on the
training split: its bits/char on the held-out split against its bits/char on blocks spread over the
training split that it was not fit on (the control). On ordinary prose and code the two differ by
less than half a bit; on an alphabetically sorted list of names by about one bit or more.

:class:`HeldOutWatch` is what ``fastrnn train`` calls: :meth:`HeldOutWatch.start` once before training,
:meth:`HeldOutWatch.after_validation` after each validation; each returns warning texts (each kind at
most once a run). The decisions are pure functions of measured numbers (:func:`split_warning`,
:func:`state_warning`, :func:`overfit_warning`); only the watch touches a trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SHIFT_WARN_BITS = 0.75  # warn when the held-out split costs this many more bits/char than the control
UNSEEN_WARN_FRACTION = 0.01  # ... or when this fraction of it is symbols the training split never has
MIN_HELD_OUT = 100  # fewer held-out symbols than this: too few to judge, no split warning
MAX_CHECK_IDS = 1 << 20  # ids read from each split at most (spread blocks): a huge corpus costs < 1 s
CHECK_BLOCKS = 64  # blocks a sample or the control is cut into
UNIGRAM_PRIOR = 0.5  # add-alpha smoothing of the unigram
BIGRAM_PRIOR = 1.0  # weight of the unigram in each bigram row (Dirichlet prior)
GAP_WARN_BITS = 1.0  # validation this far above the training loss: look at the hidden state
STATE_SLICE = 10_000  # held-out symbols scored from the carried and from the zero state to compare
RISES_TO_WARN = 3  # validations in a row above the lowest (with the training loss falling) before saying so
MIN_RISE_FRACTION = 0.01  # ... each by at least this fraction of the lowest


def spread_blocks(length: int, total: int, blocks: int = CHECK_BLOCKS) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: up to ``blocks`` blocks of ~``total / blocks`` positions spread evenly over
    ``range(length)`` (one block ``(0, length)`` when ``total >= length``); each block at least 2 long."""
    if total >= length:
        return [(0, length)]
    size = max(total // blocks, 2)
    count = max(min(blocks, total // size), 1)
    starts = np.linspace(0, length - size, count).astype(np.int64)
    return [(int(s), int(s) + size) for s in starts]


def _pairs(ids, spans):
    """(firsts, seconds) int64 of the adjacent pairs inside each span of ``ids`` (none across spans)."""
    parts = [np.asarray(ids[a:b], np.int64) for a, b in spans]
    firsts = np.concatenate([p[:-1] for p in parts]) if parts else np.zeros(0, np.int64)
    seconds = np.concatenate([p[1:] for p in parts]) if parts else np.zeros(0, np.int64)
    return firsts, seconds


class BigramModel:
    """A character-pair model: ``p(b | a) = (c(a, b) + beta * u(b)) / (c(a) + beta)``, ``u`` the add-alpha
    unigram; fit on pairs ``(firsts, seconds)`` (int64 arrays of ids < ``vocab_size``)."""

    def __init__(self, firsts, seconds, vocab_size):
        self.vocab_size = int(vocab_size)
        counts = np.bincount(seconds, minlength=self.vocab_size).astype(np.float64)
        self.unigram = (counts + UNIGRAM_PRIOR) / (counts.sum() + UNIGRAM_PRIOR * self.vocab_size)
        self.context = np.bincount(firsts, minlength=self.vocab_size).astype(np.float64)
        self.keys, self.pair_counts = np.unique(firsts * self.vocab_size + seconds, return_counts=True)

    def bits(self, firsts, seconds) -> np.ndarray:
        """Bits of each ``seconds[i]`` after ``firsts[i]``: (n,) float64."""
        keys = firsts * self.vocab_size + seconds
        pair = np.zeros(keys.size)
        if self.keys.size:
            at = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
            pair = np.where(self.keys[at] == keys, self.pair_counts[at], 0)
        p = (pair + BIGRAM_PRIOR * self.unigram[seconds]) / (self.context[firsts] + BIGRAM_PRIOR)
        return -np.log2(p)


@dataclass(frozen=True)
class SplitComparison:
    """How the held-out split looks next to the training split (:func:`compare_split`).

    ``held_out_bits``: bits/char of the held-out split under a bigram model of the training split;
    ``control_bits``: of blocks spread over the training split, under the model of the rest of it;
    ``unseen``: {symbol id: count} of held-out symbols (of those read) that the training split never has
    (empty when the training split was too long to read whole);
    ``held_out_count``: held-out symbols (all of them, not only those read).
    """

    held_out_bits: float
    control_bits: float
    unseen: dict
    held_out_count: int
    read_count: int  # held-out symbols read for the measure

    @property
    def shift_bits(self) -> float:
        """How many more bits/char the held-out split costs than the control: ~0 when the text is alike."""
        return self.held_out_bits - self.control_bits

    @property
    def unseen_fraction(self) -> float:
        return sum(self.unseen.values()) / max(self.read_count, 1)


def compare_split(train_ids, held_out_ids, vocab_size, max_ids=MAX_CHECK_IDS) -> SplitComparison | None:
    """Compare the held-out split with the training split; None when fewer than ``MIN_HELD_OUT`` are held out.

    ``train_ids``/``held_out_ids``: integer arrays (e.g. memmap slices) of ids < ``vocab_size``; at most
    ``max_ids`` of each are read, in blocks spread over it (:func:`spread_blocks`). The control is as
    many training symbols as held-out ones read (at most a quarter of those read from the training
    split), in blocks spread over it; the model it is scored under is fit on the rest.
    """
    n_held, n_train = int(held_out_ids.shape[0]), int(train_ids.shape[0])
    if n_held < MIN_HELD_OUT or n_train < 4:
        return None
    held_spans = spread_blocks(n_held, max_ids)
    held_firsts, held_seconds = _pairs(held_out_ids, held_spans)
    if held_spans == [(0, n_held)]:  # the whole held-out split: its first symbol follows the training split's last
        held_firsts = np.concatenate([np.asarray(train_ids[-1:], np.int64), held_firsts])
        held_seconds = np.concatenate([np.asarray(held_out_ids[:1], np.int64), held_seconds])
    read = int(held_seconds.size)
    train_spans = spread_blocks(n_train, max_ids)
    sample = np.concatenate([np.asarray(train_ids[a:b], np.int64) for a, b in train_spans])
    control_spans = spread_blocks(sample.size, min(read, sample.size // 4))
    in_control = np.zeros(sample.size, bool)
    for a, b in control_spans:
        in_control[a:b] = True
    # pairs within the sample's own blocks only: a pair across two training blocks is not in the text
    offsets = np.cumsum([0] + [b - a for a, b in train_spans])
    sample_spans = list(zip(offsets[:-1].tolist(), offsets[1:].tolist()))
    firsts, seconds = _pairs(sample, sample_spans)
    pair_control = _pairs(in_control, sample_spans)[1].astype(bool)  # a pair is the control's when its second symbol is
    rest = BigramModel(firsts[~pair_control], seconds[~pair_control], vocab_size)
    control_bits = float(rest.bits(firsts[pair_control], seconds[pair_control]).mean())
    whole = BigramModel(firsts, seconds, vocab_size)
    held_out_bits = float(whole.bits(held_firsts, held_seconds).mean())
    unseen = {}
    if sample.size == n_train:  # the whole training split was read: which held-out symbols it never has
        held_counts = np.bincount(held_seconds, minlength=vocab_size)
        trained = np.bincount(sample, minlength=vocab_size) > 0
        unseen = {int(i): int(held_counts[i]) for i in np.flatnonzero((held_counts > 0) & ~trained)}
    return SplitComparison(held_out_bits, control_bits, unseen, n_held, read)


def _symbol_list(symbols, limit=8) -> str:
    shown = ", ".join(repr(s) for s in symbols[:limit])
    return shown + (f" and {len(symbols) - limit} more" if len(symbols) > limit else "")


def split_warning(comparison: SplitComparison | None, val_fraction: float, decode_symbol=str) -> str | None:
    """The warning text when the held-out split looks unlike the training split, else None.

    Fires when ``comparison.shift_bits >= SHIFT_WARN_BITS`` or ``unseen_fraction >= UNSEEN_WARN_FRACTION``.
    ``decode_symbol(id)``: the symbol's text, for the list of unseen ones.
    """
    if comparison is None:
        return None
    c = comparison
    shifted, unseen = c.shift_bits >= SHIFT_WARN_BITS, c.unseen_fraction >= UNSEEN_WARN_FRACTION
    if not (shifted or unseen):
        return None
    what = [f"a character-pair model of the training split predicts it {c.held_out_bits:.2f} bits/char, "
            f"{c.shift_bits:+.2f} against parts of the training split it was not fit on"]
    if c.unseen:
        symbols = sorted(c.unseen, key=lambda i: -c.unseen[i])
        what.append(f"{c.unseen_fraction:.1%} of it is symbols the training split never has: "
                    + _symbol_list([decode_symbol(i) for i in symbols]))
    return (f"the held-out split (the last {val_fraction * 100:g}% of the text, {c.held_out_count:,} symbols) looks unlike "
            f"the training split: {'; '.join(what)}; validation will measure that difference rather than "
            f"learning (is the text sorted, e.g. a list of names?); shuffle its lines (e.g. shuf in.txt > "
            f"shuffled.txt) or hold out another way (--val-fraction 0, then fastrnn eval CHECKPOINT "
            f"other-text.txt)")


def state_warning(step, val_bits, train_bits, uniform_bits, zero_bits, carried_bits, sliced, next_reset):
    """The warning text when validation fails from a zero hidden state but not from the carried one, else None.

    ``val_bits``: the validation (from zero); ``train_bits``: the smoothed training loss;
    ``zero_bits``/``carried_bits``: the first ``sliced`` held-out symbols scored from a zero state and
    from the state training carried; ``next_reset``: the step whose pass over the text starts from a
    zero state again (None: unknown). Fires when ``val_bits >= train_bits + GAP_WARN_BITS``,
    ``zero_bits >= carried_bits + GAP_WARN_BITS`` and the carried state beats a uniform guess
    (``carried_bits < uniform_bits``: a model blowing up fails from every state, and is warned of elsewhere).
    """
    if not (val_bits >= train_bits + GAP_WARN_BITS and zero_bits >= carried_bits + GAP_WARN_BITS
            and carried_bits < uniform_bits):
        return None
    worse = f", worse than a uniform guess's {uniform_bits:.2f}," if val_bits > uniform_bits else ""
    when = f" (step {next_reset:,})" if next_reset is not None else ""
    return (f"at step {step:,} validation is {val_bits:.2f} bits/char{worse} against a training loss of "
            f"{train_bits:.2f}: from the hidden state training carries, the first {sliced:,} held-out symbols "
            f"score {carried_bits:.2f} bits/char, from a zero state (where validation, eval and sample start) "
            f"{zero_bits:.2f}; the model was trained only from carried states (zero only where a pass over the "
            f"text starts), so as saved it is as poor as validation says; in the runs measured, training "
            f"repaired this by its next pass over the text, which starts from zero{when}")


def overfit_warning(history, epochs) -> str | None:
    """The warning text when validation has stayed above its lowest for ``RISES_TO_WARN`` validations in a row
    while the training loss fell, else None.

    ``history``: ``[(step, train_bits, val_bits), ...]`` of the validations so far, oldest first;
    ``epochs``: passes over the training split done. Fires when the lowest validation came before the last
    ``RISES_TO_WARN``, each of which is above it by at least ``MIN_RISE_FRACTION`` of it, the training
    loss is lower now than then, and at least one pass is done (before it, no text was seen twice).
    """
    if len(history) <= RISES_TO_WARN or epochs < 1:
        return None
    best = min(range(len(history)), key=lambda i: history[i][2])
    step, train_bits, val_bits = history[best]
    last = history[-RISES_TO_WARN:]
    if best >= len(history) - RISES_TO_WARN or last[-1][1] >= train_bits:
        return None
    if not all(v >= val_bits * (1 + MIN_RISE_FRACTION) for _, _, v in last):
        return None
    now_step, now_train, now_val = history[-1]
    return (f"validation has stayed above its lowest, {val_bits:.3f} bits/char at step {step:,}, for "
            f"{RISES_TO_WARN} validations (now {now_val:.3f} at step {now_step:,}) while the training loss fell "
            f"{train_bits:.3f} -> {now_train:.3f}: the model is memorizing the training text ({epochs:,.1f} "
            f"passes over it so far), and more steps will not help; use a longer text, a smaller model, "
            f"--dropout, or fewer steps (--keep-best keeps the best model, --patience stops in time)")


class HeldOutWatch:
    """What ``fastrnn train`` asks about its held-out split: :meth:`start` (before training) and
    :meth:`after_validation`; both return a list of warning texts, each kind at most once."""

    def __init__(self):
        self.history = []  # (step, train_bits, val_bits)
        self.warned = set()

    def start(self, trainer) -> list[str]:
        """The held-out split against the training split (:func:`compare_split`)."""
        vocab = trainer.vocab
        comparison = compare_split(trainer.train_ids, trainer.val_targets, len(vocab))
        text = split_warning(comparison, trainer.config.val_fraction, lambda i: _symbol_text(vocab, i))
        if text is not None:
            self.warned.add("split")
        return [text] if text is not None else []

    def after_validation(self, trainer, score) -> list[str]:
        """Warnings after a validation ``score`` (a :class:`fastrnn.charmodel.Score`, or None: nothing to say)."""
        if score is None:
            return []
        ln2 = math.log(2.0)
        step, train_bits, val_bits = trainer.n, trainer.smooth_loss_per_char / ln2, score.bits_per_char
        self.history.append((step, train_bits, val_bits))
        out = []
        if "state" not in self.warned and val_bits >= train_bits + GAP_WARN_BITS:
            zero_bits, carried_bits, sliced = carried_state_scores(trainer)
            steps_per_pass = trainer.num_starts
            next_reset = (step // steps_per_pass + 1) * steps_per_pass
            uniform = math.log2(len(trainer.vocab)) if len(trainer.vocab) > 1 else 0.0
            text = state_warning(step, val_bits, train_bits, uniform, zero_bits, carried_bits, sliced, next_reset)
            if text is not None:
                self.warned.add("state")
                out.append(text)
        if "overfit" not in self.warned:
            epochs = step * trainer.chars_per_step / max(int(trainer.train_ids.shape[0]), 1)
            text = overfit_warning(self.history, epochs)
            if text is not None:
                self.warned.add("overfit")
                out.append(text)
        return out


def carried_state_scores(trainer, length=STATE_SLICE):
    """``(zero_bits, carried_bits, count)``: the first ``count`` (<= ``length``) held-out symbols scored from a
    zero hidden state and from stream 0's current state (the one training carries), in bits/char."""
    from . import inference

    count = min(int(length), int(trainer.val_targets.shape[0]))
    x, y = trainer.val_inputs[:count], trainer.val_targets[:count]
    carried = tuple(np.ascontiguousarray(h[:, :1]) for h in trainer.hidden)
    nats = [inference.sequence_loss(trainer.params, x, y, state)[0] for state in (None, carried)]
    zero_bits, carried_bits = (n / count / math.log(2.0) for n in nats)
    return zero_bits, carried_bits, count


def _symbol_text(vocab, i) -> str:
    text = vocab.decode(np.array([i]))
    return text.decode("latin-1") if isinstance(text, bytes) else text
