"""fastrnn: min-char-rnn's vanilla tanh RNN, trained fast on a CPU with Numba kernels."""
from .params import Params, init_params
from .rnn import (
    Workspace, adagrad_update, log_probs, loss_and_grads, sample, sequence_loss, train_step, train_steps,
)
from . import reference
from .vocab import Vocab
from .corpus import Corpus, CorpusError, load_corpus
from .trainer import CharModel, ConfigError, Score, TrainConfig, Trainer, TrainingDiverged
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "Params", "init_params", "Workspace", "loss_and_grads", "adagrad_update", "train_step",
    "train_steps", "sample", "sequence_loss", "log_probs", "reference",
    "Vocab", "Corpus", "CorpusError", "load_corpus",
    "TrainConfig", "Trainer", "CharModel", "Score", "ConfigError", "TrainingDiverged",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
]
__version__ = "0.1.0"
