"""The ``fastrnn`` command: ``train``, ``sample`` and ``eval``, a thin layer over the Python API.

Bad input (a missing or broken file, an impossible option, a size the machine
cannot hold, a checkpoint that does not fit, one another run is writing)
prints one line on stderr and exits with status 2 before anything is written.
Ctrl-C (SIGINT) or SIGTERM during training, the final validation included, saves
a checkpoint and exits 130 or 143 (128 + the signal); a second one before that
stops at once without saving (the last checkpoint file stays intact). A loss
that becomes NaN or infinite, or parameters whose outputs could overflow, stop
training, keep the last good checkpoint and exit 1. Elsewhere SIGTERM acts like
Ctrl-C: the same cleanup, then exit 143 (from the start of the entry point:
see :mod:`fastrnn._entry`).

One run per checkpoint: ``train`` holds an OS lock on ``PATH.lock`` beside the
checkpoint, and one on its metrics log's, from its start to its end
(:mod:`fastrnn.lock`), and never replaces a checkpoint file that someone else
wrote meanwhile. A standard output that fails under ``train`` (its reader went
away, a full disk) stops the run at the end of its block of steps; it saves and
exits 141 (a closed pipe) or 2. The run's plan (:mod:`fastrnn.plan`) is saved in
its checkpoints and continued by ``--resume``.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import threading
import time
import zipfile
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from ._entry import Terminated, silence_stdout
from ._files import OutputWriteError
from .checkpoint import Checkpoint, CheckpointError, has_checkpoint_marker, load_checkpoint, save_checkpoint
from .corpus import EMBEDDED_NAME, CorpusError, decode_utf8, load_corpus, read_bytes
from .limits import INT64_MAX, SAMPLE_BYTES_PER_CHAR, fits, outputs_bounded, training_bytes
from .lock import CheckpointBusy, CheckpointChanged, CheckpointLock, SaveGuard
from .metrics import MetricsError, MetricsLog, check_new, run_metrics_path
from .model import CELLS
from .optim import OPTIMIZERS, SCHEDULES
from .plan import DEFAULT_STEPS, Plan
from .split_check import HeldOutWatch
from .trainer import (ENGINE_BLOCK_STEPS, LN2, ConfigError, TrainConfig, Trainer, TrainingDiverged, check_split,
                      OPTION_OWNER, recipe_config, unused_options)
from .vocab import UnknownSymbolsError

EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM

HYPERPARAMETERS = ("hidden_size", "seq_length", "learning_rate", "seed", "dtype", "val_fraction", "batch_size",
                   "cell", "num_layers", "optimizer", "alpha", "beta1", "beta2", "eps", "clip", "clip_norm",
                   "lr_schedule", "warmup_steps", "decay_steps", "min_lr_fraction", "dropout")
DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}
FLAGS = {"cell": "--model"}  # config fields whose flag is not --field-name


class UsageError(Exception):
    """Bad command-line input: reported as one line on stderr, exit status 2."""


class OutputsOverflow(TrainingDiverged):
    """Finite parameters so large that the model's logits can overflow: not a checkpoint worth keeping."""

    def __init__(self, step):
        RuntimeError.__init__(self, f"training diverged: by step {step:,} the parameters are so large that the "
                                    f"model's outputs can overflow (a lower learning rate may help)")
        self.step, self.loss = step, math.nan


def _interruption(signum) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _exit_status(signum) -> int:
    return EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED


def _int(text):
    """An int flag: a 64-bit integer (a larger one is refused here, not by a traceback later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text} is out of range (at most {INT64_MAX:,})")
    return value


def _following_rank() -> bool:
    """True in a process an MPI launcher started as rank 1 or later: rank 0 alone prints errors."""
    if not any(os.environ.get(name) for name in _RANK_VARIABLES):
        return False
    from .distributed import launched_rank
    return launched_rank() != 0


_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")  # as fastrnn.distributed.RANK_VARIABLES


def _error_line(text):
    if not _following_rank():
        print(text, file=sys.stderr)


# Flags of char-rnn, torch-rnn, makemore and nanoGPT that users type, and what fastrnn calls them.
OTHER_TRAINERS_FLAGS = {
    "--lr": "--learning-rate", "--learning_rate": "--learning-rate", "--rnn_size": "--hidden-size",
    "--rnn-size": "--hidden-size", "--hidden": "--hidden-size", "--n_embd": "--hidden-size",
    "--wordvec_size": "--hidden-size", "--n_layer": "--num-layers", "--n-layers": "--num-layers",
    "--n_layers": "--num-layers", "--layers": "--num-layers", "--seq_length": "--seq-length",
    "--block_size": "--seq-length", "--batch_size": "--batch-size", "--max_epochs": "--steps or --time-budget",
    "--epochs": "--steps or --time-budget", "--max_iters": "--steps", "--max-iters": "--steps",
    "--iters": "--steps", "--grad_clip": "--clip", "--max_norm": "--clip-norm", "--eval_every": "--eval-every",
    "--eval_interval": "--eval-every", "--print_every": "--log-every", "--log_interval": "--log-every",
    "--checkpoint_every": "--checkpoint-every", "--init_from": "--resume", "--data_dir": "CORPUS",
    "--input": "CORPUS", "--input_h5": "CORPUS", "--seed_text": "--prime", "--start": "--prime",
    "--primetext": "--prime", "--sample_length": "--sample-length", "--num_samples": "--num-samples",
    "--max_new_tokens": "--length",
}


def _suggestion(parser: argparse.ArgumentParser, option: str) -> str | None:
    """What ``option`` (not one of ``parser``'s) probably meant: a known other trainer's name, or a close match."""
    import difflib

    name = option.split("=", 1)[0]
    if name.startswith("-") and not name.startswith("--"):
        name = "-" + name  # torch-rnn's -rnn_size style
    ours = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    known = OTHER_TRAINERS_FLAGS.get(name) or OTHER_TRAINERS_FLAGS.get(name.replace("-", "_"))
    if known is not None:
        return known
    if name.replace("_", "-") in ours:
        return name.replace("_", "-")
    close = difflib.get_close_matches(name.replace("_", "-"), ours, n=1, cutoff=0.75)
    return close[0] if close else None


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --lr is not --lr-schedule
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        args, unknown = self.parse_known_args(args, namespace)
        if unknown:
            command = getattr(args, "command", None)
            parser = self._subparsers_actions_choice(command) if command else self
            hints = []
            for option in (u for u in unknown if u.startswith("-")):
                meant = _suggestion(parser, option)
                hints.append(f"{option.split('=', 1)[0]}: did you mean {meant}?" if meant else None)
            hint = "; ".join(h for h in hints if h)
            prog = parser.prog
            message = f"unrecognized arguments: {' '.join(unknown)}" + (f" ({hint})" if hint else "")
            parser.exit(EXIT_USAGE, None if _following_rank() else
                        f"{prog}: error: {message} (see {prog} --help)\n")
        return args

    def _subparsers_actions_choice(self, command):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(command, self)
        return self

    def error(self, message):  # one line instead of usage + error
        self.exit(EXIT_USAGE, None if _following_rank() else f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _print_message(self, message, file=None):
        """As argparse's, but --help to a standard output that fails is an error (argparse ignores it)."""
        if not message or file is None or file is not sys.stdout:
            return super()._print_message(message, file)
        try:
            file.write(message)
            file.flush()
        except BrokenPipeError:
            silence_stdout()
        except OSError as e:
            silence_stdout()
            self.exit(EXIT_USAGE, f"{self.prog}: error: cannot write to standard output: {e.strerror or e}\n")


TRAIN_EXAMPLES = """examples:
  fastrnn train input.txt --model lstm --time-budget 600   the recipe for ten minutes on your text
  fastrnn train input.txt --model lstm --steps 5000        the recipe for a number of steps
  fastrnn train                                            min-char-rnn exactly, on tiny shakespeare
  fastrnn train --resume input.ckpt.npz                    continue a run as it was planned
  fastrnn train --resume input.ckpt.npz --steps 20000      ... to another total number of steps

A flag not given takes the recipe's value with --model lstm|gru (2 layers of 128, batch 32,
seq-length 64, float32, adam 3e-2, clip-norm 5, warmup 20, cosine decay; with --time-budget 90 or
more: 2 layers of 192; with --time-budget 600 or more: 2 layers of 256, adam 1e-2, dropout 0.2), else
min-char-rnn's. When resuming, the checkpoint's hyperparameters and plan (steps, time budget,
cadences) apply; a flag given replaces that part of the plan, and a hyperparameter flag that
contradicts the checkpoint is an error."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fastrnn", description="Train character-level RNN, LSTM and GRU language models fast "
                                                 "on a CPU; sample, score and export them.",
                     epilog="Run fastrnn COMMAND --help for a command's options. Start with: "
                            "fastrnn train input.txt --model lstm --time-budget 600")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,eval,prepare,export,plot}",
                                parser_class=_Parser)

    t = sub.add_parser("train", help="train a model on a text file (default: the embedded tiny shakespeare)",
                       description="Train a character-level language model on a text. Ctrl-C or SIGTERM saves a "
                                   "checkpoint that --resume continues exactly.",
                       epilog=TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("corpus", nargs="?", metavar="CORPUS",
                   help=f"UTF-8 text file (default: the embedded {EMBEDDED_NAME}; "
                        "when resuming: the checkpoint's corpus)")
    g = t.add_argument_group("data")
    g.add_argument("--val-fraction", type=float, metavar="F",
                   help=f"fraction of the text, at its end, held out for validation (default {DEFAULTS['val_fraction']}; "
                        "0 trains on all of it, as min-char-rnn does)")
    g.add_argument("--bytes", action="store_true", help="treat the file as raw bytes (vocabulary <= 256)")
    g.add_argument("--cache-dir", metavar="DIR",
                   help="folder for the corpus's prepared ids, as in fastrnn prepare (default: beside the corpus)")
    g = t.add_argument_group("model")
    g.add_argument("--model", dest="cell", choices=CELLS, help="recurrent cell: rnn (tanh, the seed's), lstm or gru "
                   "(PyTorch's equations and gate order; default rnn); lstm and gru come with a recipe (below)")
    g.add_argument("--num-layers", type=_int, metavar="N", help="stacked recurrent layers (default 1)")
    g.add_argument("--hidden-size", type=_int, metavar="N", help=f"hidden units (default {DEFAULTS['hidden_size']})")
    g.add_argument("--dropout", type=float, metavar="P",
                   help="zero each output of each layer with probability P while training (the rest scaled by "
                        "1/(1-P); seeded masks, so a resume is exact), in [0, 1) (default 0)")
    g.add_argument("--dtype", choices=("float64", "float32"), help="float type (default float64)")
    g.add_argument("--seed", type=_int, metavar="N", help="seed of the initial weights and of samples (default: drawn, then recorded)")
    g = t.add_argument_group("optimization")
    g.add_argument("--seq-length", type=_int, metavar="N", help=f"BPTT steps per update (default {DEFAULTS['seq_length']})")
    g.add_argument("--batch-size", type=_int, metavar="B",
                   help="streams trained per step, each on its own shard of the text (default 1: "
                        "min-char-rnn's loop exactly)")
    g.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="adagrad (the seed's, default), rmsprop or adam, with torch.optim's formulas")
    g.add_argument("--learning-rate", type=float, metavar="LR",
                   help="learning rate (default: adagrad 0.1, rmsprop 2e-3, adam 2e-3)")
    g.add_argument("--alpha", type=float, metavar="A", help="rmsprop's smoothing constant, in [0, 1) (default 0.95)")
    g.add_argument("--beta1", type=float, metavar="B1", help="adam's first-moment decay, in [0, 1) (default 0.9)")
    g.add_argument("--beta2", type=float, metavar="B2", help="adam's second-moment decay, in [0, 1) (default 0.999)")
    g.add_argument("--eps", type=float, metavar="EPS", help="the optimizer's epsilon, > 0 (default 1e-8)")
    g.add_argument("--clip", type=float, metavar="V",
                   help="clip each gradient entry to [-V, V] (default 5, the seed's; 0: off)")
    g.add_argument("--clip-norm", type=float, metavar="N",
                   help="clip the gradients' global 2-norm to N instead of clipping by value "
                        "(as torch.nn.utils.clip_grad_norm_)")
    g.add_argument("--lr-schedule", choices=SCHEDULES,
                   help="constant (default) or cosine: decay the learning rate along half a cosine to "
                        "--min-lr-fraction of it by --decay-steps")
    g.add_argument("--warmup-steps", type=_int, metavar="N",
                   help="raise the learning rate linearly over the first N steps (default 0)")
    g.add_argument("--decay-steps", type=_int, metavar="N",
                   help="cosine: the step where the rate reaches its floor (default: --steps; with --time-budget, "
                        "the steps the budget is measured to hold)")
    g.add_argument("--min-lr-fraction", type=float, metavar="F",
                   help="cosine: the floor, a fraction of the learning rate, in [0, 1] (default 0.1)")
    g.add_argument("--threads", type=_int, metavar="N",
                   help="threads of a batched step, and of the matrix products of lstm, gru and stacked "
                        "models (default: all cores for a new run, the recorded count when resuming; another "
                        "count changes results by rounding only)")
    g = t.add_argument_group("how long, and what it reports (kept by --resume)")
    g.add_argument("--steps", type=_int, metavar="N",
                   help=f"total steps, counting those before a resume (default {DEFAULT_STEPS:,})")
    g.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="wall time of the whole run, every resumed session counted: training stops in time "
                        "for the final validation and save to end within it (or at --steps)")
    g.add_argument("--eval-every", type=_int, metavar="N",
                   help="validation every N steps, 0: only at the end (default: about 10 over the run, "
                        "at most every 10,000 steps, at most a tenth of a time budget)")
    g.add_argument("--sample-every", type=_int, metavar="N",
                   help="print a sample every N steps, 0: never (default: about 10 over the run, at most 10,000)")
    g.add_argument("--sample-length", type=_int, metavar="N", help="characters per sample (200)")
    g.add_argument("--log-every", type=_int, metavar="N",
                   help="log line and metrics row every N steps (default: about 100 over the run, at most 1,000)")
    g = t.add_argument_group("checkpoints and output")
    g.add_argument("--checkpoint", metavar="PATH",
                   help="where to save (default: CORPUS-NAME.ckpt.npz in the current folder, or the --resume file)")
    g.add_argument("--checkpoint-every", type=_int, metavar="N",
                   help="save every N steps, 0: only at the end (default: about 10 over the run, at most 10,000)")
    g.add_argument("--resume", metavar="PATH", help="continue the run saved in this checkpoint, as it was planned")
    g.add_argument("--overwrite", action="store_true", help="let a new run replace an existing checkpoint file")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    t.set_defaults(run=cmd_train)

    s = sub.add_parser("sample", help="sample text from a checkpoint", description="Sample text from a checkpoint.")
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--length", type=_int, metavar="N", default=200, help="characters to sample (200)")
    s.add_argument("--temperature", type=float, metavar="T", default=1.0, help="softmax temperature, > 0 (1.0)")
    s.add_argument("--prime", metavar="TEXT", help="text to continue (warms the hidden state)")
    s.add_argument("--seed", type=_int, metavar="N", help="seed of the draws (default: random)")
    s.add_argument("--argmax", action="store_true", help="always take the most likely character")
    s.add_argument("--top-k", type=_int, metavar="K", help="draw only among the K most likely characters")
    s.add_argument("--top-p", type=float, metavar="P",
                   help="nucleus sampling: draw only among the most likely characters that together hold "
                        "P of the probability, 0 < P <= 1 (after --top-k)")
    s.add_argument("--prime-file", metavar="FILE", help="continue the text of FILE (instead of --prime)")
    s.add_argument("--num-samples", type=_int, metavar="N", default=1,
                   help="draw N samples, each from the primed state, separated by a line '----' (1)")
    s.set_defaults(run=_mpi_other_commands(cmd_sample))

    e = sub.add_parser("eval", help="loss of a text under a checkpoint, in nats and bits per character",
                       description="Score a text under a model: nats/char and bits/char. Without FILE, "
                                   "the held-out split of the training corpus.")
    e.add_argument("checkpoint", metavar="CHECKPOINT")
    e.add_argument("file", nargs="?", metavar="FILE",
                   help="text to score, - for standard input (default: the held-out split)")
    e.add_argument("--per-char", action="store_true", help="print each character's probability")
    e.add_argument("--cache-dir", metavar="DIR",
                   help="folder for the training corpus's prepared ids when scoring its held-out split, "
                        "as in fastrnn prepare (default: beside the corpus)")
    e.set_defaults(run=_mpi_other_commands(cmd_eval))

    pr = sub.add_parser("prepare", help="encode a large text once to a memory-mapped id file (cached beside it)",
                        description="Encode CORPUS once, streaming in chunks, to a compact id file (uint8, "
                                    "uint16 or uint32) plus its vocabulary, in CORPUS.fastrnn-ids/ or --cache-dir. "
                                    "The ids are reused while the corpus is unchanged.")
    pr.add_argument("corpus", metavar="CORPUS", help="UTF-8 text file (or any file with --bytes)")
    pr.add_argument("--bytes", action="store_true", help="treat the file as raw bytes (vocabulary <= 256)")
    pr.add_argument("--cache-dir", metavar="DIR", help="folder for the ids (default: beside the corpus)")
    pr.set_defaults(run=_mpi_other_commands(cmd_prepare))

    x = sub.add_parser("export", help="write a checkpoint's model as ONNX or as safetensors for PyTorch",
                       description="Write the model of CHECKPOINT to OUT, the format by its suffix: .onnx (an "
                                   "ONNX graph: ids -> logits, for onnxruntime; needs fastrnn[onnx]) or "
                                   ".safetensors (PyTorch's state_dict names; needs fastrnn[safetensors]). "
                                   "Both carry the model's sizes and vocabulary as metadata. An .onnx model over "
                                   "1 GiB of weights is written as OUT.onnx plus OUT.onnx.data beside it (ONNX's "
                                   "external data): keep the two together.")
    x.add_argument("checkpoint", metavar="CHECKPOINT")
    x.add_argument("out", metavar="OUT", help="the file to write: NAME.onnx or NAME.safetensors")
    x.add_argument("--state", action="store_true",
                   help=".onnx only: add the state inputs h0 (and c0) and outputs hn (and cn), "
                        "(layers, batch, hidden), to carry the state between calls")
    x.add_argument("--overwrite", action="store_true",
                   help="replace OUT (and OUT.data) if it exists; never the checkpoint itself")
    x.set_defaults(run=_mpi_other_commands(cmd_export))

    pl = sub.add_parser("plot", help="plot the training and validation loss of metrics logs (needs fastrnn[plot])",
                        description="Draw train and validation bits/char of one or more NAME.metrics.csv files "
                                    "(written by fastrnn train beside its checkpoint), overlaid, into a PNG.")
    pl.add_argument("metrics", nargs="+", metavar="METRICS.csv")
    pl.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the PNG file to write")
    pl.add_argument("--x", choices=("step", "chars", "seconds"), default="step",
                    help="horizontal axis: steps, training characters seen, or wall seconds (step)")
    pl.add_argument("--title", metavar="TEXT", help="the plot's title (drawn as written: no mathtext)")
    pl.add_argument("--overwrite", action="store_true", help="replace OUT.png if it exists")
    pl.set_defaults(run=_mpi_other_commands(cmd_plot))
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # plain `fastrnn`: what it can do, and a mistake all the same
        if not _following_rank():
            parser.print_help()
        return EXIT_USAGE
    args.world = None  # set by train under an MPI launcher (fastrnn.distributed)
    try:
        with _sigterm_as_interrupt():
            status = _run(args)
    except BaseException:
        if args.world is not None and args.world.is_leader:  # a bug: no rank may be left waiting for rank 0
            import traceback
            traceback.print_exc()
            args.world.abort(1)
        raise
    if args.world is not None and args.world.is_leader:
        args.world.leave(status)
    return status


def _run(args) -> int:
    """Run the command; its exit status. Bad input and environment failures: one line on stderr, status 2."""
    if sys.stdout is None and args.command != "train":  # started with stdout closed (`>&-`): its output would be lost
        _error_line(f"fastrnn {args.command}: error: standard output is closed; redirect it to a file "
                    f"(or to /dev/null)")
        return EXIT_USAGE
    try:
        with _StdoutFailures.tagged():
            status = args.run(args)
            if sys.stdout is not None:
                sys.stdout.flush()  # here, not at exit: a full disk or a closed pipe is seen while it can be told
        return status
    except (UsageError, CorpusError, ConfigError, CheckpointError, UnknownSymbolsError, CheckpointBusy,
            MetricsError, OutputWriteError) as e:
        _error_line(f"fastrnn {args.command}: error: {e}")
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        terminated = isinstance(e, Terminated)
        _error_line(f"fastrnn {args.command}: {'terminated' if terminated else 'interrupted'}")
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `fastrnn sample ... | head`: the reader has all it wanted
        silence_stdout()
        return 0
    except OSError as e:  # a full disk, a quota, an I/O error: on standard output or on a file
        if _StdoutFailures.is_stdout(e):
            silence_stdout()
            _error_line(f"fastrnn {args.command}: error: cannot write to standard output: {e.strerror or e}")
        else:
            _error_line(f"fastrnn {args.command}: error: {_os_error_text(e)}")
        return EXIT_USAGE


def _os_error_text(e: OSError) -> str:
    """One line for an OSError: its own message when it names its file, else "FILE: REASON" or "REASON"."""
    if e.strerror is None:
        return str(e)
    return f"{e.filename}: {e.strerror}" if e.filename is not None else e.strerror


class _StdoutFailures:
    """Tells write failures on standard output from those on files (:func:`silence_stdout` quiets it after).

    While :meth:`tagged` is active, ``sys.stdout`` (and its ``buffer``) are proxies that mark an
    ``OSError`` raised by their ``write`` or ``flush`` (the same exception, re-raised, so handlers of
    ``BrokenPipeError`` or ``OSError`` see it unchanged)."""

    MARK = "_fastrnn_stdout"

    @classmethod
    @contextlib.contextmanager
    def tagged(cls):
        real = sys.stdout
        if real is None or isinstance(real, _MarkingStream):
            yield
            return
        sys.stdout = _MarkingStream(real, cls.MARK)
        try:
            yield
        finally:
            if sys.stdout is not None and getattr(sys.stdout, "_stream", None) is real:
                sys.stdout = real

    @classmethod
    def is_stdout(cls, e: BaseException) -> bool:
        return getattr(e, cls.MARK, False)


class _MarkingStream:
    """A stream whose ``write`` and ``flush`` mark the ``OSError`` they raise (``setattr(e, mark, True)``);
    everything else is the wrapped stream's. ``buffer`` (a text stream's bytes) is wrapped alike."""

    def __init__(self, stream, mark):
        self._stream, self._mark = stream, mark

    def _marked(self, method, *a):
        try:
            return method(*a)
        except OSError as e:
            setattr(e, self._mark, True)
            raise

    def write(self, data):
        return self._marked(self._stream.write, data)

    def flush(self):
        return self._marked(self._stream.flush)

    @property
    def buffer(self):
        return _MarkingStream(self._stream.buffer, self._mark)

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) while the command runs; restored after.

    Only in the main thread, the one place Python delivers signals, and not where SIGTERM is ignored."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN):
        yield
        return

    def on_sigterm(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- argument checks ---------------------------------------------------------

def _positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")


def _non_negative(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be 0 or more, got {value}")


def _check_train_args(args):
    _positive(args, "hidden_size", "seq_length", "batch_size", "threads", "steps", "sample_length")
    _non_negative(args, "eval_every", "sample_every", "log_every", "checkpoint_every", "seed", "warmup_steps",
                  "decay_steps")
    f = args.min_lr_fraction
    if f is not None and not (0 <= f <= 1):
        raise UsageError(f"--min-lr-fraction must be in [0, 1], got {f}")
    p = args.dropout
    if p is not None and not (0 <= p < 1):
        raise UsageError(f"--dropout must be in [0, 1), got {p}")
    _positive(args, "num_layers")
    budget = args.time_budget
    if budget is not None and not (math.isfinite(budget) and budget > 0):
        raise UsageError(f"--time-budget must be a positive number of seconds, got {budget}")
    for name in ("learning_rate", "eps", "clip_norm"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UsageError(f"{_flag(name)} must be a positive number, got {value}")
    if args.clip is not None and not (math.isfinite(args.clip) and args.clip >= 0):
        raise UsageError(f"--clip must be a positive number (or 0: off), got {args.clip}")
    for name in ("alpha", "beta1", "beta2"):
        value = getattr(args, name)
        if value is not None and not (0 <= value < 1):
            raise UsageError(f"{_flag(name)} must be in [0, 1), got {value}")
    if not args.resume:  # a resumed run's flags are checked against the checkpoint's (_resume_config)
        chosen = {name: getattr(args, name) for name in ("cell", "optimizer") if getattr(args, name) is not None}
        optimizer = recipe_config(time_budget=args.time_budget, **chosen).optimizer
        for name in unused_options(optimizer):
            if getattr(args, name) is not None:
                whose = "" if args.optimizer else f" (the {_flag('cell')} {args.cell or 'rnn'} default)"
                raise UsageError(f"{_flag(name)} is {OPTION_OWNER[name]}'s option; --optimizer {optimizer}{whose} "
                                 f"does not use it")
    if args.clip_norm is not None and args.clip:
        raise UsageError("--clip and --clip-norm exclude each other: clip by value or by norm")
    if args.clip == 0 or args.clip_norm is not None:
        args.clip = None  # off (by norm instead, or not at all)
        args.clip_off = True
    vf = args.val_fraction
    if vf is not None and not (0 <= vf < 1):
        raise UsageError(f"--val-fraction must be in [0, 1), got {vf}")


def _flag(name):
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def _resume_config(args, ckpt: Checkpoint) -> TrainConfig:
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
            clashes.append(f"{_flag(name)} {given} (checkpoint: {getattr(stored, name)})")
    if args.bytes and not ckpt.vocab.bytes_mode:
        clashes.append("--bytes (checkpoint trained on characters)")
    if clashes:
        one = len(clashes) == 1
        raise UsageError(f"--resume {args.resume}: {'; '.join(clashes)} contradict{'s' if one else ''} the "
                         f"checkpoint; drop {'it' if one else 'them'} to resume")
    return stored if args.threads is None else replace(stored, threads=args.threads)


def _checkpoint_path(args) -> Path:
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


def _not_a_checkpoint(path) -> str | None:
    """None if ``path`` holds fastrnn's checkpoint format marker, else what it is instead."""
    try:
        if not zipfile.is_zipfile(path):
            return "not an .npz file"
        if has_checkpoint_marker(path):  # reads the marker's header and its few bytes only
            return None
        return "an .npz file without fastrnn's format marker"
    except Exception as e:  # unreadable in any way: not something we know to be ours
        return f"unreadable ({e})"


def _check_existing(args, path: Path, corpus_path):
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
    why = _not_a_checkpoint(path)
    if why is not None:
        raise UsageError(f"--overwrite replaces only a fastrnn checkpoint, and {str(path)!r} is {why}; "
                         f"choose another --checkpoint")


def _check_memory(plan: Plan, corpus, config: TrainConfig, report_warning):
    """One line naming the flag, before anything is allocated, for sizes this machine cannot hold."""
    unit = "bytes" if corpus.vocab.bytes_mode else "characters"
    check_split(len(corpus), config, unit)  # its errors first: a --seq-length longer than the text
    H, T, B = config.hidden_size, config.seq_length, config.batch_size
    threads = config.threads or os.cpu_count() or 1

    def need(threads):
        return training_bytes(len(corpus.vocab), H, T, B, threads, config.dtype, cell=config.cell,
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


# --- the corpus ------------------------------------------------------------------

def _cache_writable(folder: Path) -> bool:
    if folder.exists():
        return folder.is_dir() and os.access(folder, os.W_OK)
    return os.access(folder.parent, os.W_OK)


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    return missing


class _CreatedFolders:
    """The folders up to ``folder`` that do not exist yet; :meth:`remove` removes, where they were created
    since, the ``files`` this process wrote into them and then the folders themselves, deepest first, each
    only while empty: never a folder another process (a concurrent prepare) has put something in."""

    def __init__(self, folder: Path):
        self.created = _missing_folders(folder)

    def remove(self, files=()):
        if self.created:
            for file in files:
                with contextlib.suppress(OSError):
                    os.unlink(file)
            for folder in self.created:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only while empty
            self.created.clear()


@contextlib.contextmanager
def _opened_corpus(path, bytes_mode, cache_dir=None):
    """The corpus to train on or evaluate, for the ``with`` block that checks the command's input.

    A file is prepared (:func:`~fastrnn.prepared.prepare_corpus`: encoded once to
    ``CORPUS.fastrnn-ids/`` beside it, or under ``cache_dir`` (``--cache-dir``),
    reused while unchanged) and read through a memory map; ``None`` is the
    embedded corpus, loaded in memory. Where the ids cannot be cached beside the
    corpus (a read-only folder) the file is loaded in memory as before; a
    ``cache_dir`` that cannot hold them is an error, since it was asked for.
    Bad input writes nothing: the cache folders this call created are removed
    again if preparing fails or the ``with`` block raises.
    """
    if path is None:
        yield load_corpus(None, bytes_mode=bytes_mode)
        return
    from .prepared import cache_folder, prepare_corpus

    folder = cache_folder(path, cache_dir)
    remove_created = _CreatedFolders(folder).remove  # with cache_dir, possibly cache_dir and its parents too
    written = ()  # the files this call's prepare wrote (none when it reused a cache)
    try:
        try:
            corpus = prepare_corpus(path, bytes_mode=bytes_mode, cache_dir=cache_dir)
            corpus.path = os.path.abspath(path)  # where it is now, even if it moved with its cache
            if not getattr(corpus, "reused", True):
                written = (corpus.ids_path, corpus.meta_path)
        except CorpusError:
            remove_created()
            if cache_dir is not None or _cache_writable(folder):
                raise
            corpus = load_corpus(path, bytes_mode=bytes_mode)  # its errors are those of the file itself
        yield corpus
    except BaseException:
        remove_created(written)
        raise


# --- train -------------------------------------------------------------------

def _warn(text):
    print(f"fastrnn train: warning: {text}", file=sys.stderr, flush=True)


def _mpi_world(args):
    """This process's :class:`~fastrnn.distributed.MPIWorld` when an MPI launcher started several, else None."""
    if not any(os.environ.get(name) for name in (*_RANK_VARIABLES, "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
        return None
    from .distributed import MPIUnavailable, launched_size, world_from_environment
    if args.command != "train":
        if (launched_size() or 0) > 1:
            raise UsageError(f"only train runs across MPI ranks; run {args.command} as one process")
        return None
    try:
        return world_from_environment()
    except MPIUnavailable as e:
        raise UsageError(str(e)) from None


def _mpi_other_commands(run):
    """Commands other than train refuse to run as several MPI ranks (they would race on their output)."""
    def checked(args):
        _mpi_world(args)
        return run(args)
    checked.__doc__ = run.__doc__
    return checked


def cmd_train(args) -> int:
    args.started = time.perf_counter()  # the --time-budget clock
    args.world = _mpi_world(args)
    if args.world is not None and not args.world.is_leader:
        from .distributed import follow
        return follow(args.world, _follower_trainer(args.world))
    _check_train_args(args)
    path = _checkpoint_path(args)
    metrics_file = run_metrics_path(path, resuming=args.resume is not None)
    # before any work; released however the run ends
    with CheckpointLock(path) as lock, CheckpointLock(metrics_file, what="metrics log") as metrics_lock:
        if lock.warning or metrics_lock.warning:
            _warn(lock.warning or metrics_lock.warning)
        return _train(args, path, metrics_file)


def _plan(args, ckpt) -> Plan:
    """The run's plan: the checkpoint's (a resume), else the defaults, with the flags given replacing fields."""
    given = {name: getattr(args, name) for name in ("steps", "time_budget", "log_every", "eval_every",
                                                    "sample_every", "checkpoint_every", "sample_length")}
    if ckpt is None:
        return Plan().updated(**given)
    if ckpt.plan is not None:
        return Plan.from_dict(ckpt.plan).updated(**given)
    # A checkpoint from before plans were recorded: the cadences that were fixed defaults then.
    return Plan(log_every=1_000, eval_every=10_000, sample_every=10_000, checkpoint_every=10_000).updated(**given)


def _train(args, path: Path, metrics_file: Path) -> int:
    world = args.world
    ckpt = load_checkpoint(args.resume) if args.resume else None
    plan = _plan(args, ckpt)
    if ckpt is not None:
        config = _resume_config(args, ckpt)
        bytes_mode = ckpt.vocab.bytes_mode
        corpus_path = args.corpus or ckpt.corpus_path
        if args.corpus is None and corpus_path is not None and not Path(corpus_path).exists():
            raise UsageError(f"the checkpoint's corpus {corpus_path!r} is gone; pass it as CORPUS")
    else:
        given = {name: getattr(args, name) for name in (*HYPERPARAMETERS, "threads")
                 if getattr(args, name) is not None or (name == "clip" and getattr(args, "clip_off", False))}
        if world is not None and args.threads is None:
            given["threads"] = _threads_per_rank()
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
    _check_existing(args, path, corpus_path)
    if ckpt is None:
        check_new(metrics_file, args.overwrite)
    guard = SaveGuard(path)  # what is at the path now: the only file a save may replace
    with _opened_corpus(corpus_path, bytes_mode, args.cache_dir) as corpus:
        _check_memory(plan, corpus, config, _warn)
        trainer = (ckpt.trainer(corpus, threads=config.threads, world=world) if ckpt is not None
                   else Trainer(corpus, config, world=world))
    if trainer.config.lr_schedule == "cosine" and trainer.config.decay_steps is None and plan.time_budget is None:
        # else sized to the time budget once the speed is measured (_train_loop); the build below tells the others
        trainer.fix_decay(total, tell_others=False)
    if plan.time_budget is None:
        plan = plan.resolve(total)  # the cadences not given, for a run of `total` steps
    args.plan = plan
    if world is not None:  # the corpus is prepared: now the other ranks open it and build their trainers
        world.announce("build", dict(config=trainer.config.to_dict(), corpus_path=corpus_path,
                                     fingerprint=corpus.fingerprint, bytes_mode=bytes_mode,
                                     cache_dir=args.cache_dir, resume=args.resume,
                                     decay_steps=trainer.config.decay_steps))
        errors = [e for e in world.gather(None) if e is not None]
        if errors:
            raise UsageError(errors[0])
    report = _reporter(args, total, trainer)
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
    # The one writer of the metrics log (under MPI: rank 0's, beside the checkpoint it saves).
    metrics = MetricsLog(metrics_file, resume_step=ckpt.state.n if ckpt is not None else None)
    try:
        return _train_loop(trainer, args, path, report, guard, metrics)
    finally:
        metrics.close()


def _threads_per_rank() -> int:
    """A new run's default --threads under MPI: this node's cores shared by the ranks the launcher put on it."""
    local = next((int(os.environ[n]) for n in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
                  if os.environ.get(n, "").isdigit()), 1)
    return max(1, (os.cpu_count() or 1) // max(local, 1))


def _follower_trainer(world):
    """``build(setup)`` for :func:`fastrnn.distributed.follow`: this rank's trainer for rank 0's setup.

    A corpus whose fingerprint (length and sha256) is not rank 0's (the same name, another text in this
    rank's folder or node) is refused: rank 0 reports it in one line and every rank exits 2."""
    def build(setup):
        config = TrainConfig(**setup["config"])
        with _opened_corpus(setup["corpus_path"], setup["bytes_mode"], setup["cache_dir"]) as corpus:
            if corpus.fingerprint != setup["fingerprint"]:
                raise UsageError(f"its corpus {corpus.name!r} ({corpus.fingerprint}) is not rank 0's "
                                 f"{setup['corpus_path']!r} ({setup['fingerprint']}); every rank must read the "
                                 f"same text")
            if setup["resume"]:
                trainer = load_checkpoint(setup["resume"]).trainer(corpus, threads=config.threads, world=world)
            else:
                trainer = Trainer(corpus, config, world=world)
        if setup["decay_steps"] is not None and trainer.config.decay_steps is None:  # as rank 0 fixed it
            trainer.fix_decay(setup["decay_steps"], tell_others=False)
        return trainer
    return build


def _next_at(s, every, offset=0):
    """The smallest step count t > s with t = offset (mod every)."""
    return s + (offset - s - 1) % every + 1


class _Abandoned(BaseException):
    """A first signal during a validation: it is dropped (it changes nothing) and the run saves at once."""


class _StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM while training, as a context manager that installs and restores handlers.

    The first signal asks the trainer to stop at the end of its block of steps;
    the loop then saves and exits 128 + that signal (130 or 143). During a
    validation (:meth:`abandonable`), which changes no state, the first signal
    instead abandons it at once (at the end of its current window of ids) and the
    loop saves. Another signal while that stop is still pending (a long block or
    sample) stops at once without saving: it raises KeyboardInterrupt (or
    :class:`Terminated`) and the checkpoint file keeps its last complete version.
    Signals while a checkpoint is being written, or after the stop was honoured
    (the final save), are ignored, so they never cut a save short. A signal the
    process was told to ignore (``SIG_IGN``, e.g. under ``nohup``-like launchers)
    stays ignored. The loop checks :attr:`signum` after its last block and after
    its final save, so a signal is never dropped wherever it lands.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.signum = None  # the first signal received
        self.saving = False
        self._abandon = False
        self._finished = False
        self._previous = {}

    def __call__(self, signum, frame):
        if self._finished:
            return
        if self.signum is None:
            self.signum = signum
            if self._abandon:
                self._abandon = False
                raise _Abandoned()
            self.trainer.request_stop(signum)
        elif self.trainer.stop_requested and not self.saving:
            raise _interruption(signum)

    @contextlib.contextmanager
    def save(self):
        self.saving = True
        try:
            yield
        finally:
            self.saving = False

    @contextlib.contextmanager
    def abandonable(self):
        """A block a first signal may cut short with :class:`_Abandoned` (one that changes no state)."""
        self._abandon = self.signum is None
        try:
            yield
        finally:
            self._abandon = False

    def finish(self):
        """The stop is honoured and saved: ignore signals from now on."""
        self._finished = True

    def __enter__(self):
        for signum in self.SIGNALS:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                self._previous[signum] = signal.signal(signum, self)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


LOSS_EXPLOSION = 100  # warn when the smoothed loss exceeds this many times a uniform guess's


class _LossWatch:
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


def _warm_up(trainer: Trainer, report) -> None:
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
    if time.perf_counter() - start >= COMPILE_NOTE_AFTER_S:
        report.line(f"kernels ready after {time.perf_counter() - start:.0f} s")


class _SpeedProbe:
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


def _validation_seconds(trainer: Trainer) -> float:
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


def _deadline(args, seconds_per_eval) -> float | None:
    """When training stops under the plan's time budget: what earlier sessions left of it, less the final
    validation's estimated cost and the final save (together at most half of what is left)."""
    left = args.plan.remaining_seconds()
    if left is None:
        return None
    reserve = min(1.25 * seconds_per_eval + FINAL_SAVE_SECONDS, left / 2)
    return args.started + left - reserve


def _plan_record(args) -> dict:
    """The plan as a checkpoint records it: with the wall time of this session so far added to ``elapsed`` (all of
    the budget once training stopped at its deadline, so that a resume does not train the reserve)."""
    plan = args.plan
    elapsed = plan.elapsed + time.perf_counter() - args.started
    if getattr(args, "budget_spent", False):
        elapsed = max(elapsed, plan.time_budget)
    return dict(plan.to_dict(), elapsed=elapsed)


def _cadence(plan: Plan, name) -> int:
    return getattr(plan, name) or 0  # None: not chosen yet (a time budget's speed is being measured)


def _train_loop(trainer: Trainer, args, path, report, guard: SaveGuard, metrics: MetricsLog) -> int:
    saved = [None]  # step of the last checkpoint this run wrote
    stop = _StopSignals(trainer)
    watch = _LossWatch(trainer)
    total = args.plan.steps
    held_out = HeldOutWatch()  # what validation can and cannot tell: warnings at the start and after validations

    def save():
        """Save as the last good checkpoint: finite outputs, and only over this run's own file."""
        if not outputs_bounded(trainer.params):
            raise OutputsOverflow(trainer.n)
        trainer.collect_state()  # with MPI ranks: every stream's state to rank 0
        trainer.plan = _plan_record(args)
        with stop.save():
            guard.check()
            save_checkpoint(path, trainer)
            guard.saved()
        saved[0] = trainer.n

    def kept():
        return (f"the last good checkpoint is {str(path)!r} (step {saved[0]:,})" if saved[0] is not None else
                "no checkpoint was saved by this run" + (f"; {str(path)!r} is unchanged" if path.exists() else ""))

    def validate():
        with stop.abandonable():
            score = trainer.validation_loss()
            report.validation(trainer, score)
            for text in held_out.after_validation(trainer, score):
                report.warn(text)
        return score

    for text in held_out.start(trainer):
        report.warn(text)
    _warm_up(trainer, report)  # so the first chars/s figure is not a compile or cache load
    seconds_per_eval = _validation_seconds(trainer) if args.plan.time_budget is not None else 0.0
    metrics.start(trainer)
    val_done_at = None
    deadline = _deadline(args, seconds_per_eval)
    probe = _SpeedProbe(trainer, deadline, total, args)
    try:
        with stop:
            try:
                while trainer.n < total and not (deadline is not None and time.perf_counter() >= deadline):
                    s, plan = trainer.n, args.plan
                    sample_every, log_every, eval_every, checkpoint_every = (
                        _cadence(plan, name) for name in ("sample_every", "log_every", "eval_every",
                                                          "checkpoint_every"))
                    if sample_every and s % sample_every == 0:
                        report.sample(trainer.sample(plan.sample_length))
                    stops = [total]
                    for every, offset in ((sample_every, 0), (log_every, 1), (eval_every, 0),
                                          (checkpoint_every, 0), (report.every, 0)):
                        if every:
                            stops.append(_next_at(s, every, offset))
                    if probe.active:
                        stops.append(probe.next_stop(s))
                    if report.output_error is not None or not trainer.train(min(stops) - s, deadline=deadline):
                        return _interrupted(trainer, path, report, save, stop)
                    probe(report, seconds_per_eval)
                    watch(trainer, report)
                    s = trainer.n
                    val = None
                    if eval_every and s % eval_every == 0:
                        val = validate()
                        val_done_at = s
                    logged = log_every and (s - 1) % log_every == 0
                    if logged:
                        report.log(trainer)
                    if logged or val is not None:
                        metrics.row(trainer, val)
                    if checkpoint_every and s % checkpoint_every == 0:
                        save()
                    report.progress(trainer)
                if trainer.n < total:
                    args.budget_spent = True  # recorded as all used, though the final validation and save remain
                    report.line(f"time budget of {args.plan.time_budget:g} s reached at step {trainer.n:,}")
                if stop.signum is None and report.output_error is None and val_done_at != trainer.n:
                    metrics.row(trainer, validate())
            except _Abandoned:
                return _interrupted(trainer, path, report, save, stop)
            if stop.signum is not None or report.output_error is not None:  # during the last block, or after it
                return _interrupted(trainer, path, report, save, stop)
            save()
            if stop.signum is not None:  # during the final save: it is complete, so the run is saved
                return _interrupted(trainer, path, report, save, stop, saved=True)
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
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        report.close()
    report.finish(trainer, path)
    if report.output_error is not None:
        print(f"fastrnn train: {report.output_problem()} after the run ended; it is complete and saved in "
              f"{path}", file=sys.stderr)
    return 0


def _interrupted(trainer, path, report, save, stop, saved=False) -> int:
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
    return report.output_status() if lost_output else _exit_status(signum)


# --- progress output -----------------------------------------------------------

def _reporter(args, total, trainer):
    if args.quiet:
        return _Quiet(args, total, trainer)
    if sys.stdout.isatty() and sys.stderr.isatty():
        return _Bar(args, total, trainer)
    return _Lines(args, total, trainer)


EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: what a shell reports for a program whose reader went away


class _Quiet:
    """No output; the base of the reporters. A write to standard output that fails (a reader that went away,
    as ``| head`` does, or a full disk) is kept in ``output_error``: the run stops at the end of its block of
    steps and saves (see :func:`_interrupted`), and standard output goes to the null device from then on."""

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
        _warn(text)

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


def _text(text):
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else text


def _final_loss(trainer, score) -> str:
    """The run's figure for its ``done:`` line: the final validation, else the smoothed training loss."""
    if score is not None:
        return (f"validation {score.bits_per_char:.4f} bits/char, {score.nats_per_char:.4f} nats/char "
                f"({score.count:,} held out)")
    return f"smoothed training loss {trainer.smooth_loss_per_char / LN2:.3f} bits/char (no held-out split)"


class _Lines(_Quiet):
    """Plain lines on stdout (output is not a terminal): the seed's log, plus per-char losses and speed."""

    def line(self, text):
        self._print(text)

    def header(self, trainer, corpus, path, ckpt):
        c, unit = trainer.config, ("bytes" if trainer.vocab.bytes_mode else "characters")
        split = (f"training on {trainer.train_ids.size:,}, validating on {trainer.val_targets.size:,} "
                 f"(val-fraction {c.val_fraction})" if trainer.val_targets.size else "training on all of it")
        self.line(f"corpus {corpus.name}: {len(corpus):,} {unit}, {len(trainer.vocab):,} distinct; {split}")
        start = f"resuming {ckpt.path} at step {trainer.n:,}" if ckpt else "new model"
        split = getattr(trainer.workspace, "split", "streams")
        batch = (f", batch-size {c.batch_size} (shards of {trainer.shard_length:,} {unit}), {c.threads} "
                 f"thread{'s' if c.threads > 1 else ''}" + (" (split by hidden units)" if split == "columns" else "")
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
        self.line(f"----\n {_text(text)} \n----")

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
        self.line(f"done: {trainer.n:,} steps; {_final_loss(trainer, self.val)}; saved checkpoint {path}")


class _Bar(_Lines):
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
            _warn(text)
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


# --- sample and eval -------------------------------------------------------------

def _utf8_stdout():
    try:
        sys.stdout.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError):
        pass


def cmd_sample(args) -> int:
    if args.length < 1:
        raise UsageError(f"--length must be a positive integer, got {args.length}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise UsageError(f"--temperature must be a positive number, got {args.temperature}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    _positive(args, "top_k", "num_samples")
    if args.top_p is not None and not (0 < args.top_p <= 1):
        raise UsageError(f"--top-p must be a number in (0, 1], got {args.top_p}")
    if args.prime is not None and args.prime_file is not None:
        raise UsageError("--prime and --prime-file exclude each other: give the text one way")
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model
    bytes_mode = ckpt.vocab.bytes_mode
    prime, flag = args.prime or "", "--prime"
    if args.prime_file is not None:
        flag = f"--prime-file {args.prime_file}"
        data = read_bytes(args.prime_file, "--prime-file")
        prime = data if bytes_mode else decode_utf8(data, f"--prime-file {args.prime_file!r}",
                                                    "this model reads UTF-8 text")
    elif bytes_mode:  # the bytes given: os.fsencode undoes the command line's decoding (surrogateescape)
        prime = os.fsencode(prime)
    if bytes_mode:
        sys.stdout.flush()
        out, newline, separator = sys.stdout.buffer, b"\n", b"----\n"
    else:
        _utf8_stdout()
        out, newline, separator = sys.stdout, "\n", "----\n"
    rng = np.random.default_rng(args.seed)  # one stream of draws for all the samples
    for i in range(args.num_samples):
        try:  # streamed: drawn and written a piece at a time, so any --length fits in memory
            pieces = model.sample_chunks(args.length, prime=prime, temperature=args.temperature, seed=rng,
                                         argmax=args.argmax, top_k=args.top_k, top_p=args.top_p)
        except UnknownSymbolsError as e:
            raise UsageError(f"{flag} has {e}") from None
        if i:
            out.write(separator)
        out.write(prime)
        for piece in pieces:
            out.write(piece)
        out.write(newline)
        out.flush()
    return 0


def _held_out(ckpt: Checkpoint, cache_dir=None):
    if ckpt.config.val_fraction == 0:
        raise UsageError(f"{ckpt.path} was trained with --val-fraction 0: there is no held-out split; pass FILE")
    path = ckpt.corpus_path
    if path is not None and not Path(path).exists():
        raise UsageError(f"the training corpus {path!r} is gone, so its held-out split cannot be rebuilt; pass FILE")
    with _opened_corpus(path, ckpt.vocab.bytes_mode, cache_dir) as corpus:
        trainer = ckpt.trainer(corpus)
    return f"held-out split of {corpus.name}", trainer


def cmd_eval(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model
    if args.file is None:
        name, trainer = _held_out(ckpt, args.cache_dir)
        score, targets = trainer.validation_loss(per_char=args.per_char), trainer.val_targets
    else:
        if args.file == "-":
            name, data = "standard input", sys.stdin.buffer.read()
            if not data:
                raise UsageError("standard input is empty: nothing to score")
        else:
            name, data = args.file, read_bytes(args.file, "file")
        text = data if ckpt.vocab.bytes_mode else decode_utf8(
            data, "standard input" if args.file == "-" else f"file {args.file!r}", "this model reads UTF-8 text")
        try:
            ids = model.encode(text)
        except UnknownSymbolsError as e:
            raise UsageError(f"{name} has {e}") from None
        if ids.size < 2:
            raise UsageError(f"{name} is too short to score: it needs at least 2 characters")
        targets = ids[1:]
        score = model.score_ids(ids[:-1], targets, per_char=args.per_char)
    if not math.isfinite(score.nats):
        print(f"fastrnn eval: error: the model's outputs are not finite on {name} (its score is "
              f"{score.nats_per_char} nats/char): {args.checkpoint} holds parameters so large that its "
              f"logits overflow, as after a diverged run", file=sys.stderr)
        return EXIT_DIVERGED
    _utf8_stdout()
    if args.per_char:
        print("position\tcharacter\tprobability\tbits")
        offset = 1 if args.file is not None else 0
        for i, (ix, lp) in enumerate(zip(targets.tolist(), score.log_probs.tolist())):
            print(f"{i + offset}\t{model.vocab.symbol(ix)}\t{math.exp(lp):.6f}\t{-lp / LN2:.3f}")
    unit = "bytes" if ckpt.vocab.bytes_mode else "characters"
    print(f"{name}: {score.count:,} {unit}, {score.nats_per_char:.4f} nats/char, "
          f"{score.bits_per_char:.4f} bits/char")
    return 0


# --- prepare ---------------------------------------------------------------------

def cmd_prepare(args) -> int:
    from .prepared import cache_folder, prepare_corpus

    size = os.path.getsize(args.corpus) if os.path.isfile(args.corpus) else 0
    bar = None
    if sys.stderr.isatty() and size:
        from tqdm import tqdm
        bar = tqdm(total=2 * size, unit="B", unit_scale=True, dynamic_ncols=True, file=sys.stderr)

    def progress(phase, done):
        bar.update((done if phase == "scan" else size + done) - bar.n)

    def waiting(pid):
        holder = f"process {pid}" if pid else "another process"
        print(f"fastrnn prepare: waiting for {holder}, which is preparing {args.corpus} too", file=sys.stderr,
              flush=True)

    folders = _CreatedFolders(cache_folder(args.corpus, args.cache_dir))
    try:
        prepared = prepare_corpus(args.corpus, bytes_mode=args.bytes, cache_dir=args.cache_dir,
                                  progress=progress if bar is not None else None, waiting=waiting)
    except BaseException:  # an error, Ctrl-C or SIGTERM: no cache folder left behind that this run made
        folders.remove()  # (its own temporary files are gone already; a folder in use by another stays)
        raise
    finally:
        if bar is not None:
            bar.close()
    unit = "bytes" if args.bytes else "characters"
    summary = (f"{len(prepared):,} {unit}, {len(prepared.vocab):,} distinct, ids {prepared.dtype} "
               f"({prepared.ids.nbytes:,} bytes)")
    if prepared.reused:
        print(f"{args.corpus}: up to date, reusing {prepared.ids_path}: {summary}")
    else:
        mb_s = prepared.fingerprint.length / 1e6 / max(prepared.seconds, 1e-9)
        print(f"{args.corpus}: wrote {prepared.ids_path} and {prepared.meta_path.name}: {summary}; "
              f"{prepared.fingerprint.length / 1e6:,.1f} MB in {prepared.seconds:.2f} s, {mb_s:,.0f} MB/s")
    return 0


# --- export ----------------------------------------------------------------------

def _output_path(flag, name, suffixes, hint):
    """``name`` as a Path in an existing, writable folder, its suffix one of ``suffixes``; else a UsageError."""
    out = Path(name)
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{flag}{name!r}: {hint}")
    if out.is_dir():
        raise UsageError(f"{name!r} is a directory")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write {name!r}: folder {str(folder)!r} "
                         f"{'is not writable' if folder.is_dir() else 'does not exist'}")
    return out


def _refuse_existing(paths, overwrite, flag="--overwrite"):
    """Refuse to replace anything at ``paths`` (a symlink counts, dangling or not) unless ``overwrite``."""
    for path in paths:
        if os.path.lexists(path) and not overwrite:
            raise UsageError(f"{str(path)!r} already exists; pass {flag} to replace it")


def _refuse_input(paths, input_path, what):
    """Refuse output paths that are the input file itself (by name or by samefile): writing would destroy it."""
    for path in paths:
        if os.path.abspath(path) == os.path.abspath(input_path) or (
                os.path.exists(path) and os.path.exists(input_path) and os.path.samefile(path, input_path)):
            raise UsageError(f"{str(path)!r} is the {what} being read; choose another output name")


def cmd_export(args) -> int:
    from .export import EXTRAS, WRITERS, onnx_files
    from .extras import MissingExtra, require

    suffix = Path(args.out).suffix.lower()
    out = _output_path("", args.out, WRITERS, f"cannot tell the format from its suffix ({suffix or 'none'}): "
                                              f"use .onnx or .safetensors")
    if args.state and suffix != ".onnx":
        raise UsageError("--state adds state inputs and outputs to an ONNX graph; a .safetensors file holds "
                         "weights only")
    _refuse_input([out], args.checkpoint, "checkpoint")
    _refuse_existing([out], args.overwrite)
    ckpt = load_checkpoint(args.checkpoint)  # the input first: a missing file is the first thing to fix
    module, extra = EXTRAS[suffix]
    try:
        require(module, extra, f"writing {suffix}")
    except MissingExtra as e:
        raise UsageError(str(e)) from None
    params = ckpt.model.params
    files = onnx_files(out, params) if suffix == ".onnx" else [out]
    _refuse_input(files, args.checkpoint, "checkpoint")
    _refuse_existing(files, args.overwrite)
    extra_args = {"state": True} if args.state else {}
    WRITERS[suffix](out, params, ckpt.vocab, **extra_args)  # an OSError: OutputWriteError, one line in _run
    spec = ckpt.config.spec(len(ckpt.vocab))
    beside = f" (weights in {files[1].name} beside it)" if len(files) > 1 else ""
    print(f"wrote {args.out}{beside}: {spec.num_layers}-layer {spec.cell}, hidden {spec.hidden_size}, vocab "
          f"{spec.vocab_size}, {ckpt.config.dtype}" + (", with state inputs and outputs" if args.state else ""))
    return 0


# --- plot ------------------------------------------------------------------------

def cmd_plot(args) -> int:
    from .extras import MissingExtra
    from .plot import plot_runs

    out = _output_path("-o ", args.output, (".png",), "fastrnn plot writes PNG files; name it NAME.png")
    for metrics in args.metrics:
        _refuse_input([out], metrics, "metrics log")
    _refuse_existing([out], args.overwrite)
    try:
        plot_runs(args.metrics, out, x=args.x, title=args.title)  # an OSError: OutputWriteError, one line in _run
    except MissingExtra as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.output}: {len(args.metrics)} run{'s' if len(args.metrics) > 1 else ''} against {args.x}")
    return 0
