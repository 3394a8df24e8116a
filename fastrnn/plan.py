"""A training run's plan: when it stops and how often it logs, validates, samples and saves.

The plan is what ``fastrnn train`` was asked to do beyond the hyperparameters:
``steps`` (the total, counting steps done before a resume), ``time_budget``
(seconds of wall time over the whole run, every session of it counted), and the
cadences ``log_every``, ``eval_every``, ``sample_every``, ``checkpoint_every``
(steps; 0 is off) with ``sample_length``, and what validations decide:
``keep_best`` (save every new best model beside the checkpoint) and
``patience`` (stop after that many validations in a row without a new best).
It also carries the run's progress against it: ``elapsed`` and the best
validation so far (``best_loss``, ``best_step``, ``since_best``). A checkpoint records it, so
``fastrnn train --resume CKPT`` continues the same run; a flag given on resume
replaces that one field of the plan (and the new value is recorded).

A cadence the user did not give is chosen from the run's length: about
:data:`LOG_POINTS` log rows and :data:`EVAL_POINTS` validations (and samples and
checkpoints) over the run, on round numbers, never more often than
:data:`MAX_EVERY` allows below and never less often than the seed's defaults
(1,000 and 10,000 steps). A run bounded by a time budget does not know its length
in steps until its speed is measured; :func:`auto_cadences` is then called with
the estimate, and with the measured cost of a validation so that validations
take at most :data:`EVAL_SHARE` of the budget.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

DEFAULT_STEPS = 100_000
DEFAULT_SAMPLE_LENGTH = 200
LOG_POINTS = 100  # log rows over a run, when --log-every is not given
EVAL_POINTS = 10  # validations (and samples, checkpoints) over a run, when not given
MAX_EVERY = {"log_every": 1_000, "eval_every": 10_000, "sample_every": 10_000, "checkpoint_every": 10_000}
EVAL_SHARE = 0.1  # at most this share of a time budget goes to validations chosen automatically
CADENCES = tuple(MAX_EVERY)


def round_every(steps: float) -> int:
    """The largest of 1, 2, 5, 10, 20, 50, ... that is at most ``steps`` (and at least 1)."""
    if steps < 2:
        return 1
    power = 10 ** int(math.floor(math.log10(steps)))
    return max(m * power for m in (1, 2, 5) if m * power <= steps)


def auto_cadences(total_steps: float, seconds_per_eval: float | None = None,
                  seconds: float | None = None) -> dict:
    """Cadences (steps) for a run of about ``total_steps`` steps.

    ``seconds_per_eval`` and ``seconds`` (the run's wall time): validations
    then also stay within :data:`EVAL_SHARE` of ``seconds``.
    """
    total_steps = max(float(total_steps), 1.0)
    points = {"log_every": LOG_POINTS, "eval_every": EVAL_POINTS, "sample_every": EVAL_POINTS,
              "checkpoint_every": EVAL_POINTS}
    if seconds_per_eval and seconds:
        affordable = max(1, int(EVAL_SHARE * seconds / seconds_per_eval))
        points["eval_every"] = min(EVAL_POINTS, affordable)
    return {name: min(MAX_EVERY[name], round_every(total_steps / points[name])) for name in CADENCES}


@dataclass(frozen=True)
class Plan:
    """When a run stops and how often it reports; ``None`` in a cadence: chosen from the run's length."""

    steps: int = DEFAULT_STEPS
    time_budget: float | None = None  # seconds over the whole run (every resumed session counted)
    log_every: int | None = None
    eval_every: int | None = None
    sample_every: int | None = None
    checkpoint_every: int | None = None
    sample_length: int = DEFAULT_SAMPLE_LENGTH
    elapsed: float = 0.0  # wall seconds of the run's earlier sessions
    keep_best: bool = False  # save the model of every validation that sets a new best (NAME.best.npz)
    patience: int | None = None  # stop after this many validations in a row without a new best; None: never
    best_loss: float | None = None  # the best validation loss so far, nats/char as the metrics log writes it
    best_step: int | None = None  # the step of that validation
    since_best: int = 0  # validations since it

    @classmethod
    def from_dict(cls, d: dict) -> "Plan":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def checked(cls, d: dict) -> "Plan":
        """:meth:`from_dict` of a recorded plan, each field's type and range checked (ValueError naming it)."""
        plan = cls.from_dict(d)
        for name in ("steps", "log_every", "eval_every", "sample_every", "checkpoint_every", "sample_length",
                     "patience", "best_step", "since_best"):
            value = getattr(plan, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} {value!r}")
        for name in ("time_budget", "elapsed", "best_loss"):
            value = getattr(plan, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not value >= 0):
                raise ValueError(f"{name} {value!r}")
        if not isinstance(plan.keep_best, bool) or plan.patience == 0 or (plan.best_loss is None) != (
                plan.best_step is None):
            raise ValueError(f"keep_best {plan.keep_best!r}, patience {plan.patience!r}, best at step "
                             f"{plan.best_step!r}")
        return plan

    def to_dict(self) -> dict:
        return asdict(self)

    def updated(self, **given) -> "Plan":
        """This plan with the fields in ``given`` that are not None replaced."""
        return replace(self, **{k: v for k, v in given.items() if v is not None})

    @property
    def resolved(self) -> bool:
        return all(getattr(self, name) is not None for name in CADENCES)

    def resolve(self, total_steps: float, seconds_per_eval: float | None = None) -> "Plan":
        """Every cadence not given, chosen for a run of about ``total_steps`` steps (see :func:`auto_cadences`)."""
        auto = auto_cadences(total_steps, seconds_per_eval, self.time_budget)
        return replace(self, **{name: auto[name] for name in CADENCES if getattr(self, name) is None})

    def after_validation(self, step: int, loss: float) -> tuple["Plan", bool]:
        """This plan with a validation of ``loss`` at ``step`` counted, and whether it set a new best (a loss
        below every earlier one; the first validation always does)."""
        if self.best_loss is None or loss < self.best_loss:
            return replace(self, best_loss=loss, best_step=step, since_best=0), True
        return replace(self, since_best=self.since_best + 1), False

    @property
    def out_of_patience(self) -> bool:
        """``patience`` validations in a row have not improved on the best."""
        return self.patience is not None and self.since_best >= self.patience

    def remaining_seconds(self) -> float | None:
        """Seconds of the time budget that earlier sessions left (None: no budget)."""
        return None if self.time_budget is None else self.time_budget - self.elapsed

    def describe_rest(self) -> str:
        """What resuming this plan will do, e.g. "trains on to step 200,000"."""
        left = self.remaining_seconds()
        if left is not None:
            return (f"trains for the {max(left, 0):,.0f} s left of its {self.time_budget:g} s budget, "
                    f"at most to step {self.steps:,}")
        return f"trains on to step {self.steps:,}"
