"""The training loop of ``fastrnn train``: blocks of steps between samples, logs, validations and saves;
stops on a signal, a time budget, a divergence or a closed standard output, and saves what it can.

Ctrl-C (SIGINT) or SIGTERM during training, the final validation included, saves a checkpoint and exits 130
or 143; a second one before that stops at once without saving (the last checkpoint file stays intact). A
loss that becomes NaN or infinite, or parameters whose outputs could overflow, stop training, keep the last
good checkpoint and exit 1. A standard output that fails (its reader went away, a full disk) stops the run
at the end of its block of steps; it saves and exits 141 (a closed pipe) or 2.

Every validation is counted in the plan (:meth:`fastrnn.plan.Plan.after_validation`, at the precision the
metrics log writes); one that sets a new best marks its metrics row and, with ``--keep-best``, saves the
model to the best file beside the checkpoint. With ``--patience N``, N validations in a row without a new
best end the run like its last step: it saves, says why and exits 0.
"""
from __future__ import annotations

import math
import signal
import sys
import threading
import time

from .._entry import Terminated, interrupted_status, interruption, raise_dropped_interruption
from .._files import OutputWriteError
from ..checkpoint import best_path, save_checkpoint
from ..limits import outputs_bounded
from ..lock import CheckpointChanged, SaveGuard
from ..metrics import MetricsLog, as_logged
from ..plan import Plan
from ..split_check import HeldOutWatch
from ..train_state import TrainingDiverged
from ..trainer import Trainer
from .budget import SpeedProbe, plan_record, training_deadline, validation_seconds
from .exits import EXIT_DIVERGED, EXIT_USAGE, Abandoned, StopSignals


class OutputsOverflow(TrainingDiverged):
    """Finite parameters so large that the model's logits can overflow: not a checkpoint worth keeping."""

    def __init__(self, step):
        RuntimeError.__init__(self, f"training diverged: by step {step:,} the parameters are so large that the "
                                    f"model's outputs can overflow (a lower learning rate may help)")
        self.step, self.loss = step, math.nan


def next_at(s, every, offset=0):
    """The smallest step count t > s with t = offset (mod every)."""
    return s + (offset - s - 1) % every + 1


LOSS_EXPLOSION = 100  # warn when the smoothed loss exceeds this many times a uniform guess's


class LossWatch:
    """Warns once when the smoothed loss, still finite, grows past LOSS_EXPLOSION x a uniform guess's."""

    def __init__(self, trainer: Trainer):
        self.uniform = math.log(len(trainer.vocab)) if len(trainer.vocab) > 1 else 1.0
        self.warned = False

    def __call__(self, trainer: Trainer, report):
        per_char = trainer.smooth_loss_per_char
        if not self.warned and math.isfinite(per_char) and per_char > LOSS_EXPLOSION * self.uniform:
            self.warned = True
            report.warn(f"at step {trainer.n:,} the smoothed loss is {per_char:.3g} nats/char, over "
                        f"{LOSS_EXPLOSION} times a uniform guess's {self.uniform:.3g}: training is blowing up "
                        f"(a lower learning rate may help)")


COMPILE_NOTE_AFTER_S = 2.0  # say what the wait is if loading the kernels takes longer than this


def warm_up(trainer: Trainer, report) -> None:
    """Load or compile the training kernels; on a first run (a compile) say so instead of sitting silent."""
    note = threading.Timer(COMPILE_NOTE_AFTER_S, report.line, args=(
        "compiling the training kernels for this dtype and batch mode (first run only: up to a minute; "
        "later runs load them from Numba's cache)",))
    note.daemon = True
    start = time.perf_counter()
    note.start()
    try:
        trainer.warm_up()
    finally:
        note.cancel()
    raise_dropped_interruption()  # a signal while Numba compiled may have been printed and dropped in its callback
    if time.perf_counter() - start >= COMPILE_NOTE_AFTER_S:
        report.line(f"kernels ready after {time.perf_counter() - start:.0f} s")


def cadence(plan: Plan, name) -> int:
    return getattr(plan, name) or 0  # None: not chosen yet (a time budget's speed is being measured)


def train_loop(trainer: Trainer, args, path, report, guard: SaveGuard, metrics: MetricsLog) -> int:
    saved = [None]  # step of the last checkpoint this run wrote
    stop = StopSignals(trainer)
    watch = LossWatch(trainer)
    total = args.plan.steps
    held_out = HeldOutWatch()  # what validation can and cannot tell: warnings at the start and after validations

    def save():
        """Save as the last good checkpoint: finite outputs, and only over this run's own file."""
        if not outputs_bounded(trainer.params):
            raise OutputsOverflow(trainer.n)
        trainer.collect_state()  # with MPI ranks: every stream's state to rank 0
        trainer.plan = plan_record(args)
        with stop.save():
            guard.check()
            save_checkpoint(path, trainer)
            guard.saved()
        saved[0] = trainer.n

    def save_best():
        """The model of this step to the best file (a checkpoint marked as the best of this run's)."""
        trainer.collect_state()
        trainer.plan = plan_record(args)
        with stop.save():
            save_checkpoint(best_path(path), trainer, best_of=path)

    def kept():
        return (f"the last good checkpoint is {str(path)!r} (step {saved[0]:,})" if saved[0] is not None else
                "no checkpoint was saved by this run" + (f"; {str(path)!r} is unchanged" if path.exists() else ""))

    def validate():
        """``(score, new_best)`` of a validation now, counted in the plan (a new best saved with --keep-best)."""
        with stop.abandonable():
            score = trainer.validation_loss()
            report.validation(trainer, score)
            for text in held_out.after_validation(trainer, score):
                report.warn(text)
        if score is None:
            return None, False
        args.plan, new_best = args.plan.after_validation(trainer.n, as_logged(score.nats_per_char))
        if new_best and args.plan.keep_best and outputs_bounded(trainer.params):
            save_best()
        return score, new_best

    for text in held_out.start(trainer):
        report.warn(text)
    warm_up(trainer, report)  # so the first chars/s figure is not a compile or cache load
    seconds_per_eval = validation_seconds(trainer) if args.plan.time_budget is not None else 0.0
    metrics.start(trainer)
    val_done_at = None
    deadline = training_deadline(args, seconds_per_eval)
    probe = SpeedProbe(trainer, deadline, total, args)
    try:
        with stop:
            try:
                while (trainer.n < total and not (deadline is not None and time.perf_counter() >= deadline)
                       and not args.plan.out_of_patience):
                    s, plan = trainer.n, args.plan
                    sample_every, log_every, eval_every, checkpoint_every = (
                        cadence(plan, name) for name in ("sample_every", "log_every", "eval_every",
                                                         "checkpoint_every"))
                    if sample_every and s % sample_every == 0:
                        report.sample(trainer.sample(plan.sample_length))
                    stops = [total]
                    for every, offset in ((sample_every, 0), (log_every, 1), (eval_every, 0),
                                          (checkpoint_every, 0), (report.every, 0)):
                        if every:
                            stops.append(next_at(s, every, offset))
                    if probe.active:
                        stops.append(probe.next_stop(s))
                    if report.output_error is not None or not trainer.train(min(stops) - s, deadline=deadline):
                        return interrupted(trainer, path, report, save, stop)
                    probe(report, seconds_per_eval)
                    watch(trainer, report)
                    s = trainer.n
                    val, new_best = None, False
                    if eval_every and s % eval_every == 0:
                        val, new_best = validate()
                        val_done_at = s
                    logged = log_every and (s - 1) % log_every == 0
                    if logged:
                        report.log(trainer)
                    if logged or val is not None:
                        metrics.row(trainer, val, new_best)
                    if checkpoint_every and s % checkpoint_every == 0:
                        save()
                    report.progress(trainer)
                if args.plan.out_of_patience and trainer.n < total:
                    p = args.plan
                    report.line(f"stopped early at step {trainer.n:,}: {p.patience} validation"
                                f"{'s' if p.patience > 1 else ''} in a row without improving on the best, "
                                f"{p.best_loss:.4f} nats/char at step {p.best_step:,} (--patience {p.patience})")
                elif trainer.n < total:
                    args.budget_spent = True  # recorded as all used, though the final validation and save remain
                    report.line(f"time budget of {args.plan.time_budget:g} s reached at step {trainer.n:,}")
                if stop.signum is None and report.output_error is None and val_done_at != trainer.n:
                    metrics.row(trainer, *validate())
            except Abandoned:
                return interrupted(trainer, path, report, save, stop)
            if stop.signum is not None or report.output_error is not None:  # during the last block, or after it
                return interrupted(trainer, path, report, save, stop)
            save()
            if stop.signum is not None:  # during the final save: it is complete, so the run is saved
                return interrupted(trainer, path, report, save, stop, saved=True)
            stop.finish()
    except TrainingDiverged as e:
        report.close()
        print(f"fastrnn train: error: {e}; stopped; {kept()}", file=sys.stderr)
        return EXIT_DIVERGED
    except CheckpointChanged as e:
        report.close()
        print(f"fastrnn train: error: {e}; stopped at step {trainer.n:,}, this run's progress since "
              f"{'step ' + format(saved[0], ',') if saved[0] is not None else 'its start'} is not saved",
              file=sys.stderr)
        return EXIT_USAGE
    except OutputWriteError as e:  # a save failed (a full disk...): the previous checkpoint file is intact
        report.close()
        print(f"fastrnn train: error: {e}; stopped at step {trainer.n:,}; {kept()}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:  # a second signal before the first one's stop came: not saved
        report.close()
        terminated = isinstance(e, Terminated)
        print(f"fastrnn train: {'SIGTERM' if terminated else 'SIGINT'} again before the checkpoint was saved: "
              f"stopped at once, not saved; {kept()}", file=sys.stderr)
        return interrupted_status(e)
    finally:
        report.close()
    report.finish(trainer, path)
    if report.output_error is not None:
        print(f"fastrnn train: {report.output_problem()} after the run ended; it is complete and saved in "
              f"{path}", file=sys.stderr)
    return 0


def interrupted(trainer, path, report, save, stop, saved=False) -> int:
    report.close()
    signum = stop.signum
    lost_output = report.output_error is not None and signum is None
    if signum is None:  # with MPI ranks: a signal that reached another rank
        signum = signal.SIGTERM if trainer.stop_signal == signal.SIGTERM else signal.SIGINT
    how = (f"{report.output_problem()}, so it stopped" if lost_output
           else "terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted")
    if not saved and not trainer.is_finite():
        why = "parameters are not finite"
    elif not saved and not outputs_bounded(trainer.params):
        why = "parameters are so large that the model's outputs can overflow"
    else:
        why = None
        if not saved:
            save()
        stop.finish()
        print(f"fastrnn train: {how} at step {trainer.n:,}; saved checkpoint {path} "
              f"(continue with: fastrnn train --resume {path}, which {Plan.from_dict(trainer.plan).describe_rest()})",
              file=sys.stderr)
    if why is not None:
        stop.finish()
        print(f"fastrnn train: {how} at step {trainer.n:,}; {why}, not saved", file=sys.stderr)
    return report.output_status() if lost_output else interrupted_status(interruption(signum))
