"""What a training run carries from one step to the next (:class:`TrainState`, what a checkpoint stores
besides the config and the vocabulary), the state's layouts, and the error a diverged run raises."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import ModelParams


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


def seed_hidden_layout(h: np.ndarray) -> np.ndarray:
    """A (L, B, H) state in the seed's layout where there is one: (H,) for one layer and one stream,
    (B, H) for one layer, (L, B, H) otherwise (views)."""
    if h.shape[0] == 1:
        return h[0, 0] if h.shape[1] == 1 else h[0]
    return h


class StateViews:
    """``hprev`` of anything with ``hidden`` (a state, a trainer)."""

    @property
    def hprev(self) -> np.ndarray:
        """The hidden state h (a view) in the seed's layout: (H,) at batch 1, (B, H) for one layer, else (L, B, H)."""
        return seed_hidden_layout(self.hidden[0])


@dataclass
class TrainState(StateViews):
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
