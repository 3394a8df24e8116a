"""``fastrnn visualize``: a self-contained HTML page of what a model does on a text (:mod:`fastrnn.visualize`)."""
from __future__ import annotations

import sys
from pathlib import Path

from .._files import atomic_write
from ..checkpoint import load_checkpoint
from ..visualize import page_data, page_html
from ..vocab import UnknownSymbolsError
from .evaluate import held_out, text_argument
from .exits import UsageError
from .outputs import output_path, refuse_input


def run_visualize(args) -> int:
    if args.length < 2:
        raise UsageError(f"--length must be at least 2 characters, got {args.length}")
    out = output_path("-o ", args.output, (".html", ".htm"), "the page is an .html file")
    refuse_input([out], args.checkpoint, "checkpoint")
    if args.file not in (None, "-"):
        refuse_input([out], args.file, "text")
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model
    if args.file is None:
        name, trainer = held_out(ckpt, args.cache_dir)
        ids = trainer.val_targets[:args.length]  # the held-out split's first characters
        if len(ids) < 2:
            raise UsageError(f"the {name} is too short to show: it needs at least 2 characters")
        text = model.vocab.decode(ids)
        source = f"the start of the {name}"
    else:
        name, text = text_argument(args.file, ckpt, "show")
        if len(text) < 2:
            raise UsageError(f"{name} is too short to show: it needs at least 2 characters")
        source = name if len(text) <= args.length else f"the start of {name}"
        text = text[:args.length]
    try:
        page = page_data(model, text, title=f"fastrnn: {Path(args.checkpoint).name}", source=source)
    except UnknownSymbolsError as e:
        raise UsageError(f"{name} has {e}") from None
    html = page_html(page)
    atomic_write(out, lambda tmp: Path(tmp).write_text(html, encoding="utf-8"))
    unit = "bytes" if ckpt.vocab.bytes_mode else "characters"
    print(f"wrote {out}: {source}, {len(page['text']):,} {unit}, {page['nats_per_char']:.4f} nats/char; "
          f"{len(html.encode('utf-8')) / 1e6:.1f} MB", file=sys.stderr)
    return 0
