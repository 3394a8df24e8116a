"""Checkpoints: one ``.npz`` file that continues a run exactly; atomic writes; loads that say what is wrong.

Contents (numpy arrays; no pickles): the seed's ``Wxh, Whh, Why, bh, by`` and
Adagrad memories ``mWxh, mWhh, mWhy, mbh, mby``; ``hprev`` ((H,) at batch 1,
else (B, H)); scalars ``p`` (the pointer within each stream's shard), ``n``,
``smooth_loss``; ``pointers`` (B,) where each stream's next window starts in
the training split; ``vocab`` (code points, or byte values, in id order) and
``bytes_mode``; ``config`` (the hyperparameters, with ``batch_size`` and
``threads``) and ``rng_state`` (the sampling generator's ``bit_generator.state``)
as JSON strings; the corpus fingerprint ``corpus_length`` + ``corpus_sha256``
and ``corpus_path`` ("" for the embedded corpus); ``format`` and
``format_version``.

Version 2 added ``pointers`` and the config's ``batch_size`` and ``threads``;
version 1 files (batch 1 only) still load, as batch 1 with the default threads.

Version 3 holds any model: the arrays under the model's own names
(:meth:`fastrnn.model.ModelSpec.param_shapes`; a 1-layer rnn's are the seed's
five), each optimizer buffer under a prefix (``m`` + name for Adagrad's memory,
as before; ``square_avg.``, ``exp_avg.``, ``exp_avg_sq.`` + name), the state
``hprev`` (and ``cprev`` for an LSTM) in the seed's layout for one layer ((H,)
at batch 1, (B, H)) and (L, B, H) above; the config gains ``cell``,
``num_layers``, ``optimizer`` and its options, ``clip_norm``. Version 1 and 2
files load as a 1-layer rnn trained with Adagrad.

Any version may hold ``plan``: the run's plan (:class:`fastrnn.plan.Plan`: steps, time budget and the
wall time spent of it, cadences) as JSON, written by ``fastrnn train`` and continued by its ``--resume``;
a file without it resumes with the fixed defaults of earlier fastrnn.

Version 4 (the same arrays) adds the learning-rate schedule to the config:
``lr_schedule``, ``warmup_steps``, ``decay_steps``, ``min_lr_fraction``; older
files load with a constant rate. Version 5 adds ``dropout``; older files load
without it (0).
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from ._files import OutputWriteError
from .corpus import Corpus, Fingerprint
from .model import ModelParams, describe
from .trainer import CharModel, ConfigError, TrainConfig, Trainer, TrainState, seed_hidden_layout
from .vocab import Vocab

FORMAT = "fastrnn-checkpoint"
FORMAT_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
V1_CONFIG_DEFAULTS = ("batch_size", "threads")  # config fields a version-1 file lacks: take the defaults
V2_CONFIG_DEFAULTS = ("cell", "num_layers", "optimizer", "alpha", "beta1", "beta2", "eps", "clip_norm")  # v1/v2 lack
V3_CONFIG_DEFAULTS = ("lr_schedule", "warmup_steps", "decay_steps", "min_lr_fraction")  # v1-v3 lack: constant rate
V4_CONFIG_DEFAULTS = ("dropout",)  # v1-v4 lack: no dropout
STATE_PREFIX = {"memory": "m", "square_avg": "square_avg.", "exp_avg": "exp_avg.", "exp_avg_sq": "exp_avg_sq."}
HIDDEN_NAMES = {"h": "hprev", "c": "cprev"}
_SCALARS = ("p", "n", "smooth_loss", "bytes_mode", "format_version", "corpus_length")
_STRINGS = ("format", "config", "rng_state", "corpus_sha256", "corpus_path")
REQUIRED = ("vocab",) + _SCALARS + _STRINGS


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, not ours, or does not fit what it is used with."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: hyperparameters, vocabulary, training state, and the corpus it was trained on."""

    path: str
    config: TrainConfig
    vocab: Vocab
    state: TrainState
    corpus_fingerprint: Fingerprint
    corpus_path: str | None  # None: the embedded corpus
    pointers: np.ndarray | None = None  # (B,) stored stream pointers (None in a version-1 file)
    plan: dict | None = None  # the run's plan (:class:`fastrnn.plan.Plan` as a dict); None before plans were kept

    @property
    def model(self) -> CharModel:
        return CharModel(self.state.params, self.vocab)

    @property
    def corpus_name(self) -> str:
        return self.corpus_path if self.corpus_path is not None else "the embedded corpus"

    def check_corpus(self, corpus: Corpus):
        """Refuse a corpus other than the one this checkpoint was trained on."""
        if corpus.vocab.bytes_mode != self.vocab.bytes_mode:
            mode = "raw bytes (--bytes)" if self.vocab.bytes_mode else "characters (no --bytes)"
            raise CheckpointError(f"checkpoint {self.path!r} was trained on {mode}")
        if corpus.fingerprint != self.corpus_fingerprint:
            raise CheckpointError(
                f"{corpus.name!r} ({corpus.fingerprint}) is not the text checkpoint {self.path!r} was trained "
                f"on ({self.corpus_name}: {self.corpus_fingerprint})")
        if corpus.vocab != self.vocab:  # same bytes give the same vocabulary; guards against a damaged file
            raise CheckpointError(f"the vocabulary of {corpus.name!r} differs from checkpoint {self.path!r}")

    def trainer(self, corpus: Corpus, threads: int | None = None, world=None) -> Trainer:
        """A :class:`Trainer` that continues this run exactly on ``corpus`` (which must be the same text).

        ``threads`` overrides the recorded thread count (batched runs): the run
        continues, but a different count cuts the batch into other chunks, so
        results then differ from an uninterrupted run by rounding. ``world``: this
        process's place in a data-parallel run (:class:`Trainer`), any number of
        processes that divides the batch.
        """
        self.check_corpus(corpus)
        config = self.config if threads is None else replace(self.config, threads=threads)
        try:
            trainer = Trainer(corpus, config, self.state, world=world)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {self.path!r} does not fit its corpus: {e}") from None
        if self.pointers is not None and not np.array_equal(self.pointers, trainer.pointers):
            raise CheckpointError(f"checkpoint {self.path!r} does not fit its corpus: its stream pointers "
                                  f"{self.pointers.tolist()} are not those of shards of {trainer.shard_length:,}")
        return trainer


def _version():
    from . import __version__  # at call time: the package may still be importing this module
    return __version__


def checkpoint_arrays(trainer: Trainer) -> dict:
    """The arrays a checkpoint of ``trainer`` holds, by name."""
    corpus = trainer.corpus
    arrays = dict(trainer.params.arrays)
    for state_name, buffers in zip(trainer.optimizer.state_names, trainer.opt_state):
        arrays.update((STATE_PREFIX[state_name] + name, a) for name, a in buffers.arrays.items())
    for state_name, h in zip(trainer.spec.state_names, trainer.hidden):
        arrays[HIDDEN_NAMES[state_name]] = seed_hidden_layout(h)
    arrays.update(
        p=np.int64(trainer.p), n=np.int64(trainer.n), pointers=trainer.pointers,
        smooth_loss=np.float64(trainer.smooth_loss),
        vocab=trainer.vocab.codes, bytes_mode=np.bool_(trainer.vocab.bytes_mode),
        config=np.str_(json.dumps(trainer.config.to_dict())),
        rng_state=np.str_(json.dumps(trainer.rng.bit_generator.state)),
        corpus_length=np.int64(corpus.fingerprint.length), corpus_sha256=np.str_(corpus.fingerprint.sha256),
        corpus_path=np.str_(corpus.path or ""),
        format=np.str_(FORMAT), format_version=np.int64(FORMAT_VERSION), fastrnn_version=np.str_(_version()),
    )
    plan = getattr(trainer, "plan", None)  # set by the command line's run loop
    if plan is not None:
        arrays["plan"] = np.str_(json.dumps(plan))
    return arrays


def _file_mode(path):
    """The mode a plain ``open(path, 'w')`` would give (mkstemp's files are private)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_checkpoint(path, trainer: Trainer) -> Path:
    """Write ``trainer``'s checkpoint to ``path`` atomically; returns the path.

    The file is written to a temporary file in the same folder, flushed and
    fsynced, then renamed over ``path``: a crash at any moment leaves either the
    old checkpoint or the new one, never a partial file. An ``OSError`` (a full
    disk...) is an :class:`~fastrnn._files.OutputWriteError`, "cannot write 'PATH':
    REASON", after the temporary file is removed: the old checkpoint is untouched.
    """
    path = Path(path)
    if not trainer.is_finite():
        raise CheckpointError("refusing to checkpoint parameters that are not finite")
    arrays = checkpoint_arrays(trainer)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise OutputWriteError(path, e) from None
    try:
        os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):  # a full disk, a quota, an I/O error: one line naming the file
            raise OutputWriteError(path, e) from None
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def _bad(path, why):
    return CheckpointError(f"{str(path)!r} is not a usable fastrnn checkpoint: {why}")


def _read_npz(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a file")
    if not zipfile.is_zipfile(path):
        raise _bad(path, "not an .npz file (truncated, or some other kind of file)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise _bad(path, f"cannot read it ({e})") from None


def _scalar(arrays, name, path, kind):
    a = arrays[name]
    if a.shape != () or a.dtype.kind not in kind:
        raise _bad(path, f"{name} must be a scalar")
    return a.item()


def load_checkpoint(path) -> Checkpoint:
    """Read and validate a checkpoint; every problem is a :class:`CheckpointError` that says what is wrong."""
    arrays = _read_npz(path)
    path = str(path)
    if "format" not in arrays or arrays["format"].shape != () or str(arrays["format"]) != FORMAT:
        raise _bad(path, "it has no fastrnn format marker")
    version = arrays.get("format_version")
    if version is None or version.shape != () or version.dtype.kind not in "iu":
        raise _bad(path, "it has no format version")
    version = int(version)
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path!r} has format version {version}; this fastrnn "
                              f"({_version()}) reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    missing = [name for name in REQUIRED + (("pointers",) if version >= 2 else ()) if name not in arrays]
    if missing:
        raise _bad(path, f"missing {', '.join(missing)}")
    for name in _STRINGS:
        if arrays[name].shape != () or arrays[name].dtype.kind != "U":
            raise _bad(path, f"{name} must be a string")
    try:
        config_dict = json.loads(str(arrays["config"]))
        rng_state = json.loads(str(arrays["rng_state"]))
    except json.JSONDecodeError as e:
        raise _bad(path, f"damaged JSON ({e})") from None
    known = {f.name for f in fields(TrainConfig)}
    if version <= 4:
        known -= set(V4_CONFIG_DEFAULTS)
    if version <= 3:
        known -= set(V3_CONFIG_DEFAULTS)
    if version <= 2:
        known -= set(V2_CONFIG_DEFAULTS)
    if version == 1:
        known -= set(V1_CONFIG_DEFAULTS)
    if not isinstance(config_dict, dict) or set(config_dict) != known:
        raise _bad(path, "its hyperparameters are incomplete")
    try:
        config = TrainConfig(**config_dict).validate()
        if config.seed is None:
            raise ConfigError("no seed recorded")
    except ConfigError as e:
        raise _bad(path, f"bad hyperparameters ({e})") from None
    try:
        vocab = Vocab(arrays["vocab"], bool(_scalar(arrays, "bytes_mode", path, "b")))
    except ValueError as e:
        raise _bad(path, f"bad vocabulary ({e})") from None
    dtype = np.dtype(config.dtype)
    spec = config.spec(len(vocab))
    L, H, B = spec.num_layers, config.hidden_size, config.batch_size
    hidden_shape = (H,) if L == 1 and B == 1 else (B, H) if L == 1 else (L, B, H)
    prefixes = [STATE_PREFIX[s] for s in config.optimizer_settings.state_names]
    expected = {prefix + name: shape for prefix in ("", *prefixes) for name, shape in spec.param_shapes()}
    expected.update((HIDDEN_NAMES[s], hidden_shape) for s in spec.state_names)
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise _bad(path, f"missing {', '.join(missing)} (a {describe(spec)} trained with {config.optimizer})")
    for name, shape in expected.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != dtype:
            raise _bad(path, f"{name} has shape {a.shape} {a.dtype}, expected {shape} {dtype}")
        if not np.isfinite(a).all():
            raise _bad(path, f"{name} holds NaN or infinite values")
    smooth_loss = _scalar(arrays, "smooth_loss", path, "f")
    if not np.isfinite(smooth_loss):
        raise _bad(path, "smooth_loss is not finite")
    p, n = _scalar(arrays, "p", path, "iu"), _scalar(arrays, "n", path, "iu")
    if p < 0 or n < 0 or p % config.seq_length:
        raise _bad(path, f"bad data pointer p={p} or step n={n}")
    pointers = arrays.get("pointers") if version >= 2 else None
    if pointers is not None:
        if pointers.shape != (B,) or pointers.dtype.kind not in "iu" or int(pointers[0]) != p:
            raise _bad(path, f"pointers must be {B} stream positions, the first equal to p={p}")
        pointers = pointers.astype(np.int64)
    try:
        np.random.default_rng().bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError) as e:
        raise _bad(path, f"bad random generator state ({e})") from None
    length, sha = _scalar(arrays, "corpus_length", path, "iu"), str(arrays["corpus_sha256"])
    if len(sha) != 64:
        raise _bad(path, "bad corpus fingerprint")
    names = [name for name, _ in spec.param_shapes()]
    params = ModelParams.from_arrays(spec, {name: arrays[name] for name in names}, dtype)
    opt_state = tuple(ModelParams.from_arrays(spec, {name: arrays[prefix + name] for name in names}, dtype)
                      for prefix in prefixes)
    hidden = tuple(np.ascontiguousarray(arrays[HIDDEN_NAMES[s]].reshape(L, B, H)) for s in spec.state_names)
    state = TrainState(params, opt_state, hidden, int(p), int(n), float(smooth_loss), rng_state)
    return Checkpoint(path, config, vocab, state, Fingerprint(int(length), sha), str(arrays["corpus_path"]) or None,
                      pointers, _plan(arrays, path))


def _plan(arrays, path) -> dict | None:
    """The run's plan (optional member ``plan``, JSON), checked field by field; None when absent."""
    from .plan import Plan

    if "plan" not in arrays:
        return None
    a = arrays["plan"]
    try:
        if a.shape != () or a.dtype.kind != "U":
            raise ValueError("not a string")
        plan = Plan.from_dict(json.loads(str(a)))
        ints = ("steps", "log_every", "eval_every", "sample_every", "checkpoint_every", "sample_length")
        for name in ints:
            value = getattr(plan, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} {value!r}")
        for name in ("time_budget", "elapsed"):
            value = getattr(plan, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value >= 0):
                raise ValueError(f"{name} {value!r}")
    except (ValueError, TypeError, AttributeError) as e:
        raise _bad(path, f"bad run plan ({e})") from None
    return plan.to_dict()
