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

A best file (``fastrnn train --keep-best``, :func:`best_path`) is a checkpoint with the string
``best_of``, the path of the run's checkpoint: sampling, scoring, export and ``info`` take it as
any checkpoint; ``train --resume`` refuses it (resume the run's own checkpoint).

Version 4 (the same arrays) adds the learning-rate schedule to the config:
``lr_schedule``, ``warmup_steps``, ``decay_steps``, ``min_lr_fraction``; older
files load with a constant rate. Version 5 adds ``dropout``; older files load
without it (0). Version 6: a fine-tuned model's ``vocab`` is its parent's
followed by its own text's new symbols (not sorted overall), and its optional
``parent`` (JSON: the parent checkpoint's ``path``, ``length``, ``sha256``,
``step`` and ``corpus``) says where it started (:mod:`fastrnn.fine_tuning`).
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from ._files import OutputWriteError
from .charmodel import CharModel
from .checkpoint_file import (MAX_NAMED, MAX_PATH_CHARS, MAX_VOCAB, CheckpointError, Members, best_of_member,
                              open_npz, parent_member, plan_member, scalar_member, size_text, string_member,
                              unusable)
from .config import ConfigError, TrainConfig, unused_options
from .corpus import Corpus, Fingerprint
from .limits import fits, parameter_count
from .model import ModelParams, ModelSpec, describe
from .train_state import TrainState, seed_hidden_layout
from .trainer import Trainer
from .vocab import Vocab

FORMAT = "fastrnn-checkpoint"
FORMAT_VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)
V1_CONFIG_DEFAULTS = ("batch_size", "threads")  # config fields a version-1 file lacks: take the defaults
V2_CONFIG_DEFAULTS = ("cell", "num_layers", "optimizer", "alpha", "beta1", "beta2", "eps", "clip_norm")  # v1/v2 lack
V3_CONFIG_DEFAULTS = ("lr_schedule", "warmup_steps", "decay_steps", "min_lr_fraction")  # v1-v3 lack: constant rate
V4_CONFIG_DEFAULTS = ("dropout",)  # v1-v4 lack: no dropout
STATE_PREFIX = {"memory": "m", "square_avg": "square_avg.", "exp_avg": "exp_avg.", "exp_avg_sq": "exp_avg_sq."}
HIDDEN_NAMES = {"h": "hprev", "c": "cprev"}
_SCALARS = ("p", "n", "smooth_loss", "bytes_mode", "format_version", "corpus_length")
_STRINGS = ("format", "config", "rng_state", "corpus_sha256", "corpus_path")
REQUIRED = ("vocab",) + _SCALARS + _STRINGS


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
    format_version: int = FORMAT_VERSION
    written_by: str | None = None  # the fastrnn version that wrote the file; None where it was not recorded
    best_of: str | None = None  # a best file: the path of its run's checkpoint (else None)
    parent: dict | None = None  # a fine-tuned model: its parent checkpoint (path, length, sha256, step, corpus)

    @property
    def model(self) -> CharModel:
        return CharModel(self.state.params, self.vocab)

    @property
    def corpus_name(self) -> str:
        return self.corpus_path if self.corpus_path is not None else "the embedded corpus"

    def check_corpus(self, corpus: Corpus):
        """Refuse a corpus other than the one this checkpoint was trained on (in its own vocabulary, or in
        this checkpoint's, which a fine-tuned model's extends)."""
        if corpus.vocab.bytes_mode != self.vocab.bytes_mode:
            mode = "raw bytes (--bytes)" if self.vocab.bytes_mode else "characters (no --bytes)"
            raise CheckpointError(f"checkpoint {self.path!r} was trained on {mode}")
        if corpus.fingerprint != self.corpus_fingerprint:
            raise CheckpointError(
                f"{corpus.name!r} ({corpus.fingerprint}) is not the text checkpoint {self.path!r} was trained "
                f"on ({self.corpus_name}: {self.corpus_fingerprint})")
        # same bytes give the same vocabulary; guards against a damaged file
        if corpus.vocab != self.vocab and (self.vocab.ids_of(corpus.vocab.codes) < 0).any():
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
            trainer = Trainer(corpus.in_vocab(self.vocab), config, self.state, world=world)
        except ValueError as e:
            raise CheckpointError(f"checkpoint {self.path!r} does not fit its corpus: {e}") from None
        trainer.parent = self.parent
        if self.pointers is not None and not np.array_equal(self.pointers, trainer.pointers):
            raise CheckpointError(f"checkpoint {self.path!r} does not fit its corpus: its stream pointers "
                                  f"{self.pointers.tolist()} are not those of shards of {trainer.shard_length:,}")
        return trainer


def _version():
    from . import __version__  # at call time: the package may still be importing this module
    return __version__


def best_path(checkpoint) -> Path:
    """Where ``--keep-best`` saves beside ``checkpoint``: ``x.npz`` -> ``x.best.npz``, ``x`` -> ``x.best.npz``."""
    path = Path(checkpoint)
    stem = path.name[:-len(".npz")] if path.name.endswith(".npz") and len(path.name) > 4 else path.name
    return path.with_name(stem + ".best.npz")


def checkpoint_arrays(trainer: Trainer, best_of=None) -> dict:
    """The arrays a checkpoint of ``trainer`` holds, by name; ``best_of``: a best file's run checkpoint path."""
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
    if best_of is not None:
        arrays["best_of"] = np.str_(str(best_of))
    if getattr(trainer, "parent", None) is not None:
        arrays["parent"] = np.str_(json.dumps(trainer.parent))
    return arrays


def _file_mode(path):
    """The mode a plain ``open(path, 'w')`` would give (mkstemp's files are private)."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def save_checkpoint(path, trainer: Trainer, best_of=None) -> Path:
    """Write ``trainer``'s checkpoint to ``path`` atomically; returns the path. ``best_of``: the file is the
    best model so far of the run saving to checkpoint ``best_of`` (a best file, not resumable).

    The file is written to a temporary file in the same folder, flushed and
    fsynced, then renamed over ``path``: a crash at any moment leaves either the
    old checkpoint or the new one, never a partial file. An ``OSError`` (a full
    disk...) is an :class:`~fastrnn._files.OutputWriteError`, "cannot write 'PATH':
    REASON", after the temporary file is removed: the old checkpoint is untouched.
    """
    path = Path(path)
    if not trainer.is_finite():
        raise CheckpointError("refusing to checkpoint parameters that are not finite")
    arrays = checkpoint_arrays(trainer, best_of)
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


def _has_marker(members) -> bool:
    if "format" not in members:
        return False
    header = members.header("format")
    return (header.shape == () and header.dtype.kind == "U" and header.dtype.itemsize == 4 * len(FORMAT)
            and str(members.read("format")) == FORMAT)


def has_checkpoint_marker(path) -> bool:
    """Whether ``path`` is an ``.npz`` holding fastrnn's format marker (reads nothing else); False if unreadable."""
    try:
        with open_npz(path) as zf:
            return _has_marker(Members(zf, str(path), os.path.getsize(path)))
    except (CheckpointError, OSError):
        return False


def _check_claimed_size(members, spec: ModelSpec, config: TrainConfig, buffers: int):
    """Refuse a config whose arrays the file cannot hold, or that this machine cannot load, before reading them.

    The claim: the parameters, ``buffers`` optimizer buffers of the same size, the state and the stream
    pointers. Loading holds each array read and its copy in the model's buffer.
    """
    L, H, B = spec.num_layers, spec.hidden_size, config.batch_size
    parameters = parameter_count(spec.cell, L, spec.vocab_size, H)
    item = np.dtype(config.dtype).itemsize
    claimed = item * ((1 + buffers) * parameters + len(spec.state_names) * L * B * H) + 8 * B
    what = f"a {describe(spec)} at batch {B:,} trained with {config.optimizer}"
    if claimed > members.stored_bytes:
        raise unusable(members.path, f"its config claims {what} ({size_text(claimed)} of arrays), more than the "
                                 f"{size_text(members.stored_bytes)} it holds")
    ok, note = fits(2 * claimed)
    if not ok:
        raise CheckpointError(f"checkpoint {members.path!r} holds {what}; loading it {note}")


def _missing(names, spec, config) -> str:
    named = ", ".join(names[:MAX_NAMED]) + (f" and {len(names) - MAX_NAMED:,} more" if len(names) > MAX_NAMED else "")
    return f"missing {named} (a {describe(spec)} trained with {config.optimizer})"


def load_checkpoint(path) -> Checkpoint:
    """Read and validate a checkpoint; every problem is a :class:`CheckpointError` that says what is wrong.

    What the file claims is checked before anything of that size is allocated: each member's header
    against its stored size, the config's model against the arrays present and this machine's memory
    (:func:`fastrnn.limits.fits`), each array's header against the config. Only the members a
    checkpoint of its version holds are read; any other member is never decompressed.
    """
    with open_npz(path) as zf:
        return _load(Members(zf, str(path), os.path.getsize(path)))


def _load(members: Members) -> Checkpoint:
    path = members.path
    if not _has_marker(members):
        raise unusable(path, "it has no fastrnn format marker")
    if "format_version" not in members:
        raise unusable(path, "it has no format version")
    header = members.header("format_version")
    if header.shape != () or header.dtype.kind not in "iu":
        raise unusable(path, "it has no format version")
    version = int(members.read("format_version"))
    if version not in READABLE_VERSIONS:
        raise CheckpointError(f"checkpoint {path!r} has format version {version}; this fastrnn "
                              f"({_version()}) reads versions {', '.join(map(str, READABLE_VERSIONS))}")
    missing = [name for name in REQUIRED + (("pointers",) if version >= 2 else ()) if name not in members]
    if missing:
        raise unusable(path, f"missing {', '.join(missing)}")
    strings = {name: string_member(members, name) for name in _STRINGS}
    try:
        config_dict = json.loads(strings["config"])
        rng_state = json.loads(strings["rng_state"])
    except json.JSONDecodeError as e:
        raise unusable(path, f"damaged JSON ({e})") from None
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
        raise unusable(path, "its hyperparameters are incomplete")
    if isinstance(config_dict.get("optimizer"), str):  # options an older fastrnn recorded though unused: their defaults
        config_dict.update((name, getattr(TrainConfig, name)) for name in unused_options(config_dict["optimizer"])
                           if name in config_dict)
    try:
        config = TrainConfig(**config_dict).validate()
        if config.seed is None:
            raise ConfigError("no seed recorded")
    except ConfigError as e:
        raise unusable(path, f"bad hyperparameters ({e})") from None
    header = members.header("vocab")
    if len(header.shape) != 1 or header.shape[0] > MAX_VOCAB:
        raise unusable(path, f"bad vocabulary (shape {header.shape}, expected at most ({MAX_VOCAB},))")
    try:
        vocab = Vocab(members.read("vocab"), bool(scalar_member(members, "bytes_mode", "b")))
    except ValueError as e:
        raise unusable(path, f"bad vocabulary ({e})") from None
    dtype = np.dtype(config.dtype)
    spec = config.spec(len(vocab))
    prefixes = [STATE_PREFIX[s] for s in config.optimizer_settings.state_names]
    _check_claimed_size(members, spec, config, len(prefixes))
    L, H, B = spec.num_layers, config.hidden_size, config.batch_size
    hidden_shape = (H,) if L == 1 and B == 1 else (B, H) if L == 1 else (L, B, H)
    expected = {prefix + name: shape for prefix in ("", *prefixes) for name, shape in spec.param_shapes()}
    expected.update((HIDDEN_NAMES[s], hidden_shape) for s in spec.state_names)
    missing = [name for name in expected if name not in members]
    if missing:
        raise unusable(path, _missing(missing, spec, config))
    for name, shape in expected.items():
        header = members.header(name)
        if header.shape != shape or header.dtype != dtype:
            raise unusable(path, f"{name} has shape {header.shape} {header.dtype}, expected {shape} {dtype}")
    if version >= 2:
        header = members.header("pointers")
        if header.shape != (B,) or header.dtype.kind not in "iu":
            raise unusable(path, f"pointers must be {B} stream positions, got shape {header.shape} {header.dtype}")
    arrays = {}
    for name in expected:
        arrays[name] = a = members.read(name)
        if not np.isfinite(a).all():
            raise unusable(path, f"{name} holds NaN or infinite values")
    smooth_loss = scalar_member(members, "smooth_loss", "f")
    if not np.isfinite(smooth_loss):
        raise unusable(path, "smooth_loss is not finite")
    p, n = scalar_member(members, "p", "iu"), scalar_member(members, "n", "iu")
    if p < 0 or n < 0 or p % config.seq_length:
        raise unusable(path, f"bad data pointer p={p} or step n={n}")
    pointers = None
    if version >= 2:
        pointers = members.read("pointers")
        if int(pointers[0]) != p:
            raise unusable(path, f"pointers must be {B} stream positions, the first equal to p={p}")
        pointers = pointers.astype(np.int64)
    try:
        np.random.default_rng().bit_generator.state = rng_state
    except (TypeError, ValueError, KeyError) as e:
        raise unusable(path, f"bad random generator state ({e})") from None
    length, sha = scalar_member(members, "corpus_length", "iu"), strings["corpus_sha256"]
    if len(sha) != 64:
        raise unusable(path, "bad corpus fingerprint")
    corpus_path = strings["corpus_path"]
    if len(corpus_path) > MAX_PATH_CHARS:
        raise unusable(path, f"its corpus_path has {len(corpus_path):,} characters, more than {MAX_PATH_CHARS:,}")
    names = [name for name, _ in spec.param_shapes()]
    params = ModelParams.from_arrays(spec, {name: arrays[name] for name in names}, dtype)
    opt_state = tuple(ModelParams.from_arrays(spec, {name: arrays[prefix + name] for name in names}, dtype)
                      for prefix in prefixes)
    hidden = tuple(np.ascontiguousarray(arrays[HIDDEN_NAMES[s]].reshape(L, B, H)) for s in spec.state_names)
    state = TrainState(params, opt_state, hidden, int(p), int(n), float(smooth_loss), rng_state)
    written_by = string_member(members, "fastrnn_version")[:MAX_PATH_CHARS] if "fastrnn_version" in members else None
    return Checkpoint(path, config, vocab, state, Fingerprint(int(length), sha), corpus_path or None, pointers,
                      plan_member(members), version, written_by, best_of_member(members),
                      parent_member(members))
