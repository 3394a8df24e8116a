"""``fastrnn sample``: text drawn from a checkpoint, streamed to standard output."""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from ..checkpoint import load_checkpoint
from ..corpus import decode_utf8, read_bytes
from ..vocab import UnknownSymbolsError
from .exits import UsageError
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
