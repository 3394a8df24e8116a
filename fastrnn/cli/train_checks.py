"""``fastrnn train``'s checks before anything is written: the flags, a resume's flags against its checkpoint,
the checkpoint path, and the sizes this machine can hold."""
from __future__ import annotations

import math
import os
import zipfile
from dataclasses import replace
from pathlib import Path

from ..checkpoint import Checkpoint, best_path, has_checkpoint_marker, load_checkpoint
from ..corpus import EMBEDDED_NAME
from ..limits import SAMPLE_BYTES_PER_CHAR, fits, training_bytes
from ..plan import Plan
from ..config import OPTION_OWNER, check_split, recipe_config, unused_options, TrainConfig
from .exits import UsageError
from .parser import HYPERPARAMETERS, flag


def positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def non_negative(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")


def check_train_args(args):
    args.parent = None  # --init-from's checkpoint, loaded here
    if args.init_from:
        if args.resume:
            raise UsageError("--init-from starts a new run from a checkpoint's weights, --resume continues a run: "
                             "give one of them")
        args.parent = load_checkpoint(args.init_from)
    positive(args, "hidden_size", "seq_length", "batch_size", "threads", "steps", "sample_length")
    non_negative(args, "eval_every", "sample_every", "log_every", "checkpoint_every", "seed", "warmup_steps",
                 "decay_steps", "patience")
    f = args.min_lr_fraction
    if f is not None and not (0 <= f <= 1):
        raise UsageError(f"--min-lr-fraction must be in [0, 1], got {f}")
    p = args.dropout
    if p is not None and not (0 <= p < 1):
        raise UsageError(f"--dropout must be in [0, 1), got {p}")
    positive(args, "num_layers")
    budget = args.time_budget
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UsageError(f"--time-budget must be a positive number of seconds, got {budget}")
    for name in ("learning_rate", "eps", "clip_norm"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"{flag(name)} must be a positive number, got {value}")
    if args.clip is not None and not (math.isfinite(args.clip) and args.clip >= 0):
        raise UsageError(f"--clip must be a positive number (or 0: off), got {args.clip}")
    for name in ("alpha", "beta1", "beta2"):
        value = getattr(args, name)
        if value is not None and not (0 <= value < 1):
            raise UsageError(f"{flag(name)} must be in [0, 1), got {value}")
    if not args.resume:  # a resumed run's flags are checked against the checkpoint's (resume_config)
        chosen = {name: getattr(args, name) for name in ("cell", "optimizer") if getattr(args, name) is not None}
        if args.parent is not None and args.cell is None:
            chosen["cell"] = args.parent.config.cell
        optimizer = recipe_config(time_budget=args.time_budget, **chosen).optimizer
        for name in unused_options(optimizer):
            if getattr(args, name) is not None:
                whose = "" if args.optimizer else f" (the {flag('cell')} {args.cell or 'rnn'} default)"
                raise UsageError(f"{flag(name)} is {OPTION_OWNER[name]}'s option; --optimizer {optimizer}{whose} "
                                 f"does not use it")
    if args.clip_norm is not None and args.clip:
        raise UsageError("--clip and --clip-norm exclude each other: clip by value or by norm")
    if args.clip == 0 or args.clip_norm is not None:
        args.clip = None  # off (by norm instead, or not at all)
        args.clip_off = True
    vf = args.val_fraction
    if vf is not None and not (0 <= vf < 1):
        raise UsageError(f"--val-fraction must be in [0, 1), got {vf}")


def resume_config(args, ckpt: Checkpoint) -> TrainConfig:
    """The checkpoint's hyperparameters; any flag given that says otherwise is an error."""
    stored = ckpt.config
    clashes = []
    for name in HYPERPARAMETERS:
        given = getattr(args, name)
        if name == "clip" and getattr(args, "clip_off", False):
            if stored.clip is not None:
                clashes.append(f"--clip off (checkpoint: {stored.clip})")
            continue
        if given is not None and given != getattr(stored, name):
            clashes.append(f"{flag(name)} {given} (checkpoint: {getattr(stored, name)})")
    if args.bytes and not ckpt.vocab.bytes_mode:
        clashes.append("--bytes (checkpoint trained on characters)")
    if clashes:
        one = len(clashes) == 1
        raise UsageError(f"--resume {args.resume}: {'; '.join(clashes)} contradict{'s' if one else ''} the "
                         f"checkpoint; drop {'it' if one else 'them'} to resume")
    return stored if args.threads is None else replace(stored, threads=args.threads)


def checkpoint_path(args) -> Path:
    """Where this run saves: ``--checkpoint``, else the ``--resume`` file, else NAME.ckpt.npz here."""
    if args.checkpoint:
        path = Path(args.checkpoint)
    elif args.resume:
        path = Path(args.resume)
    else:
        stem = Path(args.corpus).stem if args.corpus else Path(EMBEDDED_NAME).stem
        path = Path(f"{stem}.ckpt.npz")
    if path.is_dir():
        raise UsageError(f"checkpoint path {str(path)!r} is a directory")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"cannot save checkpoints to {str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot save checkpoints to {str(path)!r}: folder {str(folder)!r} is not writable")
    return path


def not_a_checkpoint(path) -> str | None:
    """None if ``path`` holds fastrnn's checkpoint format marker, else what it is instead."""
    try:
        if not zipfile.is_zipfile(path):
            return "not an .npz file"
        if has_checkpoint_marker(path):  # reads the marker's header and its few bytes only
            return None
        return "an .npz file without fastrnn's format marker"
    except Exception as e:  # unreadable in any way: not something we know to be ours
        return f"unreadable ({e})"


def check_existing(args, path: Path, corpus_path):
    """Refuse to replace what is at ``path``, unless resuming it, or ``--overwrite`` of a checkpoint."""
    if not path.exists():
        return
    if corpus_path and os.path.exists(corpus_path) and os.path.samefile(path, corpus_path):
        raise UsageError(f"the checkpoint path {str(path)!r} is the corpus itself")
    if args.resume and os.path.samefile(path, args.resume):
        return
    if not args.overwrite:
        raise UsageError(f"{str(path)!r} already exists; continue it with --resume {path}, choose another "
                         f"--checkpoint, or pass --overwrite to replace it")
    why = not_a_checkpoint(path)
    if why is not None:
        raise UsageError(f"--overwrite replaces only a fastrnn checkpoint, and {str(path)!r} is {why}; "
                         f"choose another --checkpoint")


def check_validations(plan: Plan, config: TrainConfig, path: Path, replacing: bool):
    """``--keep-best`` and ``--patience`` need a held-out split; a run does not replace another run's best
    file unless ``replacing`` (its own, when resuming; ``--overwrite``), and then only a checkpoint."""
    asked = [name for name, on in (("--keep-best", plan.keep_best), ("--patience", plan.patience is not None)) if on]
    if asked and config.val_fraction == 0:
        raise UsageError(f"{' and '.join(asked)} {'need' if len(asked) > 1 else 'needs'} validations, and "
                         f"--val-fraction 0 holds no text out for them")
    best = best_path(path)
    if not plan.keep_best or not best.exists():
        return
    if not replacing:
        raise UsageError(f"{str(best)!r} (where --keep-best saves) already exists; move it away, choose another "
                         f"--checkpoint, or pass --overwrite to replace it")
    why = not_a_checkpoint(best)
    if why is not None:
        raise UsageError(f"--keep-best would replace {str(best)!r}, which is {why}; move it away or choose "
                         f"another --checkpoint")


def check_memory(plan: Plan, corpus, config: TrainConfig, report_warning, vocab_size=None):
    """One line naming the flag, before anything is allocated, for sizes this machine cannot hold.
    ``vocab_size``: the model's, where it is not the corpus's (a fine-tuned model's)."""
    unit = "bytes" if corpus.vocab.bytes_mode else "characters"
    check_split(len(corpus), config, unit)  # its errors first: a --seq-length longer than the text
    H, T, B = config.hidden_size, config.seq_length, config.batch_size
    threads = config.threads or os.cpu_count() or 1

    def need(threads):
        return training_bytes(vocab_size or len(corpus.vocab), H, T, B, threads, config.dtype, cell=config.cell,
                              num_layers=config.num_layers,
                              optimizer_buffers=len(config.optimizer_settings.state_names))

    (model, sequences), (one_thread_model, _) = need(threads), need(1)
    if model - one_thread_model >= max(one_thread_model, sequences):  # the threads' own workspaces dominate
        flag, fix = f"--threads {threads:,}", "fewer --threads"
    elif model >= sequences:
        flag, fix = f"--hidden-size {H:,}", "a smaller --hidden-size"
    else:
        flag = f"--seq-length {T:,}" + (f" with --batch-size {B:,}" if B > 1 else "")
        fix = "a smaller --seq-length" + (" or --batch-size" if B > 1 else "")
    ok, note = fits(model + sequences)
    if not ok:
        raise UsageError(f"{flag} {note} (parameters, optimizer buffers and workspaces, {config.dtype}); use {fix}")
    if note:
        report_warning(f"{flag} {note}; it may not fit")
    if plan.sample_every != 0:
        ok, note = fits(plan.sample_length * SAMPLE_BYTES_PER_CHAR)
        if not ok:
            raise UsageError(f"--sample-length {plan.sample_length:,} {note}; use a smaller --sample-length "
                             f"(or --sample-every 0, and fastrnn sample, which streams, afterwards)")
