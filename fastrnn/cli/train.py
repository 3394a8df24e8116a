"""``fastrnn train``: set the run up (a new run or a resume, under MPI or not), then hand it to the loop.

One run per checkpoint: ``train`` holds an OS lock on ``PATH.lock`` beside the checkpoint, and one on its
metrics log's, from its start to its end (:mod:`fastrnn.lock`), and never replaces a checkpoint file that
someone else wrote meanwhile. The run's plan (:mod:`fastrnn.plan`) is saved in its checkpoints and continued
by ``--resume``.
"""
from __future__ import annotations

import os
import time
from dataclasses import replace
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..fine_tuning import architecture_clashes, fine_tune, fine_tune_config, parent_record
from ..lock import CheckpointLock, SaveGuard
from ..metrics import MetricsLog, check_new, run_metrics_path
from ..plan import Plan
from ..config import recipe_config, TrainConfig
from ..trainer import Trainer
from .corpus import opened_corpus
from .exits import UsageError, warn
from .mpi import mpi_world, threads_per_rank
from .parser import HYPERPARAMETERS, flag
from .progress import reporter
from .run_loop import train_loop
from .train_checks import (check_existing, check_memory, check_train_args, check_validations, checkpoint_path,
                           resume_config)


def run_train(args) -> int:
    args.started = time.perf_counter()  # the --time-budget clock
    args.world = mpi_world(args)
    if args.world is not None and not args.world.is_leader:
        from ..distributed import follow
        return follow(args.world, follower_trainer(args.world))
    check_train_args(args)
    path = checkpoint_path(args)
    metrics_file = run_metrics_path(path, resuming=args.resume is not None)
    # before any work; released however the run ends
    with CheckpointLock(path) as lock, CheckpointLock(metrics_file, what="metrics log") as metrics_lock:
        if lock.warning or metrics_lock.warning:
            warn(lock.warning or metrics_lock.warning)
        return train(args, path, metrics_file)


def plan_of(args, ckpt) -> Plan:
    """The run's plan: the checkpoint's (a resume), else the defaults, with the flags given replacing fields
    (``--patience 0``: none)."""
    given = {name: getattr(args, name) for name in ("steps", "time_budget", "log_every", "eval_every",
                                                    "sample_every", "checkpoint_every", "sample_length",
                                                    "keep_best", "patience")}
    if ckpt is None:
        plan = Plan()
    elif ckpt.plan is not None:
        plan = Plan.from_dict(ckpt.plan)
    else:  # a checkpoint from before plans were recorded: the cadences that were fixed defaults then
        plan = Plan(log_every=1_000, eval_every=10_000, sample_every=10_000, checkpoint_every=10_000)
    plan = plan.updated(**given)
    return replace(plan, patience=None) if args.patience == 0 else plan


def fine_tune_config_of(args, given: dict, plan: Plan) -> TrainConfig:
    """``--init-from``'s config: the parent's architecture (a flag that contradicts it is an error) and
    kind of text, the recipe and flags for the rest."""
    parent = args.parent
    if args.bytes != parent.vocab.bytes_mode:
        raise UsageError(f"--init-from {args.init_from} models "
                         f"{'raw bytes: pass --bytes' if parent.vocab.bytes_mode else 'characters: drop --bytes'} "
                         f"to fine-tune it (a model keeps its kind of symbols)")
    clashes = architecture_clashes(parent.config, given)
    if clashes:
        one = len(clashes) == 1
        raise UsageError(f"--init-from {args.init_from}: " + "; ".join(
            f"{flag(name)} {value} (checkpoint: {was})" for name, value, was in clashes)
            + f" contradict{'s' if one else ''} the model it starts from; drop {'it' if one else 'them'}")
    return fine_tune_config(parent.config, time_budget=plan.time_budget, **given)


def train(args, path: Path, metrics_file: Path) -> int:
    world = args.world
    ckpt = load_checkpoint(args.resume) if args.resume else None
    if ckpt is not None and ckpt.best_of is not None:
        raise UsageError(f"{args.resume} is the best model of the run saved in {ckpt.best_of!r} (step "
                         f"{ckpt.state.n:,}), kept for sample, eval, export and info; resume that run's checkpoint")
    plan = plan_of(args, ckpt)
    if ckpt is not None:
        config = resume_config(args, ckpt)
        bytes_mode = ckpt.vocab.bytes_mode
        corpus_path = args.corpus or ckpt.corpus_path
        if args.corpus is None and corpus_path is not None and not Path(corpus_path).exists():
            raise UsageError(f"the checkpoint's corpus {corpus_path!r} is gone; pass it as CORPUS")
    else:
        given = {name: getattr(args, name) for name in (*HYPERPARAMETERS, "threads")
                 if getattr(args, name) is not None or (name == "clip" and getattr(args, "clip_off", False))}
        if world is not None and args.threads is None:
            given["threads"] = threads_per_rank()
        if args.parent is not None:
            config = fine_tune_config_of(args, given, plan)
        else:
            config = recipe_config(time_budget=plan.time_budget, **given).validate()
        if world is not None:
            config = config.with_seed()  # drawn once, here, for every rank
        bytes_mode, corpus_path = args.bytes, args.corpus
    if world is not None and config.batch_size % world.size:
        whose = " (the checkpoint's)" if ckpt is not None else ""
        raise UsageError(f"--batch-size {config.batch_size}{whose} is not divisible by the {world.size} MPI ranks that share its streams; use a multiple "
                         f"of {world.size}")
    total = plan.steps
    if ckpt is not None and total < ckpt.state.n:
        raise UsageError(f"--steps {total:,} is fewer than the {ckpt.state.n:,} steps the checkpoint has done")
    check_existing(args, path, corpus_path)
    if args.init_from and path.exists() and os.path.samefile(path, args.init_from):
        raise UsageError(f"the checkpoint path {str(path)!r} is the --init-from file itself; choose another "
                         f"--checkpoint")
    check_validations(plan, config, path, args.overwrite or ckpt is not None)
    if ckpt is None:
        check_new(metrics_file, args.overwrite)
    guard = SaveGuard(path)  # what is at the path now: the only file a save may replace
    with opened_corpus(corpus_path, bytes_mode, args.cache_dir) as corpus:
        check_memory(plan, corpus, config, warn,
                     len(args.parent.vocab.extended(corpus.vocab)) if args.parent is not None else None)
        trainer = (ckpt.trainer(corpus, threads=config.threads, world=world) if ckpt is not None
                   else fine_tune(args.parent, corpus, config, world=world) if args.parent is not None
                   else Trainer(corpus, config, world=world))
    if trainer.config.lr_schedule == "cosine" and trainer.config.decay_steps is None and plan.time_budget is None:
        # else sized to the time budget once the speed is measured (train_loop); the build below tells the others
        trainer.fix_decay(total, tell_others=False)
    if plan.time_budget is None:
        plan = plan.resolve(total)  # the cadences not given, for a run of `total` steps
    args.plan = plan
    if world is not None:  # the corpus is prepared: now the other ranks open it and build their trainers
        world.announce("build", dict(config=trainer.config.to_dict(), corpus_path=corpus_path,
                                     fingerprint=corpus.fingerprint, bytes_mode=bytes_mode,
                                     cache_dir=args.cache_dir, resume=args.resume,
                                     decay_steps=trainer.config.decay_steps, init_from=args.init_from,
                                     parent=trainer.parent if ckpt is None else None))
        errors = [e for e in world.gather(None) if e is not None]
        if errors:
            raise UsageError(errors[0])
    report = reporter(args, total, trainer)
    report.header(trainer, corpus, path, ckpt)
    if trainer.n >= total:
        report.close()
        report.line(f"the checkpoint is already at step {trainer.n:,} (--steps {total:,}); nothing to do "
                    f"(pass a larger --steps to train on)")
        return report.output_status()
    left = plan.remaining_seconds()
    if left is not None and left <= 0:
        report.close()
        report.line(f"the run's time budget of {plan.time_budget:g} s is spent ({plan.elapsed:,.0f} s used); "
                    f"nothing to do (pass a larger --time-budget, the whole run's, to train on)")
        return report.output_status()
    if plan.out_of_patience:
        report.close()
        report.line(f"the run stopped early at step {trainer.n:,}: {plan.since_best} validations without a new "
                    f"best (--patience {plan.patience}); nothing to do (pass a larger --patience, or --patience 0, "
                    f"to train on)")
        return report.output_status()
    # The one writer of the metrics log (under MPI: rank 0's, beside the checkpoint it saves).
    metrics = MetricsLog(metrics_file, resume_step=ckpt.state.n if ckpt is not None else None)
    try:
        return train_loop(trainer, args, path, report, guard, metrics)
    finally:
        metrics.close()


def follower_trainer(world):
    """``build(setup)`` for :func:`fastrnn.distributed.follow`: this rank's trainer for rank 0's setup.

    A corpus whose fingerprint (length and sha256) is not rank 0's (the same name, another text in this
    rank's folder or node) is refused: rank 0 reports it in one line and every rank exits 2."""
    def build(setup):
        config = TrainConfig(**setup["config"])
        with opened_corpus(setup["corpus_path"], setup["bytes_mode"], setup["cache_dir"]) as corpus:
            if corpus.fingerprint != setup["fingerprint"]:
                raise UsageError(f"its corpus {corpus.name!r} ({corpus.fingerprint}) is not rank 0's "
                                 f"{setup['corpus_path']!r} ({setup['fingerprint']}); every rank must read the "
                                 f"same text")
            if setup["resume"]:
                trainer = load_checkpoint(setup["resume"]).trainer(corpus, threads=config.threads, world=world)
            elif setup["init_from"]:
                parent = load_checkpoint(setup["init_from"])
                if parent_record(parent)["sha256"] != setup["parent"]["sha256"]:
                    raise UsageError(f"its --init-from {setup['init_from']!r} is not rank 0's file (sha256 "
                                     f"{setup['parent']['sha256'][:12]}); every rank must start from the same "
                                     f"checkpoint")
                trainer = fine_tune(parent, corpus, config, world=world)
            else:
                trainer = Trainer(corpus, config, world=world)
        if setup["decay_steps"] is not None and trainer.config.decay_steps is None:  # as rank 0 fixed it
            trainer.fix_decay(setup["decay_steps"], tell_others=False)
        return trainer
    return build
