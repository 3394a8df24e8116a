"""The command line's grammar: argparse with one-line errors and "did you mean" hints for other trainers'
flags, and the flag of each training hyperparameter."""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from .._entry import silence_stdout
from ..corpus import EMBEDDED_NAME
from ..items import DRAWS_PER_ITEM
from ..limits import INT64_MAX
from ..model import CELLS
from ..optim import OPTIMIZERS, SCHEDULES
from ..plan import DEFAULT_STEPS
from ..config import TrainConfig
from .exits import EXIT_USAGE, following_rank


HYPERPARAMETERS = ("hidden_size", "seq_length", "learning_rate", "seed", "dtype", "val_fraction", "batch_size",
                   "cell", "num_layers", "optimizer", "alpha", "beta1", "beta2", "eps", "clip", "clip_norm",
                   "lr_schedule", "warmup_steps", "decay_steps", "min_lr_fraction", "dropout")


DEFAULTS = {f.name: f.default for f in fields(TrainConfig)}


FLAGS = {"cell": "--model"}  # config fields whose flag is not --field-name


def flag(name):
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def int_flag(text):
    """An int flag: a 64-bit integer (a larger one is refused here, not by a traceback later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text} is out of range (at most {INT64_MAX:,})")
    return value


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
    "--checkpoint_every": "--checkpoint-every", "--data_dir": "CORPUS",
    "--input": "CORPUS", "--input_h5": "CORPUS", "--seed_text": "--prime", "--start": "--prime",
    "--primetext": "--prime", "--sample_length": "--sample-length", "--num_samples": "--num-samples",
    "--max_new_tokens": "--length",
}


def suggestion(parser: argparse.ArgumentParser, option: str) -> str | None:
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


class Parser(argparse.ArgumentParser):
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
                meant = suggestion(parser, option)
                hints.append(f"{option.split('=', 1)[0]}: did you mean {meant}?" if meant else None)
            hint = "; ".join(h for h in hints if h)
            prog = parser.prog
            message = f"unrecognized arguments: {' '.join(unknown)}" + (f" ({hint})" if hint else "")
            parser.exit(EXIT_USAGE, None if following_rank() else
                        f"{prog}: error: {message} (see {prog} --help)\n")
        return args

    def _subparsers_actions_choice(self, command):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(command, self)
        return self

    def error(self, message):  # one line instead of usage + error
        self.exit(EXIT_USAGE, None if following_rank() else f"{self.prog}: error: {message} (see {self.prog} --help)\n")

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
  fastrnn train new.txt --init-from input.ckpt.npz --time-budget 60   fine-tune on another text

A flag not given takes the recipe's value with --model lstm|gru (2 layers of 128, batch 32,
seq-length 64, float32, adam 3e-2, clip-norm 5, warmup 20, cosine decay; with --time-budget 90 or
more: 2 layers of 192, warmup 100; with --time-budget 600 or more: 2 layers of 384, adam 2e-2,
warmup 100, dropout 0.4), else min-char-rnn's. When resuming, the checkpoint's hyperparameters and plan (steps, time budget,
cadences) apply; a flag given replaces that part of the plan, and a hyperparameter flag that
contradicts the checkpoint is an error."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fastrnn", description="Train character-level RNN, LSTM and GRU language models fast "
                                                "on a CPU; sample, score and export them.",
                    epilog="Run fastrnn COMMAND --help for a command's options. Start with: "
                           "fastrnn train input.txt --model lstm --time-budget 600")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,eval,info,visualize,serve,prepare,export,plot}",
                                parser_class=Parser)

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
    g.add_argument("--num-layers", type=int_flag, metavar="N", help="stacked recurrent layers (default 1)")
    g.add_argument("--hidden-size", type=int_flag, metavar="N", help=f"hidden units (default {DEFAULTS['hidden_size']})")
    g.add_argument("--dropout", type=float, metavar="P",
                   help="zero each output of each layer with probability P while training (the rest scaled by "
                        "1/(1-P); seeded masks, so a resume is exact), in [0, 1) (default 0)")
    g.add_argument("--dtype", choices=("float64", "float32"), help="float type (default float64)")
    g.add_argument("--seed", type=int_flag, metavar="N", help="seed of the initial weights and of samples (default: drawn, then recorded)")
    g = t.add_argument_group("optimization")
    g.add_argument("--seq-length", type=int_flag, metavar="N", help=f"BPTT steps per update (default {DEFAULTS['seq_length']})")
    g.add_argument("--batch-size", type=int_flag, metavar="B",
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
    g.add_argument("--warmup-steps", type=int_flag, metavar="N",
                   help="raise the learning rate linearly over the first N steps (default 0)")
    g.add_argument("--decay-steps", type=int_flag, metavar="N",
                   help="cosine: the step where the rate reaches its floor (default: --steps; with --time-budget, "
                        "the steps the budget is measured to hold)")
    g.add_argument("--min-lr-fraction", type=float, metavar="F",
                   help="cosine: the floor, a fraction of the learning rate, in [0, 1] (default 0.1)")
    g.add_argument("--threads", type=int_flag, metavar="N",
                   help="threads of a batched step, and of the matrix products of lstm, gru and stacked "
                        "models (default: all cores for a new run, the recorded count when resuming; another "
                        "count changes results by rounding only)")
    g = t.add_argument_group("how long, and what it reports (kept by --resume)")
    g.add_argument("--steps", type=int_flag, metavar="N",
                   help=f"total steps, counting those before a resume (default {DEFAULT_STEPS:,})")
    g.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="wall time of the whole run, every resumed session counted: training stops in time "
                        "for the final validation and save to end within it (or at --steps)")
    g.add_argument("--eval-every", type=int_flag, metavar="N",
                   help="validation every N steps, 0: only at the end (default: about 10 over the run, "
                        "at most every 10,000 steps, at most a tenth of a time budget)")
    g.add_argument("--sample-every", type=int_flag, metavar="N",
                   help="print a sample every N steps, 0: never (default: about 10 over the run, at most 10,000)")
    g.add_argument("--sample-length", type=int_flag, metavar="N", help="characters per sample (200)")
    g.add_argument("--log-every", type=int_flag, metavar="N",
                   help="log line and metrics row every N steps (default: about 100 over the run, at most 1,000)")
    g.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=None,
                   help="at every validation that improves on the best so far, also save the model to "
                        "NAME.best.npz beside the checkpoint (for sample, eval, export, info; not resumable); "
                        "kept by --resume, which --no-keep-best turns off")
    g.add_argument("--patience", type=int_flag, metavar="N",
                   help="stop (saving, exit 0) after N validations in a row without a new best; "
                        "0: never (turns off a resumed run's patience)")
    g = t.add_argument_group("checkpoints and output")
    g.add_argument("--checkpoint", metavar="PATH",
                   help="where to save (default: CORPUS-NAME.ckpt.npz in the current folder, or the --resume file)")
    g.add_argument("--checkpoint-every", type=int_flag, metavar="N",
                   help="save every N steps, 0: only at the end (default: about 10 over the run, at most 10,000)")
    g.add_argument("--resume", metavar="PATH", help="continue the run saved in this checkpoint, as it was planned")
    g.add_argument("--init-from", metavar="CKPT",
                   help="a new run on CORPUS whose weights start from this checkpoint's (fine-tuning): its cell, "
                        "layers, hidden size and vocabulary, the corpus's new symbols appended; a fresh optimizer "
                        "and schedule")
    g.add_argument("--overwrite", action="store_true", help="let a new run replace an existing checkpoint file")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress output")

    s = sub.add_parser("sample", help="sample text from a checkpoint", description="Sample text from a checkpoint.")
    s.add_argument("checkpoint", metavar="CHECKPOINT")
    s.add_argument("--length", type=int_flag, metavar="N", default=200, help="characters to sample (200)")
    s.add_argument("--temperature", type=float, metavar="T", default=1.0, help="softmax temperature, > 0 (1.0)")
    s.add_argument("--prime", metavar="TEXT", help="text to continue (warms the hidden state)")
    s.add_argument("--seed", type=int_flag, metavar="N", help="seed of the draws (default: random)")
    s.add_argument("--argmax", action="store_true", help="always take the most likely character")
    s.add_argument("--top-k", type=int_flag, metavar="K", help="draw only among the K most likely characters")
    s.add_argument("--top-p", type=float, metavar="P",
                   help="nucleus sampling: draw only among the most likely characters that together hold "
                        "P of the probability, 0 < P <= 1 (after --top-k)")
    s.add_argument("--prime-file", metavar="FILE", help="continue the text of FILE (instead of --prime)")
    s.add_argument("--num-samples", type=int_flag, metavar="N", default=1,
                   help="draw N samples, each from the primed state, separated by a line '----' (1)")
    s.add_argument("--lines", type=int_flag, metavar="N",
                   help="N items, one per line (names, titles, words): each drawn after a newline (or --prime) "
                        "up to the next newline, at most --length characters")
    s.add_argument("--novel", action="store_true",
                   help="with --lines: only items that are not a whole line of the training corpus; a summary "
                        "line on stderr says how many draws were")
    s.add_argument("--max-draws", type=int_flag, metavar="N",
                   help=f"with --lines: give up after N draws (default {DRAWS_PER_ITEM} x --lines); fewer items "
                        f"than asked: those found, one line on stderr, exit 1")
    s.add_argument("--cache-dir", metavar="DIR",
                   help="with --novel: folder for the training corpus's prepared ids, as in fastrnn prepare "
                        "(default: beside the corpus)")

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

    pr = sub.add_parser("prepare", help="encode a large text once to a memory-mapped id file (cached beside it)",
                        description="Encode CORPUS once, streaming in chunks, to a compact id file (uint8, "
                                    "uint16 or uint32) plus its vocabulary, in CORPUS.fastrnn-ids/ or --cache-dir. "
                                    "The ids are reused while the corpus is unchanged.")
    pr.add_argument("corpus", metavar="CORPUS", help="UTF-8 text file (or any file with --bytes)")
    pr.add_argument("--bytes", action="store_true", help="treat the file as raw bytes (vocabulary <= 256)")
    pr.add_argument("--cache-dir", metavar="DIR", help="folder for the ids (default: beside the corpus)")

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

    i = sub.add_parser("info", help="what a checkpoint (or a .safetensors export) holds",
                       description="Print what FILE holds: the model, its vocabulary, how far and how it was "
                                   "trained, its last and best validation loss (from the metrics log beside "
                                   "it), the corpus and the fastrnn that wrote it. FILE: a checkpoint, a best "
                                   "file, or a .safetensors file written by fastrnn export (model and "
                                   "vocabulary only).")
    i.add_argument("file", metavar="FILE")
    i.add_argument("--json", action="store_true", help="print the facts as one JSON object, for scripts")

    v = sub.add_parser("visualize", help="a self-contained HTML page of the model's probabilities and neurons on "
                                          "a text",
                       description="Write one HTML file (no network access needed) that shows a text coloured by "
                                   "the probability the model gave each character, the top 5 predictions at each "
                                   "point, any unit's activations, and the units that best track simple features "
                                   "of the text (quotes, brackets, position in the line...).")
    v.add_argument("checkpoint", metavar="CHECKPOINT")
    v.add_argument("file", nargs="?", metavar="FILE",
                   help="text to show, - for standard input (default: the held-out split of the training corpus)")
    v.add_argument("-o", "--output", metavar="OUT.html", required=True,
                   help="the page to write (replaced if it exists)")
    v.add_argument("--length", type=int_flag, default=2_000, metavar="N",
                   help="show the first N characters of the text (default 2,000)")
    v.add_argument("--cache-dir", metavar="DIR",
                   help="folder for the training corpus's prepared ids, for its held-out split (default: beside it)")

    sv = sub.add_parser("serve", help="serve a checkpoint's model over HTTP: sampling (streamed, batched), "
                                      "scoring, a page (needs fastrnn[serve])",
                        description="Keep the model of CHECKPOINT loaded behind an HTTP server: POST /v1/sample, "
                                    "/v1/score, /v1/visualize; GET /v1/model, /healthz, and an interactive page at "
                                    "/. Requests in flight are sampled together, one batched step per character. "
                                    "Ctrl-C or SIGTERM stops it (exit 130 or 143).")
    sv.add_argument("checkpoint", metavar="CHECKPOINT")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    sv.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: one the system picks)")
    sv.add_argument("--max-length", type=int, default=10_000, metavar="N",
                    help="the most characters a request may sample, and the longest prime (default 10,000)")
    sv.add_argument("--max-batch", type=int, default=64, metavar="N",
                    help="requests sampled together at most; more wait their turn (default 64)")

    pl = sub.add_parser("plot", help="plot the training and validation loss of metrics logs (needs fastrnn[plot])",
                        description="Draw train and validation bits/char of one or more NAME.metrics.csv files "
                                    "(written by fastrnn train beside its checkpoint), overlaid, into a PNG.")
    pl.add_argument("metrics", nargs="+", metavar="METRICS.csv")
    pl.add_argument("-o", "--output", required=True, metavar="OUT.png", help="the PNG file to write")
    pl.add_argument("--x", choices=("step", "chars", "seconds"), default="step",
                    help="horizontal axis: steps, training characters seen, or wall seconds (step)")
    pl.add_argument("--title", metavar="TEXT", help="the plot's title (drawn as written: no mathtext)")
    pl.add_argument("--overwrite", action="store_true", help="replace OUT.png if it exists")
    return parser
