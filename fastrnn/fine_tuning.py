"""Fine-tuning: a new run on any text whose weights start from a checkpoint's (``fastrnn train --init-from``).

The model keeps its parent's architecture (cell, layers, hidden size) and vocabulary: every parent symbol
keeps its id, and the new text's other symbols are appended (:meth:`fastrnn.vocab.Vocab.extended`). The
weights are a fresh model's of that size and the run's seed (:func:`fastrnn.model.init_params`) with the
parent's copied over them (:func:`grafted`): an appended symbol's input-weight column, output-weight row
and output bias stay as the fresh model drew them. The optimizer state, step count, stream pointers and
learning-rate schedule start fresh, as in any new run.
"""
from __future__ import annotations

import os
from dataclasses import asdict

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint
from ._validate import check_model
from .config import ConfigError, TrainConfig, recipe_config
from .model import ModelParams, init_params
from .prepared import file_sha256
from .trainer import Trainer

ARCHITECTURE = ("cell", "num_layers", "hidden_size")  # what a fine-tuned model takes from its parent


def architecture_clashes(parent: TrainConfig, given: dict) -> list:
    """``[(name, given value, parent's value), ...]`` for each architecture field of ``given`` that differs."""
    return [(name, given[name], getattr(parent, name)) for name in ARCHITECTURE
            if given.get(name) is not None and given[name] != getattr(parent, name)]


def check_architecture(parent: TrainConfig, given: dict):
    """A :class:`~fastrnn.config.ConfigError` naming each architecture field of ``given`` not the parent's."""
    clashes = architecture_clashes(parent, given)
    if clashes:
        raise ConfigError("a fine-tuned model keeps its parent's architecture: " + ", ".join(
            f"{name.replace('_', '-')} {value} is not the parent's {was}" for name, value, was in clashes))


def fine_tune_config(parent: TrainConfig, time_budget=None, **given) -> TrainConfig:
    """A new run's config (the recipe's for the parent's cell, with ``given`` over it) in the parent's
    architecture, and its dtype unless ``given`` names one. A given architecture field that differs is a
    :class:`~fastrnn.config.ConfigError` naming it."""
    check_architecture(parent, given)
    given = {**given, **{name: getattr(parent, name) for name in ARCHITECTURE}}
    given.setdefault("dtype", parent.dtype)
    return recipe_config(time_budget=time_budget, **given).validate()


def grafted(fresh: ModelParams, parent: ModelParams) -> ModelParams:
    """``fresh`` (a new model's params, vocabulary V' >= V) with ``parent``'s arrays (vocabulary V) copied
    over their leading part, in place, cast to ``fresh``'s dtype: every array of the same shape whole, the
    input weights' first V columns and the output weights' and biases' first V rows. Returns ``fresh``."""
    for name, target in fresh.arrays.items():
        source = parent.arrays[name]
        if source.ndim != target.ndim or any(s > t for s, t in zip(source.shape, target.shape)):
            raise ValueError(f"{name} of shape {source.shape} does not fit in {target.shape}")
        target[tuple(slice(0, s) for s in source.shape)] = source
    return fresh


def fine_tune(parent, corpus, config: TrainConfig | None = None, world=None) -> Trainer:
    """A :class:`~fastrnn.Trainer` for a new run on ``corpus`` that starts from ``parent``'s weights.

    ``parent``: a :class:`~fastrnn.Checkpoint` or a checkpoint's path (a best file too). ``corpus``: any
    text of the same kind (characters, or bytes for a bytes model), in its own vocabulary. ``config``: the
    run's hyperparameters; None takes :func:`fine_tune_config`'s (the parent's architecture and dtype, the
    recipe for the rest). Its cell, layers and hidden size must be the parent's. The trainer's ``parent``
    (saved in its checkpoints) records the parent's path, fingerprint, step and corpus.
    """
    if not isinstance(parent, Checkpoint):
        parent = load_checkpoint(parent)
    if corpus.vocab.bytes_mode != parent.vocab.bytes_mode:
        kinds = ("raw bytes (--bytes)", "characters")
        mine, theirs = kinds if parent.vocab.bytes_mode else kinds[::-1]
        raise ConfigError(f"checkpoint {parent.path!r} models {mine}; {corpus.name!r} is read as {theirs}")
    if config is None:
        config = fine_tune_config(parent.config)
    else:
        check_architecture(parent.config, asdict(config))
    vocab = parent.vocab.extended(corpus.vocab)
    config = config.with_seed()  # the fresh part of the weights is drawn from it
    fresh = check_model(init_params(len(vocab), config.hidden_size, config.cell, config.num_layers,
                                    seed=config.seed, dtype=np.dtype(config.dtype)))
    trainer = Trainer(corpus.in_vocab(vocab), config, world=world,
                      params=grafted(fresh, parent.state.params))
    trainer.parent = parent_record(parent)
    return trainer


def parent_record(parent: Checkpoint) -> dict:
    """What a fine-tuned run's checkpoints say of their parent: path, length and sha256, step, corpus."""
    fingerprint = file_sha256(parent.path)
    return {"path": os.path.abspath(parent.path), "length": fingerprint.length, "sha256": fingerprint.sha256,
            "step": int(parent.state.n), "corpus": parent.corpus_path or ""}

