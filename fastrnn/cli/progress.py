"""What ``fastrnn train`` prints while it runs: nothing (``--quiet``), plain lines (not a terminal), or a
tqdm bar; each keeps a failure of standard output so that the run can stop and save."""
from __future__ import annotations

import signal
import sys
import time

from .._entry import silence_stdout
from ..charmodel import LN2
from .exits import EXIT_OUTPUT_CLOSED, EXIT_USAGE, warn
from .parser import DEFAULTS


def reporter(args, total, trainer):
    if args.quiet:
        return Quiet(args, total, trainer)
    if sys.stdout.isatty() and sys.stderr.isatty():
        return Bar(args, total, trainer)
    return Lines(args, total, trainer)


class Quiet:
    """No output; the base of the reporters. A write to standard output that fails (a reader that went away,
    as ``| head`` does, or a full disk) is kept in ``output_error``: the run stops at the end of its block of
    steps and saves (see :func:`interrupted`), and standard output goes to the null device from then on."""

    every = 0

    def __init__(self, args, total, trainer):
        self.args, self.total, self.trainer = args, total, trainer
        self.val = None
        self.output_error = None
        self._mark = (trainer.n, trainer.train_seconds)

    def header(self, trainer, corpus, path, ckpt): pass
    def sample(self, text): pass
    def log(self, trainer): pass
    def progress(self, trainer): pass
    def close(self): pass

    def line(self, text):
        pass

    def finish(self, trainer, path):
        pass

    def warn(self, text):
        warn(text)

    def validation(self, trainer, score):
        self.val = score

    def _print(self, text):
        if self.output_error is not None:
            return
        try:
            print(text, flush=True)
        except OSError as e:
            self.lost_output(e)

    def lost_output(self, error: OSError):
        """Standard output failed: keep the error, stop writing there, and ask the trainer to stop."""
        self.output_error = error
        silence_stdout()
        self.trainer.request_stop(signal.SIGPIPE)

    def output_problem(self) -> str:
        e = self.output_error
        return ("standard output was closed (its reader went away)" if isinstance(e, BrokenPipeError)
                else f"cannot write to standard output ({e.strerror or e})")

    def output_status(self) -> int:
        """0, or the exit status of a run whose standard output failed."""
        if self.output_error is None:
            return 0
        return EXIT_OUTPUT_CLOSED if isinstance(self.output_error, BrokenPipeError) else EXIT_USAGE

    def chars_per_second(self, trainer):
        """Training throughput since the previous call."""
        n0, t0 = self._mark
        self._mark = (trainer.n, trainer.train_seconds)
        dt = trainer.train_seconds - t0
        return (trainer.n - n0) * trainer.chars_per_step / dt if dt > 0 else 0.0


def text_of(text):
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def final_loss(trainer, score) -> str:
    """The run's figure for its ``done:`` line: the final validation, else the smoothed training loss."""
    if score is not None:
        return (f"validation {score.bits_per_char:.4f} bits/char, {score.nats_per_char:.4f} nats/char "
                f"({score.count:,} held out)")
    return f"smoothed training loss {trainer.smooth_loss_per_char / LN2:.3f} bits/char (no held-out split)"


class Lines(Quiet):
    """Plain lines on stdout (output is not a terminal): the seed's log, plus per-char losses and speed."""

    def line(self, text):
        self._print(text)

    def header(self, trainer, corpus, path, ckpt):
        c, unit = trainer.config, ("bytes" if trainer.vocab.bytes_mode else "characters")
        split = (f"training on {trainer.train_ids.size:,}, validating on {trainer.val_targets.size:,} "
                 f"(val-fraction {c.val_fraction})" if trainer.val_targets.size else "training on all of it")
        self.line(f"corpus {corpus.name}: {len(corpus):,} {unit}, {len(trainer.vocab):,} distinct; {split}")
        start = f"resuming {ckpt.path} at step {trainer.n:,}" if ckpt else "new model"
        if ckpt is None and trainer.parent is not None:
            p = trainer.parent
            added = len(trainer.vocab) - len(self.args.parent.vocab)
            start = (f"fine-tuning {p['path']} (step {p['step']:,}; {added:,} new symbol{'s' if added != 1 else ''} "
                     f"appended to its {len(self.args.parent.vocab):,})")
        split = getattr(trainer.workspace, "split", "streams")
        batch = (f", batch-size {c.batch_size} (shards of {trainer.shard_length:,} {unit}), {c.threads} "
                 f"thread{'s' if c.threads > 1 else ''}" + (" (split by hidden units)" if split == "units" else "")
                 if c.batch_size > 1 else "")
        if trainer.world is not None:
            batch += f" per rank x {trainer.world.size} MPI ranks of {c.batch_size // trainer.world.size} streams"
        model = "" if (c.cell, c.num_layers) == ("rnn", 1) else f"{c.num_layers}-layer {c.cell}, "
        update = "" if c.optimizer == "adagrad" else f", optimizer {c.optimizer}"
        update += ("" if c.clip == DEFAULTS["clip"] else f", clip-norm {c.clip_norm}" if c.clip_norm is not None
                   else f", clip {c.clip}" if c.clip is not None else ", no clipping")
        if c.warmup_steps:
            update += f", warmup {c.warmup_steps:,} steps"
        if c.dropout:
            update += f", dropout {c.dropout:g}"
        if c.lr_schedule == "cosine":
            update += (f", cosine decay to {c.min_lr_fraction:g}x by step " +
                       (f"{c.decay_steps:,}" if c.decay_steps is not None else "(sized to the time budget)"))
        plan = self.args.plan
        budget = ""
        if plan.time_budget is not None:
            budget = f" or {plan.time_budget:g} s" + (f" ({plan.remaining_seconds():,.0f} s left)"
                                                      if plan.elapsed else "")
        self.line(f"{start}: {model}hidden-size {c.hidden_size}, seq-length {c.seq_length}, learning-rate "
                  f"{c.learning_rate}{update}, {c.dtype}, seed {c.seed}{batch}; {self.total:,} steps{budget}"
                  f"; checkpoint {path}")

    def sample(self, text):
        self.line(f"----\n {text_of(text)} \n----")

    def log(self, trainer):
        per_char = trainer.smooth_loss_per_char
        val = f" | val {self.val.bits_per_char:.3f} bits/char" if self.val else ""
        self.line(f"iter {trainer.n - 1}, loss: {trainer.smooth_loss:.2f} | {per_char:.3f} nats/char, "
                  f"{per_char / LN2:.3f} bits/char{val} | {self.chars_per_second(trainer):,.0f} chars/s")

    def validation(self, trainer, score):
        self.val = score
        if score is not None:
            self.line(f"step {trainer.n:,}: validation {score.nats_per_char:.4f} nats/char, "
                      f"{score.bits_per_char:.4f} bits/char ({score.count:,} held out)")

    def finish(self, trainer, path):
        self.line(f"done: {trainer.n:,} steps; {final_loss(trainer, self.val)}; saved checkpoint {path}")


class Bar(Lines):
    """A tqdm bar on stderr (terminal): steps (or, with a time budget, seconds of it), smoothed loss,
    validation bits/char, chars/s, ETA."""

    every = 50  # steps between bar updates

    def __init__(self, args, total, trainer):
        super().__init__(args, total, trainer)
        from tqdm import tqdm
        self._tqdm = tqdm
        self.bar = None  # opened at the first progress report, when training is under way
        self._closed = False

    def line(self, text):
        if self.bar is None:
            self._print(text)
        else:
            try:
                self._tqdm.write(text, file=sys.stdout)
            except OSError as e:
                self.lost_output(e)

    def log(self, trainer):
        pass

    def warn(self, text):
        if self.bar is None:
            warn(text)
        else:
            self._tqdm.write(f"fastrnn train: warning: {text}", file=sys.stderr)

    def _seconds(self) -> float:
        """Wall seconds of the whole run so far (earlier sessions included)."""
        return self.args.plan.elapsed + time.perf_counter() - self.args.started

    def progress(self, trainer):
        if self._closed:
            return
        budget = self.args.plan.time_budget
        if self.bar is None:  # with a time budget the bar counts its seconds, so its ETA is the budget's end
            if budget is not None:
                self.bar = self._tqdm(total=round(budget), initial=0, unit="s", dynamic_ncols=True,
                                      file=sys.stderr, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s "
                                                                  "[{elapsed}<{remaining}{postfix}]")
            else:
                self.bar = self._tqdm(total=self.total, initial=self._mark[0], unit="step", dynamic_ncols=True,
                                      file=sys.stderr)
        if budget is not None:
            self.bar.update(min(self._seconds(), budget) - self.bar.n)
            post = f"step {trainer.n:,}, loss {trainer.smooth_loss_per_char / LN2:.3f} bpc"
        else:
            self.bar.update(trainer.n - self.bar.n)
            post = f"loss {trainer.smooth_loss_per_char / LN2:.3f} bpc"
        if self.val:
            post += f", val {self.val.bits_per_char:.3f} bpc"
        cps = self.chars_per_second(trainer)
        self.bar.set_postfix_str(f"{post}, {cps:,.0f} chars/s", refresh=False)

    def close(self):
        self._closed = True
        if self.bar is not None:
            self.bar.close()
            self.bar = None
