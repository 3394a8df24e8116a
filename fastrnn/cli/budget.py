"""A run with a time budget: the speed measured once to size the schedule and cadences, the validation's
cost, and when training must stop to validate and save in time."""
from __future__ import annotations

import time

from ..trainer import ENGINE_BLOCK_STEPS, Trainer


class SpeedProbe:
    """Measures the training speed once, early in a run with a time budget, and fixes what depends on it.

    What depends on it: a cosine schedule's ``decay_steps`` when not given (the steps done + those the rest
    of the budget holds at the measured rate, at most the run's --steps), and the plan's cadences not given
    (:meth:`fastrnn.plan.Plan.resolve` for that many steps). The rate is the wall-clock rate of the steps
    after the first block (whose first touches of memory and thread starts are slower), over ``PROBE_S``
    seconds (or ``PROBE_FRACTION`` of the budget, if more), but at most until the warmup ends or a
    twentieth of the steps left to --steps are done. Fixed once and recorded in the checkpoint; fixed within
    the warmup (the recipe's 20 steps), where the rate does not depend on it, the run is that of
    ``--decay-steps`` set to the printed figure from its start."""

    PROBE_S = 2.0
    PROBE_FRACTION = 0.03
    STEPS_FRACTION = 20  # the probe ends by a twentieth of the steps left, so a short --steps cannot skip it

    def __init__(self, trainer: Trainer, deadline, total, args):
        c = trainer.config
        self.trainer, self.deadline, self.total, self.args = trainer, deadline, total, args
        self.sizes_decay = deadline is not None and c.lr_schedule == "cosine" and c.decay_steps is None
        self.active = deadline is not None and (self.sizes_decay or not args.plan.resolved)
        self.warmup = c.warmup_steps if self.sizes_decay else 0
        self.created, self.n_created = time.perf_counter(), trainer.n
        self.cap = trainer.n + max(1, (total - trainer.n) // self.STEPS_FRACTION)
        self.start = self.n0 = None
        budget = 0.0 if deadline is None else deadline - self.created
        self.probe = max(self.PROBE_S, self.PROBE_FRACTION * budget)

    def next_stop(self, s) -> int:
        """Where the next block of steps must end while the probe runs: a block on, the warmup's end, the cap."""
        end = s + ENGINE_BLOCK_STEPS
        if s < self.warmup:
            end = min(end, self.warmup)
        return min(end, self.cap) if s < self.cap else end

    def __call__(self, report, seconds_per_eval=None):
        if not self.active:
            return
        now, n = time.perf_counter(), self.trainer.n
        if self.start is None:  # the first block is done: time from here
            self.start, self.n0 = now, n
        warmed = self.warmup and n >= self.warmup
        if not warmed and n < self.cap and now - self.start < self.probe and now < self.deadline:
            return
        if n > self.n0:
            rate = (n - self.n0) / max(now - self.start, 1e-9)
        else:  # the first block was all there was time for (or all of the warmup): its rate
            rate = (n - self.n_created) / max(now - self.created, 1e-9)
        steps = max(n, min(self.total, n + int(rate * max(self.deadline - now, 0.0))))
        self.active = False
        if not self.args.plan.resolved:
            self.args.plan = self.args.plan.resolve(steps, seconds_per_eval)
        if self.sizes_decay:
            self.trainer.fix_decay(steps)
            report.line(f"learning rate: cosine decay to {self.trainer.config.min_lr_fraction:g}x by step "
                        f"{self.trainer.config.decay_steps:,} (fixed at step {n:,}: the time budget holds about "
                        f"that many at {rate:,.1f} steps/s)")


VALIDATION_PROBE_CHARS = 20_000  # held-out characters timed to estimate a whole validation's cost


def validation_seconds(trainer: Trainer) -> float:
    """Estimated wall seconds of one validation: a prefix of the held-out split scored and timed (after a
    first tiny call that loads the scoring kernels), scaled to the whole split."""
    n_val = int(trainer.val_targets.size)
    if n_val == 0:
        return 0.0
    model = trainer.model
    model.score_ids(trainer.val_inputs[:2], trainer.val_targets[:2])  # load or compile the kernels
    m = min(n_val, VALIDATION_PROBE_CHARS)
    start = time.perf_counter()
    model.score_ids(trainer.val_inputs[:m], trainer.val_targets[:m])
    return (time.perf_counter() - start) * n_val / m


FINAL_SAVE_SECONDS = 0.5  # kept for the final save when a time budget is planned


def training_deadline(args, seconds_per_eval) -> float | None:
    """When training stops under the plan's time budget: what earlier sessions left of it, less the final
    validation's estimated cost and the final save (together at most half of what is left)."""
    left = args.plan.remaining_seconds()
    if left is None:
        return None
    reserve = min(1.25 * seconds_per_eval + FINAL_SAVE_SECONDS, left / 2)
    return args.started + left - reserve


def plan_record(args) -> dict:
    """The plan as a checkpoint records it: with the wall time of this session so far added to ``elapsed`` (all of
    the budget once training stopped at its deadline, so that a resume does not train the reserve)."""
    plan = args.plan
    elapsed = plan.elapsed + time.perf_counter() - args.started
    if getattr(args, "budget_spent", False):
        elapsed = max(elapsed, plan.time_budget)
    return dict(plan.to_dict(), elapsed=elapsed)
