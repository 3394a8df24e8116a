"""fastrnn: character-level RNN, LSTM and GRU language models, trained fast on a CPU with Numba kernels."""
from .params import Params
from .model import CELLS, ModelParams, ModelSpec, init_params
from .rnn import Workspace, adagrad_update, log_probs, sample, sequence_loss, train_step, train_steps
from .engine import loss_and_grads
from .interop import from_torch, to_torch
from .optim import OPTIMIZERS, Optimizer
from . import reference
from .vocab import Vocab
from .corpus import Corpus, CorpusError, load_corpus
from .trainer import CharModel, ConfigError, Score, TrainConfig, Trainer, TrainingDiverged
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

__all__ = [
    "Params", "ModelParams", "ModelSpec", "CELLS", "init_params", "to_torch", "from_torch",
    "Optimizer", "OPTIMIZERS", "Workspace", "loss_and_grads", "adagrad_update", "train_step",
    "train_steps", "sample", "sequence_loss", "log_probs", "reference",
    "Vocab", "Corpus", "CorpusError", "load_corpus",
    "TrainConfig", "Trainer", "CharModel", "Score", "ConfigError", "TrainingDiverged",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
]
__version__ = "0.1.0"
