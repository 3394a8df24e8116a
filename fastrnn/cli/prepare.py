"""``fastrnn prepare``: encode a large corpus once to a memory-mapped id file."""
from __future__ import annotations

import os
import sys

from .corpus import CreatedFolders


def run_prepare(args) -> int:
    from ..prepared import cache_folder, prepare_corpus

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

    folders = CreatedFolders(cache_folder(args.corpus, args.cache_dir))
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
