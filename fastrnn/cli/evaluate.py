"""``fastrnn eval``: the loss of a text (or of the held-out split) under a checkpoint."""
from __future__ import annotations

import math
import sys
from pathlib import Path

from ..checkpoint import Checkpoint, load_checkpoint
from ..corpus import decode_utf8, read_bytes
from ..charmodel import LN2
from ..vocab import UnknownSymbolsError
from .corpus import opened_corpus
from .exits import EXIT_DIVERGED, UsageError
from .sample import utf8_stdout


def held_out(ckpt: Checkpoint, cache_dir=None):
    if ckpt.config.val_fraction == 0:
        raise UsageError(f"{ckpt.path} was trained with --val-fraction 0: there is no held-out split; pass FILE")
    path = ckpt.corpus_path
    if path is not None and not Path(path).exists():
        raise UsageError(f"the training corpus {path!r} is gone, so its held-out split cannot be rebuilt; pass FILE")
    with opened_corpus(path, ckpt.vocab.bytes_mode, cache_dir) as corpus:
        trainer = ckpt.trainer(corpus)
    return f"held-out split of {corpus.name}", trainer


def text_argument(file, ckpt: Checkpoint, what: str) -> tuple:
    """``(name, text)`` of a command's FILE argument (``-``: standard input) for ``ckpt``'s model: str, or
    bytes for a bytes model; an empty input or one that is not UTF-8 is a UsageError (``what``: to do)."""
    if file == "-":
        name, data = "standard input", sys.stdin.buffer.read()
        if not data:
            raise UsageError(f"standard input is empty: nothing to {what}")
    else:
        name, data = file, read_bytes(file, "file")
    text = data if ckpt.vocab.bytes_mode else decode_utf8(
        data, "standard input" if file == "-" else f"file {file!r}", "this model reads UTF-8 text")
    return name, text


def run_eval(args) -> int:
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model
    if args.file is None:
        name, trainer = held_out(ckpt, args.cache_dir)
        score, targets = trainer.validation_loss(per_char=args.per_char), trainer.val_targets
    else:
        name, text = text_argument(args.file, ckpt, "score")
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
    utf8_stdout()
    if args.per_char:
        print("position\tcharacter\tprobability\tbits")
        offset = 1 if args.file is not None else 0
        for i, (ix, lp) in enumerate(zip(targets.tolist(), score.log_probs.tolist())):
            print(f"{i + offset}\t{model.vocab.symbol(ix)}\t{math.exp(lp):.6f}\t{-lp / LN2:.3f}")
    unit = "bytes" if ckpt.vocab.bytes_mode else "characters"
    print(f"{name}: {score.count:,} {unit}, {score.nats_per_char:.4f} nats/char, "
          f"{score.bits_per_char:.4f} bits/char")
    return 0
