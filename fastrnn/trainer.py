"""The seed's training loop over a corpus, made fast: :class:`Trainer`. Its config and recipes are
:mod:`fastrnn.config`; the model it trains, for sampling and scoring, :mod:`fastrnn.charmodel`.

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
lockstep, so they share ``p`` and reset together. Each step is one step of
the engine (:func:`fastrnn.steps.train_steps`) over the B windows; its loss is
summed over the B * T characters and divided by B, so ``loss / seq_length``
stays comparable to batch 1. B = 1 is the seed's loop above, its blocks of
steps one compiled call each (:mod:`fastrnn.stream_kernels`).

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
import time
from dataclasses import replace

import numpy as np

from . import inference, workspaces
from ._aligned import aligned_copy, aligned_zeros
from ._validate import check_model
from .charmodel import CharModel, Score, score_windows
from .config import ConfigError, TrainConfig, check_split
from .corpus import Corpus
from .model import ModelParams, describe, init_params
from .steps import compiled_steps, data_parallel_steps, train_steps
from .train_state import TrainingDiverged, TrainState, StateViews

BLOCK_STEPS = 256  # steps per kernel call: amortises the call, keeps Ctrl-C latency ~ tens of ms
ENGINE_BLOCK_STEPS = 8  # the engine's steps are ms to 100s of ms each: shorter blocks keep Ctrl-C and deadlines prompt


def _sampling_rng(seed):
    # A stream of its own, so samples drawn during training never touch the init's stream.
    return np.random.default_rng([int(seed), 1])


class Trainer(StateViews):
    """Trains a :class:`CharModel` on a :class:`Corpus` with the seed's loop.

    ``Trainer(corpus, config)`` starts fresh (the seed's init for a 1-layer rnn,
    PyTorch's for every other model, from ``config.seed``), or from ``params``
    (a :class:`~fastrnn.ModelParams` of the config's model: fine-tuning,
    :func:`fastrnn.fine_tune`); ``state`` (a :class:`TrainState`,
    e.g. from a checkpoint) continues a run exactly. ``parent``: what its
    checkpoints record of the run it was fine-tuned from (None: none). Every
    model and update trains on the engine (:mod:`fastrnn.engine`, :func:`fastrnn.optim.apply`).

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
                 world=None, params=None):
        config = (config or TrainConfig()).validate().with_seed()
        if state is not None and params is not None:
            raise ValueError("give a state to continue a run, or params to start one from, not both")
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
            # the seed's init for a 1-layer rnn, PyTorch's for every other model
            if params is None:
                params = init_params(V, H, config.cell, config.num_layers, seed=config.seed, dtype=dtype)
            params = check_model(params)
            rng = _sampling_rng(config.seed)
            state = TrainState(params, tuple(params.zeros_like() for _ in self.optimizer.state_names),
                               tuple(aligned_zeros((self.spec.num_layers, B, H), dtype)
                                     for _ in self.spec.state_names),
                               0, 0, -math.log(1.0 / V) * T, rng.bit_generator.state)
        self._load_state(state, dtype)
        self.parent = None
        self.world = world
        share = B // size
        self.streams = slice(0, B) if world is None else slice(world.rank * share, (world.rank + 1) * share)
        if world is not None:  # a share of the batch: grads, then their sum over the processes, then the update
            self._grads = self.params.zeros_like()
            self.workspace = workspaces.ParallelWorkspace(self.spec, T, share, dtype, threads=config.threads)
        else:
            compiled = compiled_steps(self.spec, self.optimizer, B, config.clip_norm, config.dropout)
            self.workspace = workspaces.ParallelWorkspace(self.spec, T, B, dtype,
                                                          threads=1 if compiled else config.threads)
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
    def memory(self) -> ModelParams:
        """Adagrad's memory (the seed's name for its one buffer). Another optimizer's buffers are ``opt_state``,
        named by ``optimizer.state_names``: asking for ``memory`` then is an AttributeError."""
        if self.optimizer.name != "adagrad":
            raise AttributeError(f"memory is Adagrad's buffer; this run's {self.optimizer.name} keeps "
                                 f"{', '.join(self.optimizer.state_names)} in opt_state")
        return self.opt_state[0]

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
        # Blocks compiled whole are long (their steps are microseconds); with a world, steps exchange gradients.
        c = self.config
        compiled = self.world is None and compiled_steps(self.spec, self.optimizer, c.batch_size,
                                                         c.clip_norm, c.dropout)
        block = BLOCK_STEPS if compiled else ENGINE_BLOCK_STEPS
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
        out = inference.sample(self.params, tuple(h[:, :1] for h in self.hidden), ix, int(length), seed=self.rng)
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

    Every run trains on the engine (:func:`fastrnn.steps.train_steps`, which
    runs the seed's case at batch 1 as one compiled call). With a world, this process's share of
    the streams runs ``fastrnn.steps.data_parallel_steps`` and the losses are its
    share's, summed, not divided; ``alone``: no exchange with the other
    processes (warming the kernels up).
    """
    t = trainer
    c = t.config
    T, B = c.seq_length, c.batch_size
    rates = [c.learning_rate_at(t.n + 1 + s) for s in range(len(starts))] if c.scheduled else None
    if t.world is not None:
        data, rebased = _gather_windows(t.train_ids, starts[:, t.streams], T)
        sum_grads = (lambda flat: None) if alone else t.world.sum_grads
        share = t.share_hidden
        return data_parallel_steps(t.params, t.optimizer, t.opt_state, data, rebased, resets, share,
                                   t.workspace, t.n + 1, B, sum_grads, clip=c.clip, clip_norm=c.clip_norm,
                                   threads=c.threads, learning_rates=rates, dropout=c.dropout, seed=c.seed,
                                   first_stream=t.streams.start)
    data, rebased = _gather_windows(t.train_ids, starts, T)
    return train_steps(t.params, t.optimizer, t.opt_state, data, rebased, resets, t.hidden, t.workspace,
                       first_step=t.n + 1, clip=c.clip, clip_norm=c.clip_norm, threads=c.threads,
                       learning_rates=rates, dropout=c.dropout, seed=c.seed)
