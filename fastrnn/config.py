"""What a training run is: :class:`TrainConfig` (the hyperparameters a checkpoint stores), the recipes
``--model lstm|gru`` trains with, and the checks of a config against a corpus."""
from __future__ import annotations

import math
import os
import secrets
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from .corpus import held_out_count
from .model import CELLS, ModelSpec
from .optim import DEFAULT_LEARNING_RATE, OPTIMIZERS, SCHEDULES, Optimizer, scheduled_rate
from .params import CLIP


class ConfigError(ValueError):
    """Hyperparameters that are invalid, or that do not fit the corpus."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters; the checkpoint stores them and a resumed run must match them.

    ``seed=None`` draws one (recorded, so the run can be repeated). ``val_fraction``:
    the last fraction of the corpus is held out for validation (0: train on all).
    ``batch_size``: streams trained per step (1: the seed's loop). ``threads``: how
    many threads a batched step uses; it also fixes how the batch is cut into
    per-thread chunks, which changes results by rounding only (a resumed run may
    change it; every other field must match the checkpoint). The engine runs that
    many chunks of streams, or parts of the hidden units, at once
    (:class:`fastrnn.workspaces.ParallelWorkspace`); one stream of the seed's
    case runs on one thread.
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
    clip: float | None = CLIP  # clip by value to [-clip, clip]; None: off
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
# of Python source the two were even after 100 s (1.356 against 1.348). Its warmup is 100 steps: with 20, some
# seeds stalled early at Adam's 3e-2 (one ended at 2.29 after 90 s); with 100 the same three seeds ended at
# 1.55-1.61 against 1.60, 1.62 and 2.29.
MEDIUM_BUDGET_SECONDS = 90
_MEDIUM_RECURRENT_RECIPE = dict(_RECURRENT_RECIPE, hidden_size=192, warmup_steps=100)
MEDIUM_RECIPES = {"lstm": _MEDIUM_RECURRENT_RECIPE, "gru": _MEDIUM_RECURRENT_RECIPE}
# For a time budget of ten minutes or more: in 10 minutes on 2 cores the 2x128 stack sees tiny shakespeare
# ~57 times and overfits (it ends worse than after 100 s). Once the recurrence ran on the micro-kernel, 2x384 was
# the best of the stacks tried at ten minutes on 2 AVX-512 cores (256, 384 and 512 wide; dropout 0.2 to 0.5;
# Adam at 1e-2 to 3e-2; one run each): the held-out loss of 2x384 stops falling after about a third of the run
# at dropout 0.3 and falls to the end at 0.4; at 3e-2 with dropout 0.5 it spiked, and 2x512 at 2e-2 blew up
# early with one seed. Another seed moves a ten-minute figure as much as the choice between the better of
# these settings does. bench_results/quality-10min has the published run.
LONG_BUDGET_SECONDS = 600
_LONG_RECURRENT_RECIPE = dict(_RECURRENT_RECIPE, hidden_size=384, learning_rate=2e-2, dropout=0.4, warmup_steps=100)
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
