"""fastrnn: min-char-rnn's vanilla tanh RNN, trained fast on a CPU with Numba kernels."""
from .params import Params, init_params
from .rnn import (
    Workspace, adagrad_update, log_probs, loss_and_grads, sample, sequence_loss, train_step, train_steps,
)
from . import reference

__all__ = [
    "Params", "init_params", "Workspace", "loss_and_grads", "adagrad_update", "train_step",
    "train_steps", "sample", "sequence_loss", "log_probs", "reference",
]
__version__ = "0.1.0"
