"""fastrnn: character-level RNN, LSTM and GRU language models, trained fast on a CPU with Numba kernels.

The names below are loaded on first use (PEP 562), so that ``import fastrnn``
itself is cheap: the ``fastrnn`` command installs its signal handling before
numpy and Numba are imported (see :mod:`fastrnn._entry`).
"""
import importlib
import importlib.util

__version__ = "0.1.0"

_EXPORTS = {
    "params": ("Params",),
    "model": ("CELLS", "ModelParams", "ModelSpec", "init_params"),
    "rnn": ("Workspace", "adagrad_update", "log_probs", "sample", "sequence_loss", "train_step", "train_steps"),
    "engine": ("loss_and_grads",),
    "interop": ("from_torch", "to_torch"),
    "optim": ("OPTIMIZERS", "Optimizer"),
    "vocab": ("Vocab",),
    "corpus": ("Corpus", "CorpusError", "load_corpus"),
    "charmodel": ("CharModel", "Score"),
    "config": ("ConfigError", "TrainConfig", "recipe_config"),
    "trainer": ("Trainer", "TrainingDiverged"),
    "checkpoint": ("Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint"),
    "fine_tuning": ("fine_tune",),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = [
    "Params", "ModelParams", "ModelSpec", "CELLS", "init_params", "to_torch", "from_torch",
    "Optimizer", "OPTIMIZERS", "Workspace", "loss_and_grads", "adagrad_update", "train_step",
    "train_steps", "sample", "sequence_loss", "log_probs", "reference",
    "Vocab", "Corpus", "CorpusError", "load_corpus",
    "TrainConfig", "Trainer", "CharModel", "Score", "ConfigError", "TrainingDiverged", "recipe_config",
    "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint", "fine_tune",
]


def __getattr__(name):
    module = _WHERE.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f".{name}", __name__)  # a submodule, e.g. fastrnn.reference
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
