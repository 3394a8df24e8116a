"""``fastrnn sample``: text drawn from a checkpoint, streamed to standard output; or items, one per line."""
from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import load_checkpoint
from ..corpus import decode_utf8, read_bytes
from ..items import DRAWS_PER_ITEM, draw_items
from ..vocab import UnknownSymbolsError
from .exits import EXIT_SHORT, UsageError
from .train_checks import positive


def utf8_stdout():
    try:
        sys.stdout.reconfigure(errors="backslashreplace")
    except (AttributeError, ValueError):
        pass


def run_sample(args) -> int:
    if args.length < 1:
        raise UsageError(f"--length must be a positive integer, got {args.length}")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise UsageError(f"--temperature must be a positive number, got {args.temperature}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")
    positive(args, "top_k", "num_samples")
    if args.top_p is not None and not (0 < args.top_p <= 1):
        raise UsageError(f"--top-p must be a number in (0, 1], got {args.top_p}")
    if args.prime is not None and args.prime_file is not None:
        raise UsageError("--prime and --prime-file exclude each other: give the text one way")
    positive(args, "lines", "max_draws")
    if args.lines is None:
        for name, given in (("--novel", args.novel), ("--max-draws", args.max_draws is not None),
                            ("--cache-dir", args.cache_dir is not None)):
            if given:
                raise UsageError(f"{name} goes with --lines N (items, one per line)")
    elif args.num_samples != 1:
        raise UsageError("--lines and --num-samples exclude each other: --lines N draws N items")
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
        utf8_stdout()
        out, newline, separator = sys.stdout, "\n", "----\n"
    if args.lines is not None:
        try:
            return run_lines(args, ckpt, model, prime, out, newline)
        except UnknownSymbolsError as e:
            raise UsageError(f"{flag} has {e}") from None
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


def run_lines(args, ckpt, model, prime, out, newline) -> int:
    """``--lines N``: N items, one per line; with ``--novel`` only lines the training corpus lacks."""
    from .corpus import opened_corpus

    vocab = ckpt.vocab
    newline_id = vocab.id_of(10)
    if newline_id is None:
        raise UsageError(f"{args.checkpoint}'s vocabulary has no newline, so it cannot end an item: --lines "
                         f"needs a model trained on text with line breaks")
    max_draws = args.max_draws if args.max_draws is not None else DRAWS_PER_ITEM * args.lines
    rng = np.random.default_rng(args.seed)
    options = dict(temperature=args.temperature, argmax=args.argmax, top_k=args.top_k, top_p=args.top_p)
    tally, found = {}, 0
    if not args.novel:
        found = _write_items(draw_items(model, args.lines, max_draws, rng, tally, prime or None, args.length,
                                        **options), prime, out, newline)
    else:
        path = ckpt.corpus_path
        if path is not None and not Path(path).exists():
            raise UsageError(f"--novel reads the training corpus, and {path!r} is gone")
        with opened_corpus(path, vocab.bytes_mode, args.cache_dir) as corpus:
            ckpt.check_corpus(corpus)
            found = _write_items(draw_items(model, args.lines, max_draws, rng, tally, prime or None, args.length,
                                            novel_in=corpus.in_vocab(vocab).ids, newline_id=newline_id,
                                            **options),
                                 prime, out, newline)
    draws, copies = tally["draws"], tally["copies"]
    what = f"{found:,} item{'s' if found != 1 else ''} in {draws:,} draws"
    if args.novel:
        print(f"fastrnn sample: {what}; {copies:,} draw{'s were lines' if copies != 1 else ' was a line'} of the "
              f"training corpus, left out", file=sys.stderr)
    if found < args.lines:
        print(f"fastrnn sample: error: only {found:,} of the {args.lines:,} items asked for within "
              f"--max-draws {max_draws:,} (an item ends at a newline within --length {args.length:,} symbols"
              f"{'; --novel leaves out lines of the corpus' if args.novel else ''})", file=sys.stderr)
        return EXIT_SHORT
    return 0


def _write_items(items, prime, out, newline) -> int:
    """Write each item (after the prime) on a line of its own as it comes; how many were written."""
    count = 0
    for item in items:
        out.write(prime + item)
        out.write(newline)
        out.flush()
        count += 1
    return count
