"""Items, one per line: :func:`draw_items` samples whole lines (names, titles, words) from a model, and
:func:`lines_found` says which of them a corpus already holds as a whole line, reading its ids a chunk at
a time (a memory-mapped corpus of any size).

An item starts after a newline (or after a prime) from the model's start state and ends at the next
newline; one that draws no newline within ``max_length`` symbols is not an item (it counts as a draw).
Lines are compared by a 64-bit polynomial hash of their ids (:func:`line_hash`): a collision, about one in
2^64 per pair, would take a novel item for a copy.
"""
from __future__ import annotations

import numpy as np

SCAN_CHUNK = 1 << 22  # ids per piece of the corpus scan
_BASE = np.uint64(0x100000001B3)  # odd: the hash's powers never vanish modulo 2^64
PIECE = 16  # symbols drawn per call while an item grows
DRAWS_PER_ITEM = 20  # the default bound on draws, per item asked for


def line_hash(ids: np.ndarray) -> np.uint64:
    """sum_j (ids[j] + 1) * BASE^(n-1-j) modulo 2^64, of one line's n ids."""
    out = np.uint64(0)
    with np.errstate(over="ignore"):
        for x in np.asarray(ids, np.uint64):
            out = out * _BASE + x + np.uint64(1)
    return out


def _hashes_of_length(ids, starts, n) -> np.ndarray:
    """:func:`line_hash` of the lines ids[s : s + n] for each s in ``starts``, vectorised over them."""
    h = np.zeros(starts.size, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _BASE + ids[starts + j].astype(np.uint64) + np.uint64(1)
    return h


def lines_found(ids, newline_id: int, items) -> np.ndarray:
    """(len(items),) bool: whether each item (an id array without newlines) is a whole line of ``ids``.

    ``ids``: a corpus's ids, any integer array (a memmap is read ``SCAN_CHUNK`` ids at a time); its lines
    are what lies between newlines, the first starting at 0 and the last ending at its end.
    """
    items = [np.asarray(x) for x in items]
    if not items:
        return np.zeros(0, bool)
    wanted = np.array([line_hash(x) for x in items], np.uint64)
    lengths = sorted({x.size for x in items})
    seen = set()
    span = max(SCAN_CHUNK, lengths[-1] + 1)  # a piece holds any line as long as an item, and its newline
    total, start, inside = len(ids), 0, False  # ``start``: where the next piece begins; ``inside``: mid-line
    while start < total:
        stop = min(total, start + span)
        piece = np.asarray(ids[start:stop])
        ends = np.flatnonzero(piece == newline_id)
        if stop == total:
            ends = np.append(ends, piece.size)  # the last line, with or without its newline
        if ends.size == 0:  # inside a line longer than a piece, so longer than every item
            start, inside = stop, True
            continue
        begins = np.concatenate(([0], ends[:-1] + 1))
        sizes = ends - begins
        if inside:  # the end of that long line
            sizes[0], inside = -1, False
        for n in lengths:
            at = begins[sizes == n]
            if at.size:
                seen.update(np.intersect1d(_hashes_of_length(piece, at, n), wanted).tolist())
        start += int(ends[-1]) + 1
    return np.array([int(h) in seen for h in wanted.tolist()], bool)


def draw_item(model, rng, prime, max_length, **options):
    """One item (str, or bytes in bytes mode) drawn by ``model`` (a :class:`~fastrnn.CharModel`) after
    ``prime`` (None: a newline), or None when no newline came within ``max_length`` symbols or the
    newline came first (an empty line)."""
    newline = b"\n" if model.vocab.bytes_mode else "\n"
    got = []
    for text in model.sample_chunks(max_length + 1, prime=prime, seed=rng, chunk=PIECE, **options):
        cut = text.find(newline)
        if cut >= 0:
            got.append(text[:cut])
            item = got[0][:0].join(got)
            return item if item else None
        got.append(text)
    return None


def draw_items(model, count, max_draws, rng, tally, prime=None, max_length=200, novel_in=None, newline_id=None,
               **options):
    """Yields up to ``count`` items of ``model`` in the order drawn, as they are found; ``tally`` (a dict)
    receives ``draws``, the draws it took to find them (at most ``max_draws``), and ``copies``, how many of
    those draws were lines of ``novel_in`` (a corpus's ids; None: every item is kept), which are left out.
    ``options``: temperature, argmax, top_k, top_p as :meth:`~fastrnn.CharModel.sample_chunks` takes them.
    With ``novel_in`` the draws go in batches, each checked in one pass over the corpus; draws past the
    ``count``-th item are not counted."""
    kept = 0
    tally.update(draws=0, copies=0)
    while kept < count and tally["draws"] < max_draws:
        want = count - kept
        first = tally["draws"]
        batch = min(max_draws - first, want if novel_in is None else max(2 * want, 16))
        drawn = [(first + i + 1, draw_item(model, rng, prime, max_length, **options)) for i in range(batch)]
        items = [(k, item) for k, item in drawn if item is not None]
        found = [False] * len(items)
        if novel_in is not None and items:
            text = [(prime or item[:0]) + item for _, item in items]
            found = lines_found(novel_in, newline_id, [model.encode(t) for t in text]).tolist()
        tally["draws"] = first + batch
        for (k, item), copy in zip(items, found):
            if copy:
                tally["copies"] += 1
                continue
            kept += 1
            if kept == count:
                tally["draws"] = k
            yield item
            if kept == count:
                break
