"""The seed's training loop over a corpus, made fast: :class:`Trainer`, :class:`TrainConfig`, :class:`CharModel`.

With the defaults this is min-char-rnn's loop step for step, on the training
split: the data pointer ``p`` advances by ``seq_length``; the hidden state is
carried from one step to the next; both are reset to the start of the data when
``p + seq_length + 1 >= len(train)`` (and at ``n == 0``); each step is one
sequence with the seed's clip and Adagrad; ``smooth_loss`` starts at
``-log(1/V) * seq_length`` and decays by 0.999.

One difference of bookkeeping, not of arithmetic: the reset is applied right
after a step instead of at the top of the next one, so the state between steps
(what a checkpoint holds) is always ready for step ``n``.

The hot loop hands the kernels blocks of steps (``starts``/``resets``), so the
per-step Python overhead is a few slices at most; see :meth:`Trainer._advance`.

Batches (``batch_size`` B > 1, as char-rnn's CharSplitLMMinibatchLoader): the
training split of length L is cut into B contiguous shards of ``S = L // B``
symbols (the last ``L % B`` are not trained on); stream b walks its shard with
the seed's rule (pointer ``p`` within the shard, reset of pointer and hidden
state ``hprev[b]`` when ``p + seq_length + 1 >= S``) and all streams move in
lockstep, so they share ``p`` and reset together. Each step is one
:func:`fastrnn.batch.batch_train_steps` step over the B windows; its loss is
summed over the B * T characters and divided by B, so ``loss / seq_length``
stays comparable to batch 1. B = 1 is the seed's loop above, on the batch-1
kernel, unchanged.

Per block of steps only the ids the block touches are gathered into a small
int64 buffer (:func:`_gather_windows`), so ``train_ids`` may be any integer
array, e.g. a ``numpy.memmap`` of uint8/uint16/uint32 ids. Validation reads the
held-out split the same way, ``SCORE_WINDOW`` ids at a time (:func:`score_windows`),
and a corpus with ``release_pages`` (a :class:`~fastrnn.prepared.PreparedCorpus`)
has its mapped pages dropped after each block and each validation window, so
memory stays bounded however large the corpus.
"""
from __future__ import annotations

import math
import os
import secrets
import time
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from . import rnn
from ._aligned import aligned_copy, aligned_zeros
from .corpus import Corpus, held_out_count
from . import engine
from .model import CELLS, ModelParams, ModelSpec, describe, init_model
from .optim import DEFAULT_LEARNING_RATE, OPTIMIZERS, SCHEDULES, Optimizer, scheduled_rate
from .params import Params, init_params
from .vocab import Vocab

LN2 = math.log(2.0)
BLOCK_STEPS = 256  # steps per kernel call: amortises the call, keeps Ctrl-C latency ~ tens of ms
ENGINE_BLOCK_STEPS = 8  # the engine's steps are ms to 100s of ms each: shorter blocks keep Ctrl-C and deadlines prompt
SCORE_WINDOW = 1 << 20  # ids per forward-only kernel call when scoring: an 8 MB int64 copy at most


def score_windows(params, inputs, targets, per_char=False, window=SCORE_WINDOW, after_window=None):
    """``(nats, count, log_probs or None)`` of ``targets`` given ``inputs``, from a zero hidden state.

    ``inputs``/``targets`` may be any integer arrays (e.g. memmap slices): they are
    read, and copied to int64 by :mod:`.rnn`, ``window`` ids at a time, with the
    hidden state carried across windows. The result is that of one pass over the
    whole sequence but for summation order: each window's loss is accumulated in
    float64 by the kernel, and the windows' losses are summed here in float64
    (with a single window the result is identical).
    ``after_window()``, if given, runs after each window (e.g. to release pages).
    """
    inputs = inputs if hasattr(inputs, "dtype") else np.asarray(inputs)
    targets = targets if hasattr(targets, "dtype") else np.asarray(targets)
    seed = seed_view(params)
    if seed is not None:  # the seed's model: rnn's kernels
        params, h = seed, np.zeros(seed.hidden_size, seed.dtype)
        sequence_loss, log_probs = rnn.sequence_loss, rnn.log_probs
    else:  # any other model: the engine, with its (L, 1, H) state
        h = None
        sequence_loss, log_probs = engine.sequence_loss, engine.log_probs
    count = int(targets.size)
    if inputs.shape != targets.shape or inputs.ndim != 1 or count <= window:  # one call; rnn reports bad shapes
        pairs = [(inputs, targets)]
    else:
        pairs = ((inputs[s:s + window], targets[s:s + window]) for s in range(0, count, window))
    out = np.empty(count, np.float64) if per_char else None
    nats, done = 0.0, 0
    for x, y in pairs:
        if per_char:  # rnn copies each window to int64 and checks its ids
            lp, h = log_probs(params, x, y, h)
            out[done:done + lp.size] = lp
        else:
            loss, h = sequence_loss(params, x, y, h)
            nats += loss
        done += y.size
        if after_window is not None:
            after_window()
    if per_char:
        nats = float(-out.sum())
    return nats, count, out


def seed_view(params):
    """The seed's :class:`Params` of a 1-layer rnn (views of a :class:`ModelParams`), else None."""
    if isinstance(params, Params):
        return params
    return params.as_seed() if params.spec.is_seed else None


class ConfigError(ValueError):
    """Hyperparameters that are invalid, or that do not fit the corpus."""


class TrainingDiverged(RuntimeError):
    """The loss, or the parameters, became NaN or infinite.

    ``step``: the 1-based step whose loss is ``loss`` (NaN or inf); or, when the
    loss stayed finite but an update overflowed, the step count by which the
    parameters were found non-finite (``loss`` is then the last finite loss).
    """

    def __init__(self, step, loss, params_only=False):
        what = (f"the parameters overflowed to NaN or infinity by step {step:,}" if params_only
                else f"the loss of step {step:,} is {loss}")
        super().__init__(f"training diverged: {what} (a lower learning rate may help)")
        self.step, self.loss = step, loss


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the checkpoint stores them and a resumed run must match them.

    ``seed=None`` draws one (recorded, so the run can be repeated). ``val_fraction``:
    the last fraction of the corpus is held out for validation (0: train on all).
    ``batch_size``: streams trained per step (1: the seed's loop). ``threads``: how
    many threads a batched step uses; it also fixes how the batch is cut into
    per-thread chunks, which changes results by rounding only (a resumed run may
    change it; every other field must match the checkpoint). Unused by the seed's
    case at batch 1; off the seed's case (:attr:`seed_exact`) the engine runs that
    many chunks of streams at once (:class:`fastrnn.engine.ParallelWorkspace`).
    ``cell`` (rnn, lstm, gru) and ``num_layers`` say what model; ``optimizer``
    (adagrad, rmsprop, adam) with ``alpha`` (rmsprop), ``beta1``/``beta2`` (adam)
    and ``eps`` how it learns (:mod:`fastrnn.optim`); ``clip`` (by value) or
    ``clip_norm`` (by global norm) how gradients are clipped. ``lr_schedule``
    (constant, cosine), ``warmup_steps``, ``decay_steps`` and ``min_lr_fraction``
    shape the learning rate over the steps (:func:`fastrnn.optim.scheduled_rate`;
    ``decay_steps`` None: not fixed yet, see :meth:`Trainer.fix_decay`).
    """

    hidden_size: int = 100
    seq_length: int = 25
    learning_rate: float | None = None  # None: the optimizer's default (adagrad 0.1, the seed's)
    seed: int | None = None
    dtype: str = "float64"
    val_fraction: float = 0.05
    clip: float | None = 5.0  # clip by value to [-clip, clip]; None: off
    batch_size: int = 1
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    cell: str = "rnn"
    num_layers: int = 1
    optimizer: str = "adagrad"
    alpha: float = 0.95  # rmsprop's smoothing constant
    beta1: float = 0.9  # adam's
    beta2: float = 0.999  # adam's
    eps: float = 1e-8
    clip_norm: float | None = None  # clip by global norm instead of by value; None: off
    lr_schedule: str = "constant"
    warmup_steps: int = 0  # steps of linear warmup to learning_rate
    decay_steps: int | None = None  # cosine: the step at which the rate reaches its floor
    min_lr_fraction: float = 0.1  # cosine: the floor, a fraction of learning_rate
    dropout: float = 0.0  # probability of zeroing each output of each layer in training (seeded masks); 0: off

    def __post_init__(self):
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE.get(self.optimizer, 0.1))

    def spec(self, vocab_size) -> ModelSpec:
        """The :class:`~fastrnn.model.ModelSpec` of this config for a vocabulary of ``vocab_size``."""
        return ModelSpec(self.cell, self.num_layers, vocab_size, self.hidden_size)

    @property
    def optimizer_settings(self) -> Optimizer:
        return Optimizer(self.optimizer, self.learning_rate, self.alpha, self.beta1, self.beta2, self.eps)

    @property
    def seed_exact(self) -> bool:
        """The seed's model and update (1-layer rnn, Adagrad, clip by value): trained by the seed-exact kernels."""
        return (self.cell == "rnn" and self.num_layers == 1 and self.optimizer == "adagrad"
                and self.clip_norm is None and self.clip is not None and not self.scheduled and not self.dropout)

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes over the steps (warmup or a decay)."""
        return self.warmup_steps > 0 or self.lr_schedule != "constant"

    def learning_rate_at(self, step) -> float:
        """The learning rate of the 1-based update ``step``."""
        return scheduled_rate(self.learning_rate, step, self.lr_schedule, self.warmup_steps, self.decay_steps,
                              self.min_lr_fraction)

    def validate(self) -> "TrainConfig":
        for name in ("hidden_size", "seq_length", "batch_size", "threads", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.cell not in CELLS:
            raise ConfigError(f"model must be one of {', '.join(CELLS)}, got {self.cell!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"lr-schedule must be one of {', '.join(SCHEDULES)}, got {self.lr_schedule!r}")
        for name in ("warmup_steps", "decay_steps"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                      or value < 0):
                raise ConfigError(f"{name.replace('_', '-')} must be a non-negative integer, got {value!r}")
        f = self.min_lr_fraction
        if not (isinstance(f, (int, float, np.floating)) and not isinstance(f, bool) and 0 <= f <= 1):
            raise ConfigError(f"min-lr-fraction must be in [0, 1], got {f!r}")
        p = self.dropout
        if not (isinstance(p, (int, float, np.floating)) and not isinstance(p, bool) and 0 <= p < 1):
            raise ConfigError(f"dropout must be in [0, 1), got {p!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("learning_rate", "clip", "clip_norm"):
            value = getattr(self, name)
            if value is None and name != "learning_rate":
                continue
            if not (isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
                    and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive number, got {value!r}")
        if self.clip is not None and self.clip_norm is not None:
            raise ConfigError("clip by value (clip) and by norm (clip-norm) exclude each other; set one")
        for name in unused_options(self.optimizer):
            if getattr(self, name) != _DEFAULTS[name]:
                raise ConfigError(f"{name} is {OPTION_OWNER[name]}'s option; optimizer {self.optimizer} does not use "
                                  f"it (leave it at {_DEFAULTS[name]})")
        try:
            self.optimizer_settings
        except ValueError as e:
            raise ConfigError(str(e).replace("_", "-")) from None
        if self.dtype not in ("float64", "float32"):
            raise ConfigError(f"dtype must be float64 or float32, got {self.dtype!r}")
        vf = self.val_fraction
        if not (isinstance(vf, (int, float, np.floating)) and 0 <= vf < 1):
            raise ConfigError(f"val-fraction must be in [0, 1), got {vf!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        return self

    @classmethod
    def recipe(cls, cell="lstm", time_budget=None, **given) -> "TrainConfig":
        """What ``fastrnn train --model CELL [--time-budget S]`` trains: the cell's recipe for the best held-out
        loss in minutes on a CPU, with the fields ``given`` replacing the recipe's (:func:`recipe_config`).
        ``TrainConfig(cell=...)`` itself is min-char-rnn's defaults for any cell (1 layer of 100, Adagrad,
        float64, batch 1)."""
        return recipe_config(time_budget=time_budget, cell=cell, **given)

    def with_seed(self) -> "TrainConfig":
        """This config with a drawn seed if it had none."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(2**31))

    def to_dict(self) -> dict:
        return asdict(self)


_DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
OPTION_OWNER = {"alpha": "rmsprop", "beta1": "adam", "beta2": "adam"}  # options only one optimizer uses


def unused_options(optimizer) -> tuple:
    """The optimizer options (alpha, beta1, beta2) that ``optimizer`` does not use; each must keep its default."""
    return tuple(name for name, owner in OPTION_OWNER.items() if owner != optimizer)


# What `fastrnn train --model lstm|gru` trains when no other flag says otherwise: the recipe for the best
# held-out loss in minutes on a CPU (README, "A recipe"); `--model rnn` keeps the seed's defaults.
# Chosen by held-out loss after 25 s and 100 s on 2 cores (the closing note of "Time to quality" has the
# trials): a 2x128 stack sees 3x the characters of a 2x256 one in the same time, and Adam takes a high rate
# under a norm clip and a cosine decay.
_RECURRENT_RECIPE = dict(hidden_size=128, num_layers=2, seq_length=64, batch_size=32, optimizer="adam",
                         learning_rate=3e-2, clip=None, clip_norm=5.0, dtype="float32", lr_schedule="cosine",
                         warmup_steps=20, min_lr_fraction=0.1)
RECIPES = {"lstm": _RECURRENT_RECIPE, "gru": _RECURRENT_RECIPE}
# For a time budget of 90 s or more: once the recurrence ran on the micro-kernel, a 2x192 stack trained on
# 2 cores (Zen 3) ended ahead of the 2x128 one on tiny shakespeare's last tenth after 90 s (1.583 nats/char
# against 1.631-1.670), behind it after 60 s (1.629 against 1.620) and far behind after 25 s; on a megabyte
# of Python source the two were even after 100 s (1.356 against 1.348).
MEDIUM_BUDGET_SECONDS = 90
_MEDIUM_RECURRENT_RECIPE = dict(_RECURRENT_RECIPE, hidden_size=192)
MEDIUM_RECIPES = {"lstm": _MEDIUM_RECURRENT_RECIPE, "gru": _MEDIUM_RECURRENT_RECIPE}
# For a time budget of ten minutes or more: in 10 minutes on 2 cores the 2x128 stack sees tiny shakespeare
# ~57 times and overfits (1.760 nats/char on the last 5 %, worse than after 100 s); 2x256 with dropout 0.2
# at 1e-2 reached 1.590 (measured on lstm; gru takes the same).
LONG_BUDGET_SECONDS = 600
_LONG_RECURRENT_RECIPE = dict(_RECURRENT_RECIPE, hidden_size=256, learning_rate=1e-2, dropout=0.2)
LONG_RECIPES = {"lstm": _LONG_RECURRENT_RECIPE, "gru": _LONG_RECURRENT_RECIPE}


def recipes_for(time_budget=None) -> dict:
    """The recipes (by cell) of a run with this time budget (seconds; None: no budget): :data:`RECIPES`,
    :data:`MEDIUM_RECIPES` from ``MEDIUM_BUDGET_SECONDS``, :data:`LONG_RECIPES` from ``LONG_BUDGET_SECONDS``."""
    if time_budget is not None and time_budget >= LONG_BUDGET_SECONDS:
        return LONG_RECIPES
    if time_budget is not None and time_budget >= MEDIUM_BUDGET_SECONDS:
        return MEDIUM_RECIPES
    return RECIPES


def recipe_config(time_budget=None, **given) -> TrainConfig:
    """A :class:`TrainConfig` of the fields ``given``, the rest from the cell's recipe (:data:`RECIPES`) or defaults.

    With a ``time_budget`` (seconds) the recipe is that of :func:`recipes_for` (a larger model from
    ``MEDIUM_BUDGET_SECONDS``, a larger one with dropout from ``LONG_BUDGET_SECONDS``). A given ``clip``
    or ``clip_norm`` replaces the recipe's clipping as a whole; a given optimizer other than the
    recipe's takes its own default learning rate.
    """
    recipe = dict(recipes_for(time_budget).get(given.get("cell", "rnn"), {}))
    if "clip" in given or "clip_norm" in given:
        recipe.pop("clip", None), recipe.pop("clip_norm", None)
    if given.get("optimizer", recipe.get("optimizer")) != recipe.get("optimizer"):
        recipe.pop("learning_rate", None)
    return TrainConfig(**{**recipe, **given})


def check_split(length: int, config: TrainConfig, unit="characters"):
    """``(n_train, n_val)`` for a corpus of ``length`` symbols, or a :class:`ConfigError`."""
    n_val = held_out_count(length, config.val_fraction)
    if config.val_fraction > 0 and n_val == 0:
        raise ConfigError(f"val-fraction {config.val_fraction} of {length:,} {unit} holds out nothing; "
                          f"use a larger fraction, or 0 for no validation")
    n_train = length - n_val
    need = config.seq_length + 2
    if n_train < need:
        where = (f"after holding out {n_val:,} (val-fraction {config.val_fraction}), {n_train:,} {unit} are "
                 f"left to train on" if n_val else f"the corpus has {n_train:,} {unit}")
        raise ConfigError(f"{where}; seq-length {config.seq_length} needs at least {need} "
                          f"(lower --seq-length or --val-fraction, or use a longer text)")
    B = config.batch_size
    if B > 1 and n_train // B < need:
        raise ConfigError(f"batch-size {B} cuts the {n_train:,} training {unit} into shards of {n_train // B:,}; "
                          f"seq-length {config.seq_length} needs at least {need} per shard "
                          f"(lower --batch-size or --seq-length, or use a longer text)")
    return n_train, n_val


@dataclass(repr=False)
class Score:
    """Loss of a text under a model: ``nats`` summed over ``count`` predicted symbols; per character in
    :attr:`nats_per_char` and :attr:`bits_per_char`."""

    nats: float
    count: int
    log_probs: np.ndarray | None = None  # (count,) natural-log probability of each symbol, when asked for

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.count

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / LN2

    def __repr__(self):
        return (f"Score(nats_per_char={self.nats_per_char:.6g}, bits_per_char={self.bits_per_char:.6g}, "
                f"count={self.count}, nats={self.nats:.6g})")


class CharModel:
    """A trained model with its vocabulary: sample text from it, score text under it."""

    def __init__(self, params, vocab: Vocab):
        """``params``: a :class:`~fastrnn.model.ModelParams` (or the seed's :class:`Params`)."""
        self.params, self.vocab = params.astype(params.dtype), vocab  # cache-line aligned (copies only if not)

    def encode(self, text) -> np.ndarray:
        """Ids of ``text`` (str, or bytes in bytes mode); unknown symbols raise a ``ValueError`` listing them."""
        return self.vocab.encode(text)

    def score(self, text, per_char=False) -> Score:
        """Loss of ``text`` (or of an id array): each symbol after the first predicted from those before it.

        The hidden state starts from zeros. ``per_char=True`` also returns each
        symbol's log-probability.
        """
        ids = text if isinstance(text, np.ndarray) else self.encode(text)
        if ids.size < 2:
            raise ValueError("scoring needs a text of at least 2 characters")
        return self.score_ids(ids[:-1], ids[1:], per_char)

    def score_ids(self, inputs, targets, per_char=False) -> Score:
        """Loss of ``targets`` given ``inputs`` (the symbol before each target), from a zero hidden state.

        Any integer arrays (e.g. memmap slices), read ``SCORE_WINDOW`` ids at a time (:func:`score_windows`).
        """
        nats, count, lp = score_windows(self.params, inputs, targets, per_char)
        return Score(nats, count, lp)

    def sample(self, length, prime=None, temperature=1.0, seed=None, argmax=False, top_k=None, top_p=None):
        """Sample ``length`` symbols; returns the new text only (str, or bytes in bytes mode).

        ``prime``: text to continue. The hidden state is warmed on all of it but its
        last symbol (forward only), then sampling is seeded with the last symbol.
        Without a prime: zero state, seeded with a newline (or, if the vocabulary
        has none, a random symbol). ``seed`` (int, Generator or None) fixes the draws.
        ``top_k`` (positive int) / ``top_p`` (in (0, 1]): draw only among the k most
        likely symbols, then the smallest set of the most likely holding p of the mass.
        """
        pieces = self.sample_chunks(length, prime, temperature, seed, argmax, top_k=top_k, top_p=top_p)
        return b"".join(pieces) if self.vocab.bytes_mode else "".join(pieces)

    def sample_chunks(self, length, prime=None, temperature=1.0, seed=None, argmax=False, chunk=rnn.SAMPLE_CHUNK,
                      top_k=None, top_p=None):
        """:meth:`sample` as pieces of at most ``chunk`` symbols, drawn as they are consumed (bounded memory);
        joined, they are exactly the text :meth:`sample` returns for the same arguments."""
        rng, h, seed_ix, temperature, length, seed_params = self._sample_start(length, prime, temperature,
                                                                                seed)  # errors now
        top = dict(top_k=top_k, top_p=top_p)
        if seed_params is not None:
            chunks = rnn.sample_chunks(seed_params, h, seed_ix, length, seed=rng, temperature=temperature,
                                       argmax=argmax, chunk=chunk, **top)
        else:
            chunks = engine.sample_chunks(self.params, h, seed_ix, length, seed=rng, temperature=temperature,
                                          argmax=argmax, chunk=chunk, **top)
        return (self.vocab.decode(out) for out in chunks)

    def _sample_start(self, length, prime, temperature, seed):
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        length = int(length)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        rng = np.random.default_rng(seed)
        seed_params = seed_view(self.params)
        # The seed's model: rnn's kernels and its (H,) state; any other: the engine and its (L, 1, H) state.
        h = np.zeros(seed_params.hidden_size, seed_params.dtype) if seed_params is not None else None
        if prime:
            ids = self.encode(prime)
            if ids.size > 1:
                if seed_params is not None:
                    _, h = rnn.sequence_loss(seed_params, ids[:-1], ids[1:], h)
                else:
                    _, h = engine.sequence_loss(self.params, ids[:-1], ids[1:])
            seed_ix = int(ids[-1])
        else:
            newline = np.searchsorted(self.vocab.codes, 10)
            if newline < len(self.vocab) and self.vocab.codes[newline] == 10:
                seed_ix = int(newline)
            else:
                seed_ix = int(rng.integers(len(self.vocab)))
        return rng, h, seed_ix, temperature, length, seed_params


def seed_hidden_layout(h: np.ndarray) -> np.ndarray:
    """A (L, B, H) state in the seed's layout where there is one: (H,) for one layer and one stream,
    (B, H) for one layer, (L, B, H) otherwise (views)."""
    if h.shape[0] == 1:
        return h[0, 0] if h.shape[1] == 1 else h[0]
    return h


class _StateViews:
    """``memory`` and ``hprev`` of anything with ``opt_state`` and ``hidden`` (a state, a trainer)."""

    @property
    def memory(self) -> ModelParams:
        """The first optimizer buffer (Adagrad's memory); all of them are ``opt_state``."""
        return self.opt_state[0]

    @property
    def hprev(self) -> np.ndarray:
        """The hidden state h (a view) in the seed's layout: (H,) at batch 1, (B, H) for one layer, else (L, B, H)."""
        return seed_hidden_layout(self.hidden[0])


@dataclass
class TrainState(_StateViews):
    """Everything that changes during training (what a checkpoint stores besides config and vocabulary).

    ``params``: the model; ``opt_state``: the optimizer's buffers, one per
    :attr:`fastrnn.Optimizer.state_names` (Adagrad's memory; RMSprop's
    square average; Adam's two moments), each of the parameters' layout;
    ``hidden``: the recurrent state, one (L, B, H) array per state name
    (``h``, and ``c`` for an LSTM), stream b in ``[:, b]``.
    """

    params: ModelParams
    opt_state: tuple
    hidden: tuple
    p: int  # data pointer within each stream's shard (the whole split at batch 1), a multiple of seq_length
    n: int  # steps done
    smooth_loss: float
    rng_state: dict = field(default_factory=dict)  # numpy Generator bit_generator.state of the sampling RNG


def _sampling_rng(seed):
    # A stream of its own, so samples drawn during training never touch the init's stream.
    return np.random.default_rng([int(seed), 1])


class Trainer(_StateViews):
    """Trains a :class:`CharModel` on a :class:`Corpus` with the seed's loop.

    ``Trainer(corpus, config)`` starts fresh (the seed's init for a 1-layer rnn,
    PyTorch's for every other model, from ``config.seed``); ``state`` (a
    :class:`TrainState`, e.g. from a checkpoint) continues a run exactly. The
    seed's case (1-layer rnn, Adagrad, clip by value) runs the seed-exact
    kernels (:mod:`fastrnn.rnn`, :mod:`fastrnn.batch`); every other model or
    update the engine (:mod:`fastrnn.engine`) and :func:`fastrnn.optim.apply`.

    Data-parallel training (``world``: one process of a group, e.g. an MPI
    rank from :mod:`fastrnn.distributed`): the B streams are shared by the
    ``world.size`` processes, process r training streams ``r * Bl ...
    (r + 1) * Bl - 1`` (Bl = B / size); per step the shares' gradients are
    summed by ``world.sum_grads`` and every process applies the same update
    to its own copy of the parameters (see :meth:`advance`). ``hidden`` holds
    all B streams' states, but only this process's share is current; the
    whole of it on process 0 after :meth:`collect_state`.
    """

    def __init__(self, corpus: Corpus, config: TrainConfig | None = None, state: TrainState | None = None,
                 world=None):
        config = (config or TrainConfig()).validate().with_seed()
        unit = "bytes" if corpus.vocab.bytes_mode else "characters"
        n_train, n_val = check_split(len(corpus), config, unit)
        size = 1 if world is None else int(world.size)
        if config.batch_size % size:
            raise ConfigError(f"batch-size {config.batch_size} is not divisible by the {size} processes "
                              f"that share it; use a multiple of {size}")
        self.corpus, self.config, self.vocab = corpus, config, corpus.vocab
        # Views of the corpus's ids (any integer dtype, e.g. memmap slices): blocks gather what they touch,
        # validation reads the held-out split window by window.
        self.train_ids = corpus.ids[:n_train]
        self.val_inputs = corpus.ids[n_train - 1:-1] if n_val else corpus.ids[:0]
        self.val_targets = corpus.ids[n_train:]
        self._release_pages = getattr(corpus, "release_pages", None)  # a PreparedCorpus: bound the RSS
        T, V, H, B = config.seq_length, len(self.vocab), config.hidden_size, config.batch_size
        self.spec = config.spec(V)
        self.optimizer = config.optimizer_settings
        self.shard_length = n_train // B  # S: stream b trains on train_ids[b*S : (b+1)*S]
        self.num_starts = -(-(self.shard_length - T - 1) // T)  # positions p = j*T with p + T + 1 < S
        dtype = np.dtype(config.dtype)
        if state is None:
            if self.spec.is_seed:
                params = ModelParams.from_seed(init_params(V, H, seed=config.seed, dtype=dtype))
            else:
                params = init_model(self.spec, seed=config.seed, dtype=dtype)
            rng = _sampling_rng(config.seed)
            state = TrainState(params, tuple(params.zeros_like() for _ in self.optimizer.state_names),
                               tuple(aligned_zeros((self.spec.num_layers, B, H), dtype)
                                     for _ in self.spec.state_names),
                               0, 0, -math.log(1.0 / V) * T, rng.bit_generator.state)
        self._load_state(state, dtype)
        self.world = world
        share = B // size
        self.streams = slice(0, B) if world is None else slice(world.rank * share, (world.rank + 1) * share)
        if world is not None:  # a share of the batch: grads, then their sum over the processes, then the update
            self._grads = self.params.zeros_like()
            if config.seed_exact:
                from .batch import BatchWorkspace
                self.workspace = BatchWorkspace(V, H, T, share, dtype, threads=config.threads, split="streams")
            else:
                self.workspace = engine.ParallelWorkspace(self.spec, T, share, dtype, threads=config.threads)
        elif config.seed_exact and B == 1:
            self.workspace = rnn.Workspace(V, H, T, dtype)
        elif config.seed_exact:
            from .batch import BatchWorkspace  # imported here: it selects Numba's threading layer
            self.workspace = BatchWorkspace(V, H, T, B, dtype, threads=config.threads)
        else:
            self.workspace = engine.ParallelWorkspace(self.spec, T, B, dtype, threads=config.threads)
        self.train_seconds = 0.0  # time spent inside the training kernels (for chars/s)
        self._recent = [0.0, 0]  # losses summed, and steps, since the last recent_loss_per_char()
        self._stop = self._stop_agreed = False
        self.stop_signal = 0  # with a world: the signal number (or 1) of a stop asked on any process

    def _load_state(self, state, dtype):
        T, B = self.config.seq_length, self.config.batch_size
        names = self.optimizer.state_names
        if not isinstance(state.params, ModelParams) or state.params.spec != self.spec:
            raise ValueError(f"the parameters are not those of a {describe(self.spec)}")
        if len(state.opt_state) != len(names):
            raise ValueError(f"{self.config.optimizer} keeps {len(names)} buffer(s), the state has "
                             f"{len(state.opt_state)}")
        for group in (state.params, *state.opt_state):
            if not isinstance(group, ModelParams) or group.spec != self.spec or group.dtype != dtype:
                raise ValueError(f"the parameters and optimizer buffers must be {dtype} arrays of a "
                                 f"{describe(self.spec)}")
        shape = (self.spec.num_layers, B, self.spec.hidden_size)
        if len(state.hidden) != len(self.spec.state_names):
            raise ValueError(f"a {self.spec.cell} has state {', '.join(self.spec.state_names)}")
        for name, h in zip(self.spec.state_names, state.hidden):
            if h.shape != shape or h.dtype != dtype:
                raise ValueError(f"state {name} has shape {h.shape} {h.dtype}, expected {shape} {dtype}")
        p, n = int(state.p), int(state.n)
        if n < 0 or p < 0 or p % T or p // T >= self.num_starts:
            raise ValueError(f"data pointer p={p} (step n={n}) is not a position of this training split")
        self.params = state.params  # ModelParams are always cache-line aligned
        self.opt_state = tuple(state.opt_state)
        self.hidden = tuple(aligned_copy(h) for h in state.hidden)
        self.p, self.n, self.smooth_loss = p, n, float(state.smooth_loss)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.rng_state  # raises ValueError if it is not a PCG64 state

    @property
    def state(self) -> TrainState:
        """The current state (the arrays themselves, not copies)."""
        return TrainState(self.params, self.opt_state, self.hidden, self.p, self.n, self.smooth_loss,
                          self.rng.bit_generator.state)

    @property
    def pointers(self) -> np.ndarray:
        """(B,) int64: where each stream's next window starts in ``train_ids`` (``b * S + p``)."""
        return np.arange(self.config.batch_size, dtype=np.int64) * self.shard_length + self.p

    @property
    def chars_per_step(self) -> int:
        """Characters trained on per step: batch_size * seq_length."""
        return self.config.batch_size * self.config.seq_length

    @property
    def model(self) -> CharModel:
        return CharModel(self.params, self.vocab)

    def fix_decay(self, decay_steps: int, tell_others=True) -> None:
        """Fix a cosine schedule's ``decay_steps`` (left None so that a run with a time budget can size it from
        its measured speed); recorded in the config, so checkpoints and resumes keep it. With a world and
        ``tell_others``, rank 0 says so to the other ranks, which fix theirs (:mod:`fastrnn.distributed`)."""
        if self.config.decay_steps is not None:
            raise ValueError(f"decay-steps is already fixed at {self.config.decay_steps:,}")
        self.config = replace(self.config, decay_steps=int(decay_steps)).validate()
        if self.world is not None and tell_others:
            self.world.announce("decay", int(decay_steps))

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def request_stop(self, signum=1):
        """Ask :meth:`train` to return at the end of the current block of steps (safe from a signal handler).

        With a world, every process stops at the end of the same block, and
        ``stop_signal`` says which signal (``signum``) asked for it.
        """
        self._stop = True
        self.stop_signal = max(self.stop_signal, int(signum))

    @property
    def share_hidden(self) -> tuple:
        """This process's streams of ``hidden``: views (L, Bl, H)."""
        return tuple(h[:, self.streams] for h in self.hidden)

    def collect_state(self):
        """With a world, copy every process's share of the hidden state into ``hidden`` on process 0
        (a collective: every process calls it); without one, nothing to do."""
        if self.world is not None:
            self.world.announce("collect")
            self.world.collect_streams(self.share_hidden, self.hidden)

    def train(self, steps, callback=None, every=None, deadline=None) -> bool:
        """Run ``steps`` more steps; True if all ran, False if :meth:`request_stop` cut them short.

        ``callback(trainer)`` runs whenever ``trainer.n`` reaches a multiple of
        ``every`` (default: only at the end) and after the last step.
        ``deadline`` (a ``time.perf_counter()`` value): stop at the first block
        boundary past it (returning True; ``n`` says how far it got). Raises
        :class:`TrainingDiverged` on a NaN or infinite loss.
        """
        target = self.n + int(steps)
        # With a world the seed's case too runs step by step (a sum over the processes each step).
        block = BLOCK_STEPS if self.config.seed_exact and self.world is None else ENGINE_BLOCK_STEPS
        while self.n < target:
            # With a world, a stop counts once exchanged (end of a block), so all processes return together.
            if self._stop_agreed if self.world is not None else self._stop:
                self._stop = self._stop_agreed = False
                return False
            if deadline is not None and time.perf_counter() >= deadline:
                return True
            k = min(target - self.n, block)
            if every:
                k = min(k, every - self.n % every)
            self.advance(k)
            if callback is not None and ((every and self.n % every == 0) or self.n == target):
                callback(self)
        return True

    def advance(self, k):
        """Run exactly ``k`` steps in one kernel call; update p, n, hidden, smooth_loss.

        With a world every process calls this with the same ``k`` (a collective):
        after the block the processes exchange their shares' losses, their
        stop requests and whether their states are finite, so all of them hold
        the same losses and stop or diverge at the same step.
        """
        T = self.config.seq_length
        if self.world is not None:
            self.world.announce("block", k)  # process 0 leads; the others run the same block
        j = (self.p // T + np.arange(k)) % self.num_starts  # the seed's pointer walk, wrapped
        shard_starts = np.arange(self.config.batch_size, dtype=np.int64) * self.shard_length  # (B,)
        starts = j[:, None] * T + shard_starts  # (k, B) offsets into train_ids
        resets = j == 0  # p == 0 only ever follows a reset (or n == 0); all streams reset together
        t0 = time.perf_counter()
        losses = _train_block(self, starts, resets)
        states_finite = True
        if self.world is not None:
            losses, stop_signal, states_finite = self.world.end_block(
                losses, self.stop_signal if self._stop else 0, all(np.isfinite(h).all() for h in self.share_hidden))
            losses = losses / self.config.batch_size
            if stop_signal:
                self.request_stop(stop_signal)
                self._stop_agreed = True
        self.train_seconds += time.perf_counter() - t0
        if self._release_pages is not None:
            self._release_pages()
        smooth = self.smooth_loss
        for loss in losses.tolist():
            smooth = smooth * 0.999 + loss * 0.001
        self._recent[0] += float(np.sum(losses))
        self._recent[1] += k
        n0 = self.n
        self.smooth_loss = smooth
        self.n += k
        self.p = int((j[-1] + 1) % self.num_starts) * T
        if self.p == 0:
            for h in self.hidden:
                h[:] = 0  # the seed's reset, applied eagerly
        bad = ~np.isfinite(losses)
        if bad.any():
            i = int(np.argmax(bad))
            raise TrainingDiverged(n0 + i + 1, float(losses[i]))
        if not (states_finite and self.is_finite()):  # ~H*H checks per block of steps: cheap
            raise TrainingDiverged(self.n, float(losses[-1]), params_only=True)

    def warm_up(self):
        """Load (or compile) the training kernels for this model and dtype, on scratch copies: the state is unchanged."""
        scratch = Trainer.__new__(Trainer)
        scratch.__dict__.update(self.__dict__)
        scratch.params = self.params.copy()
        scratch.opt_state = tuple(s.copy() for s in self.opt_state)
        scratch.hidden = tuple(h.copy() for h in self.hidden)
        if self.world is not None:
            scratch._grads = self._grads.copy()
        _train_block(scratch, np.zeros((1, self.config.batch_size), np.int64), np.ones(1, bool), alone=True)

    def is_finite(self) -> bool:
        """True if every parameter, optimizer buffer and state is finite (safe to checkpoint)."""
        return (self.params.is_finite() and all(s.is_finite() for s in self.opt_state)
                and all(np.isfinite(h).all() for h in self.hidden))

    def validation_loss(self, per_char=False) -> Score | None:
        """Loss over the whole held-out split from a zero hidden state; None without a split.

        Read ``SCORE_WINDOW`` ids at a time (:func:`score_windows`), releasing the
        corpus's mapped pages after each window when it can.
        """
        if self.val_targets.size == 0:
            return None
        nats, count, lp = score_windows(self.params, self.val_inputs, self.val_targets, per_char,
                                        after_window=self._release_pages)
        return Score(nats, count, lp)

    def sample(self, length) -> str:
        """The seed's in-training sample: from stream 0's current state, seeded by its next input.

        Draws come from the trainer's own RNG (stored in checkpoints), so a resumed
        run prints the same samples as an uninterrupted one.
        """
        ix = int(self.train_ids[self.p])  # stream 0's next input (its shard starts at 0)
        seed_params = seed_view(self.params)
        if seed_params is not None:
            out = rnn.sample(seed_params, self.hidden[0][0, 0], ix, int(length), seed=self.rng)
        else:
            out = engine.sample(self.params, tuple(h[:, :1] for h in self.hidden), ix, int(length), seed=self.rng)
        return self.vocab.decode(out)

    @property
    def smooth_loss_per_char(self) -> float:
        """The seed's smoothed loss (a moving average over ~1,000 steps), per character."""
        return self.smooth_loss / self.config.seq_length

    def recent_loss_per_char(self) -> float:
        """The mean training loss per character of the steps since the previous call (the smoothed loss if none),
        then starts a new interval. Unlike :attr:`smooth_loss_per_char` it does not lag behind a short run."""
        total, steps = self._recent
        self._recent = [0.0, 0]
        return total / steps / self.config.seq_length if steps else self.smooth_loss_per_char


def _gather_windows(ids, starts, T):
    """The ids of k*B windows of T+1 ids at ``starts`` (k, B), gathered into one int64 buffer.

    Returns ``(data, rebased)``: ``data`` (k * B * (T + 1),) C-contiguous int64
    and ``rebased`` (k, B) such that ``data[rebased[s, b] + t] == ids[starts[s, b] + t]``
    for t in 0..T. Only the windows are read, so ``ids`` may be a memory-mapped
    array of any integer dtype; the buffer stays small (BLOCK_STEPS * B * (T + 1) ids).
    """
    k, B = starts.shape
    windows = starts.reshape(-1, 1) + np.arange(T + 1)  # (k*B, T+1) positions
    data = np.ascontiguousarray(ids[windows], np.int64).reshape(-1)
    rebased = np.arange(k * B, dtype=np.int64).reshape(k, B) * (T + 1)
    return data, rebased


def _train_block(trainer, starts, resets, alone=False):
    """Losses (k,) of k steps at ``starts`` (k, B); the one place that calls the training kernels.

    The seed's case runs k steps in one kernel call with the hidden state carried
    in place: ``rnn.train_steps`` at batch 1 (the seed-exact path),
    ``batch.batch_train_steps`` otherwise. Every other model or update runs the
    engine step by step (:func:`fastrnn.engine.train_steps`). With a world,
    this process's share of the streams runs ``data_parallel_steps`` (of
    :mod:`fastrnn.batch` in the seed's case, else of the engine) and the
    losses are its share's, summed, not divided; ``alone``: no exchange
    with the other processes (warming the kernels up).
    """
    t = trainer
    c = t.config
    T, B = c.seq_length, c.batch_size
    rates = [c.learning_rate_at(t.n + 1 + s) for s in range(len(starts))] if c.scheduled else None
    if t.world is not None:
        data, rebased = _gather_windows(t.train_ids, starts[:, t.streams], T)
        sum_grads = (lambda flat: None) if alone else t.world.sum_grads
        share = t.share_hidden
        if c.seed_exact:
            from .batch import data_parallel_steps
            return data_parallel_steps(t.params, t.memory, t._grads, data, rebased, resets, share[0][0],
                                       c.learning_rate, t.workspace, B, sum_grads, clip=c.clip, threads=c.threads)
        return engine.data_parallel_steps(t.params, t.optimizer, t.opt_state, data, rebased, resets, share,
                                          t.workspace, t.n + 1, B, sum_grads, clip=c.clip, clip_norm=c.clip_norm,
                                          threads=c.threads, learning_rates=rates, dropout=c.dropout, seed=c.seed,
                                          first_stream=t.streams.start)
    data, rebased = _gather_windows(t.train_ids, starts, T)
    if not c.seed_exact:
        return engine.train_steps(t.params, t.optimizer, t.opt_state, data, rebased, resets, t.hidden,
                                  t.workspace, first_step=t.n + 1, clip=c.clip, clip_norm=c.clip_norm,
                                  threads=c.threads, learning_rates=rates, dropout=c.dropout, seed=c.seed)
    params, memory = t.params.as_seed(), t.memory.as_seed()
    if B == 1:
        return rnn.train_steps(params, memory, data, rebased[:, 0], resets, t.hidden[0][0, 0], c.learning_rate,
                               t.workspace, clip=c.clip)
    from .batch import batch_train_steps
    return batch_train_steps(params, memory, data, rebased, resets, t.hidden[0][0], c.learning_rate,
                             t.workspace, clip=c.clip, threads=c.threads)
