"""Optimizers and gradient clipping over flat parameter buffers: validate, then call one exact kernel.

| optimizer | update (g: the clipped gradient, t: the 1-based step) | fastrnn default | torch.optim default |
|---|---|---|---|
| ``adagrad`` | ``m += g*g; p -= lr * g / sqrt(m + eps)`` (the seed's; torch's Adagrad with ``initial_accumulator_value=eps, eps=0``) | lr 0.1, eps 1e-8 | lr 0.01, eps 1e-10 outside the sqrt |
| ``rmsprop`` | ``v = alpha*v + (1-alpha)*g*g; p -= lr * g / (sqrt(v) + eps)`` (torch.optim.RMSprop) | lr 2e-3, alpha 0.95, eps 1e-8 (char-rnn's) | lr 0.01, alpha 0.99, eps 1e-8 |
| ``adam`` | ``m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g; p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps)`` (torch.optim.Adam) | lr 2e-3 (torch-rnn's), betas 0.9/0.999, eps 1e-8 | lr 1e-3, same betas and eps |

Clipping comes first, in one of two ways: by value (the seed's, ``clip``: each
entry to [-clip, clip]) or by global norm (``clip_norm``: as
``torch.nn.utils.clip_grad_norm_``, every entry times ``min(1, clip_norm /
(||g|| + 1e-6))`` with ||g|| the 2-norm of all gradients together).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import optim_kernels
from ._threads import numba_threads

OPTIMIZERS = ("adagrad", "rmsprop", "adam")
DEFAULT_LEARNING_RATE = {"adagrad": 0.1, "rmsprop": 2e-3, "adam": 2e-3}
STATE_NAMES = {"adagrad": ("memory",), "rmsprop": ("square_avg",), "adam": ("exp_avg", "exp_avg_sq")}
SCHEDULES = ("constant", "cosine")
NORM_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s


@dataclass(frozen=True)
class Optimizer:
    """An optimizer's name and hyperparameters (``learning_rate=None``: the optimizer's default)."""

    name: str = "adagrad"
    learning_rate: float | None = None
    alpha: float = 0.95
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if self.learning_rate is None:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE[self.name])
        check_optimizer_values(self)

    @property
    def state_names(self) -> tuple:
        """Names of the per-parameter state buffers (each of the parameters' layout)."""
        return STATE_NAMES[self.name]


def check_optimizer_values(opt) -> None:
    """Raise ``ValueError`` naming the first hyperparameter out of range."""
    def number(name, value):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        return float(value)

    if not number("learning_rate", opt.learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0, got {opt.learning_rate}")
    if not number("eps", opt.eps) > 0:
        raise ValueError(f"eps must be > 0, got {opt.eps}")
    for name in ("alpha", "beta1", "beta2"):
        value = number(name, getattr(opt, name))
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")


def clip_value(clip, dtype):
    """The value limit as a ``dtype`` scalar; ``None`` (or 0): no clipping (the largest finite value)."""
    if clip is None or clip == 0:
        return np.finfo(dtype).max
    clip = float(clip)
    if not (math.isfinite(clip) and clip > 0):
        raise ValueError(f"clip must be a positive finite number, got {clip}")
    return np.dtype(dtype).type(clip)


def norm_scale(grad_flat, clip, clip_norm) -> float:
    """The factor of global-norm clipping, ``min(1, clip_norm / (||clip(g)|| + 1e-6))``; 1.0 when ``clip_norm`` is None."""
    if clip_norm is None:
        return 1.0
    norm = math.sqrt(optim_kernels.sum_of_squares(grad_flat, clip_value(clip, grad_flat.dtype)))
    return min(1.0, float(clip_norm) / (norm + NORM_EPS))


def scheduled_rate(learning_rate, step, schedule="constant", warmup_steps=0, decay_steps=None,
                   min_fraction=0.1) -> float:
    """The learning rate of the 1-based update ``step`` under a schedule.

    Warmup: steps 1..``warmup_steps`` rise linearly to ``learning_rate``
    (``learning_rate * step / warmup_steps``). Then ``"constant"`` keeps it;
    ``"cosine"`` decays it along half a cosine from ``learning_rate`` right after
    the warmup to ``min_fraction * learning_rate`` at step ``decay_steps``, and
    keeps that floor after (``decay_steps`` None: not fixed yet, the peak rate).
    """
    if warmup_steps and step <= warmup_steps:
        return learning_rate * step / warmup_steps
    if schedule == "constant" or decay_steps is None:
        return learning_rate
    span = decay_steps - warmup_steps
    progress = 1.0 if span <= 0 else min(1.0, (step - warmup_steps) / span)
    return learning_rate * (min_fraction + (1.0 - min_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress)))


#: Fewest entries per thread before :func:`apply` runs its update in pieces on several threads.
PIECE_MIN = 1 << 20


def _in_pieces(kernel, pieces_kernel, arrays, scalars, threads):
    """``kernel(*arrays, *scalars)``, or, from ``PIECE_MIN`` entries a thread on, its ``pieces_kernel``: the 1-D
    ``arrays`` cut into up to ``threads`` contiguous pieces run at once on Numba's threads (element-wise: the
    same bits as one call)."""
    n = arrays[0].shape[0]
    pieces = min(int(threads), n // PIECE_MIN)
    if pieces < 2:
        kernel(*arrays, *scalars)
        return
    bounds = np.array([p * n // pieces for p in range(pieces + 1)], np.int64)
    with numba_threads(pieces):
        pieces_kernel(bounds, *arrays, *scalars)


def apply(opt: Optimizer, param_flat, grad_flat, states, step, clip=5.0, clip_norm=None, learning_rate=None,
          threads=1):
    """Clip ``grad_flat`` (in place) and apply ``opt`` to ``param_flat`` and ``states`` (in place).

    param_flat, grad_flat and each of ``states`` (one per :attr:`Optimizer.state_names`):
    1-D C-contiguous arrays of one float dtype and length. ``step``: the
    1-based number of this update (Adam's bias correction). ``clip``: value
    limit (None: off); ``clip_norm``: global-norm limit (None: off).
    ``learning_rate``: this step's rate (a schedule's), instead of ``opt.learning_rate``.
    ``threads``: the update runs in that many pieces at once from ``PIECE_MIN`` entries a piece on
    (element-wise: the same bits; the global norm is one sum in order).
    """
    dtype = param_flat.dtype
    t = dtype.type
    limit = clip_value(clip, dtype)
    scale = t(norm_scale(grad_flat, limit, clip_norm))
    lr = float(opt.learning_rate if learning_rate is None else learning_rate)
    if opt.name == "adagrad":
        (memory,) = states
        _in_pieces(optim_kernels.adagrad_update, optim_kernels.adagrad_pieces, (param_flat, grad_flat, memory),
                   (t(lr), t(opt.eps), limit, scale), threads)
    elif opt.name == "rmsprop":
        (square_avg,) = states
        _in_pieces(optim_kernels.rmsprop_update, optim_kernels.rmsprop_pieces, (param_flat, grad_flat, square_avg),
                   (t(lr), t(opt.alpha), t(1.0 - opt.alpha), t(opt.eps), limit, scale), threads)
    else:
        exp_avg, exp_avg_sq = states
        step = int(step)
        if step < 1:
            raise ValueError(f"step must be >= 1, got {step}")
        bias_correction1 = 1.0 - opt.beta1 ** step
        bias_correction2 = 1.0 - opt.beta2 ** step
        _in_pieces(optim_kernels.adam_update, optim_kernels.adam_pieces, (param_flat, grad_flat, exp_avg, exp_avg_sq),
                   (t(-lr / bias_correction1), t(1.0 - opt.beta1), t(opt.beta2), t(1.0 - opt.beta2),
                    t(math.sqrt(bias_correction2)), t(opt.eps), limit, scale), threads)
