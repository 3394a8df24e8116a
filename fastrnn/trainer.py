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
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from . import rnn
from ._aligned import aligned, aligned_copy, aligned_zeros
from .corpus import Corpus, held_out_count
from .params import Params, init_params
from .vocab import Vocab

LN2 = math.log(2.0)
BLOCK_STEPS = 256  # steps per kernel call: amortises the call, keeps Ctrl-C latency ~ tens of ms
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
    h = np.zeros(params.hidden_size, params.dtype)
    count = int(targets.size)
    if inputs.shape != targets.shape or inputs.ndim != 1 or count <= window:  # one call; rnn reports bad shapes
        pairs = [(inputs, targets)]
    else:
        pairs = ((inputs[s:s + window], targets[s:s + window]) for s in range(0, count, window))
    out = np.empty(count, np.float64) if per_char else None
    nats, done = 0.0, 0
    for x, y in pairs:
        if per_char:  # rnn copies each window to int64 and checks its ids
            lp, h = rnn.log_probs(params, x, y, h)
            out[done:done + lp.size] = lp
        else:
            loss, h = rnn.sequence_loss(params, x, y, h)
            nats += loss
        done += y.size
        if after_window is not None:
            after_window()
    if per_char:
        nats = float(-out.sum())
    return nats, count, out


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
    change it; every other field must match the checkpoint). Unused at batch 1.
    """

    hidden_size: int = 100
    seq_length: int = 25
    learning_rate: float = 0.1
    seed: int | None = None
    dtype: str = "float64"
    val_fraction: float = 0.05
    clip: float = 5.0
    batch_size: int = 1
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    def validate(self) -> "TrainConfig":
        for name in ("hidden_size", "seq_length", "batch_size", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        for name in ("learning_rate", "clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name.replace('_', '-')} must be a positive number, got {value!r}")
        if self.dtype not in ("float64", "float32"):
            raise ConfigError(f"dtype must be float64 or float32, got {self.dtype!r}")
        vf = self.val_fraction
        if not (isinstance(vf, (int, float, np.floating)) and 0 <= vf < 1):
            raise ConfigError(f"val-fraction must be in [0, 1), got {vf!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            raise ConfigError(f"seed must be a non-negative integer, got {self.seed!r}")
        return self

    def with_seed(self) -> "TrainConfig":
        """This config with a drawn seed if it had none."""
        return self if self.seed is not None else replace(self, seed=secrets.randbelow(2**31))

    def to_dict(self) -> dict:
        return asdict(self)


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


@dataclass
class Score:
    """Loss of a text under a model: ``nats`` summed over ``count`` predicted symbols."""

    nats: float
    count: int
    log_probs: np.ndarray | None = None  # (count,) natural-log probability of each symbol, when asked for

    @property
    def nats_per_char(self) -> float:
        return self.nats / self.count

    @property
    def bits_per_char(self) -> float:
        return self.nats_per_char / LN2


class CharModel:
    """A trained model with its vocabulary: sample text from it, score text under it."""

    def __init__(self, params: Params, vocab: Vocab):
        self.params, self.vocab = params.astype(params.dtype), vocab  # cache-line aligned (copies only if not)

    def _zeros(self):
        return np.zeros(self.params.hidden_size, self.params.dtype)

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

    def sample(self, length, prime=None, temperature=1.0, seed=None, argmax=False):
        """Sample ``length`` symbols; returns the new text only (str, or bytes in bytes mode).

        ``prime``: text to continue. The hidden state is warmed on all of it but its
        last symbol (forward only), then sampling is seeded with the last symbol.
        Without a prime: zero state, seeded with a newline (or, if the vocabulary
        has none, a random symbol). ``seed`` (int, Generator or None) fixes the draws.
        """
        rng, h, seed_ix, temperature, length = self._sample_start(length, prime, temperature, seed)
        out = rnn.sample(self.params, h, seed_ix, length, seed=rng, temperature=temperature, argmax=argmax)
        return self.vocab.decode(out)

    def sample_chunks(self, length, prime=None, temperature=1.0, seed=None, argmax=False, chunk=rnn.SAMPLE_CHUNK):
        """:meth:`sample` as pieces of at most ``chunk`` symbols, drawn as they are consumed (bounded memory);
        joined, they are exactly the text :meth:`sample` returns for the same arguments."""
        rng, h, seed_ix, temperature, length = self._sample_start(length, prime, temperature, seed)  # errors now
        chunks = rnn.sample_chunks(self.params, h, seed_ix, length, seed=rng, temperature=temperature,
                                   argmax=argmax, chunk=chunk)
        return (self.vocab.decode(out) for out in chunks)

    def _sample_start(self, length, prime, temperature, seed):
        temperature = float(temperature)
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature}")
        length = int(length)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        rng = np.random.default_rng(seed)
        h = self._zeros()
        if prime:
            ids = self.encode(prime)
            if ids.size > 1:
                _, h = rnn.sequence_loss(self.params, ids[:-1], ids[1:], h)
            seed_ix = int(ids[-1])
        else:
            newline = np.searchsorted(self.vocab.codes, 10)
            if newline < len(self.vocab) and self.vocab.codes[newline] == 10:
                seed_ix = int(newline)
            else:
                seed_ix = int(rng.integers(len(self.vocab)))
        return rng, h, seed_ix, temperature, length


@dataclass
class TrainState:
    """Everything that changes during training (what a checkpoint stores besides config and vocabulary)."""

    params: Params
    memory: Params
    hprev: np.ndarray  # (H,) at batch 1, else (B, H): stream b's hidden state in row b
    p: int  # data pointer within each stream's shard (the whole split at batch 1), a multiple of seq_length
    n: int  # steps done
    smooth_loss: float
    rng_state: dict = field(default_factory=dict)  # numpy Generator bit_generator.state of the sampling RNG


def _sampling_rng(seed):
    # A stream of its own, so samples drawn during training never touch the init's stream.
    return np.random.default_rng([int(seed), 1])


class Trainer:
    """Trains a :class:`CharModel` on a :class:`Corpus` with the seed's loop.

    ``Trainer(corpus, config)`` starts fresh (init_params with ``config.seed``);
    ``state`` (a :class:`TrainState`, e.g. from a checkpoint) continues a run exactly.
    """

    def __init__(self, corpus: Corpus, config: TrainConfig | None = None, state: TrainState | None = None):
        config = (config or TrainConfig()).validate().with_seed()
        unit = "bytes" if corpus.vocab.bytes_mode else "characters"
        n_train, n_val = check_split(len(corpus), config, unit)
        self.corpus, self.config, self.vocab = corpus, config, corpus.vocab
        # Views of the corpus's ids (any integer dtype, e.g. memmap slices): blocks gather what they touch,
        # validation reads the held-out split window by window.
        self.train_ids = corpus.ids[:n_train]
        self.val_inputs = corpus.ids[n_train - 1:-1] if n_val else corpus.ids[:0]
        self.val_targets = corpus.ids[n_train:]
        self._release_pages = getattr(corpus, "release_pages", None)  # a PreparedCorpus: bound the RSS
        T, V, H, B = config.seq_length, len(self.vocab), config.hidden_size, config.batch_size
        self.shard_length = n_train // B  # S: stream b trains on train_ids[b*S : (b+1)*S]
        self.num_starts = -(-(self.shard_length - T - 1) // T)  # positions p = j*T with p + T + 1 < S
        dtype = np.dtype(config.dtype)
        if state is None:
            params = init_params(V, H, seed=config.seed, dtype=dtype)
            rng = _sampling_rng(config.seed)
            state = TrainState(params, params.zeros_like(), aligned_zeros(self._hidden_shape(H), dtype), 0, 0,
                               -math.log(1.0 / V) * T, rng.bit_generator.state)
        self._load_state(state, V, H, dtype)
        if B == 1:
            self.workspace = rnn.Workspace(V, H, T, dtype)
        else:
            from .batch import BatchWorkspace  # imported here: it selects Numba's threading layer
            self.workspace = BatchWorkspace(V, H, T, B, dtype, threads=config.threads)
        self.train_seconds = 0.0  # time spent inside the training kernels (for chars/s)
        self._stop = False

    def _hidden_shape(self, H):
        B = self.config.batch_size
        return (H,) if B == 1 else (B, H)

    def _load_state(self, state, V, H, dtype):
        T = self.config.seq_length
        for name, group in (("params", state.params), ("memory", state.memory)):
            for field_name, a, shape in zip(Params._fields, group, ((H, V), (H, H), (V, H), (H,), (V,))):
                if a.shape != shape or a.dtype != dtype:
                    raise ValueError(f"{name}.{field_name} has shape {a.shape} {a.dtype}, expected {shape} {dtype}")
        shape = self._hidden_shape(H)
        if state.hprev.shape != shape or state.hprev.dtype != dtype:
            raise ValueError(f"hprev has shape {state.hprev.shape} {state.hprev.dtype}, expected {shape} {dtype}")
        p, n = int(state.p), int(state.n)
        if n < 0 or p < 0 or p % T or p // T >= self.num_starts:
            raise ValueError(f"data pointer p={p} (step n={n}) is not a position of this training split")
        # The state's own arrays where they are C-contiguous and cache-line aligned, else aligned copies
        # (a checkpoint's arrays come from a zip file at any alignment).
        self.params = Params(*(aligned(a) for a in state.params))
        self.memory = Params(*(aligned(a) for a in state.memory))
        self.hprev = aligned_copy(state.hprev)
        self.p, self.n, self.smooth_loss = p, n, float(state.smooth_loss)
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state.rng_state  # raises ValueError if it is not a PCG64 state

    @property
    def state(self) -> TrainState:
        """The current state (the arrays themselves, not copies)."""
        return TrainState(self.params, self.memory, self.hprev, self.p, self.n, self.smooth_loss,
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

    @property
    def stop_requested(self) -> bool:
        return self._stop

    def request_stop(self):
        """Ask :meth:`train` to return at the end of the current block of steps (safe from a signal handler)."""
        self._stop = True

    def train(self, steps, callback=None, every=None) -> bool:
        """Run ``steps`` more steps; True if all ran, False if :meth:`request_stop` cut them short.

        ``callback(trainer)`` runs whenever ``trainer.n`` reaches a multiple of
        ``every`` (default: only at the end) and after the last step. Raises
        :class:`TrainingDiverged` on a NaN or infinite loss.
        """
        target = self.n + int(steps)
        while self.n < target:
            if self._stop:
                self._stop = False
                return False
            k = min(target - self.n, BLOCK_STEPS)
            if every:
                k = min(k, every - self.n % every)
            self._advance(k)
            if callback is not None and ((every and self.n % every == 0) or self.n == target):
                callback(self)
        return True

    def _advance(self, k):
        """Run exactly ``k`` steps in one kernel call; update p, n, hprev, smooth_loss."""
        T = self.config.seq_length
        j = (self.p // T + np.arange(k)) % self.num_starts  # the seed's pointer walk, wrapped
        shard_starts = np.arange(self.config.batch_size, dtype=np.int64) * self.shard_length  # (B,)
        starts = j[:, None] * T + shard_starts  # (k, B) offsets into train_ids
        resets = j == 0  # p == 0 only ever follows a reset (or n == 0); all streams reset together
        t0 = time.perf_counter()
        losses = _train_block(self, starts, resets)
        self.train_seconds += time.perf_counter() - t0
        if self._release_pages is not None:
            self._release_pages()
        smooth = self.smooth_loss
        for loss in losses.tolist():
            smooth = smooth * 0.999 + loss * 0.001
        n0 = self.n
        self.smooth_loss = smooth
        self.n += k
        self.p = int((j[-1] + 1) % self.num_starts) * T
        if self.p == 0:
            self.hprev[:] = 0  # the seed's reset, applied eagerly
        bad = ~np.isfinite(losses)
        if bad.any():
            i = int(np.argmax(bad))
            raise TrainingDiverged(n0 + i + 1, float(losses[i]))
        if not self.is_finite():  # ~H*H checks per block of steps: cheap
            raise TrainingDiverged(self.n, float(losses[-1]), params_only=True)

    def warm_up(self):
        """Load (or compile) the training kernel for this dtype, on scratch copies: the state is unchanged."""
        scratch = Trainer.__new__(Trainer)
        scratch.__dict__.update(self.__dict__)
        scratch.params, scratch.memory, scratch.hprev = self.params.copy(), self.memory.copy(), self.hprev.copy()
        _train_block(scratch, np.zeros((1, self.config.batch_size), np.int64), np.ones(1, bool))

    def is_finite(self) -> bool:
        """True if every parameter and Adagrad memory is finite (safe to checkpoint)."""
        return all(np.isfinite(a).all() for a in (*self.params, *self.memory, self.hprev))

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
        """The seed's in-training sample: from the current hidden state, seeded by the next input.

        Draws come from the trainer's own RNG (stored in checkpoints), so a resumed
        run prints the same samples as an uninterrupted one.
        """
        ix = int(self.train_ids[self.p])  # stream 0's next input (its shard starts at 0)
        h = self.hprev if self.hprev.ndim == 1 else self.hprev[0]
        out = rnn.sample(self.params, h, ix, int(length), seed=self.rng)
        return self.vocab.decode(out)

    @property
    def smooth_loss_per_char(self) -> float:
        return self.smooth_loss / self.config.seq_length


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


def _train_block(trainer, starts, resets):
    """Losses (k,) of k steps at ``starts`` (k, B) in one kernel call; the one place that calls the training kernels.

    The kernels check their arguments once per block (cheap next to k steps), then
    run k steps with the hidden state carried in ``trainer.hprev``: ``rnn.train_steps``
    at batch 1 (the seed-exact path), ``batch.batch_train_steps`` otherwise.
    """
    t = trainer
    T, B = t.config.seq_length, t.config.batch_size
    data, rebased = _gather_windows(t.train_ids, starts, T)
    if B == 1:
        return rnn.train_steps(t.params, t.memory, data, rebased[:, 0], resets, t.hprev, t.config.learning_rate,
                               t.workspace, clip=t.config.clip)
    from .batch import batch_train_steps
    return batch_train_steps(t.params, t.memory, data, rebased, resets, t.hprev, t.config.learning_rate,
                             t.workspace, clip=t.config.clip, threads=t.config.threads)
