"""Character vocabulary: the sorted set of a text's characters (or bytes), and vectorised encoding.

numpy only. The seed builds ``char_to_ix`` from ``list(set(data))``, whose order
changes from run to run; fastrnn sorts the symbols (by code point, or by byte
value in bytes mode) so that a vocabulary is reproducible and can be stored as
one integer array. A fine-tuned model's vocabulary (:meth:`Vocab.extended`) is
its parent's, ids unchanged, followed by the new text's other symbols: sorted
within each part, not overall. Encoding never loops over characters in Python:
the text becomes an array of code points (``utf-32-le``, or the bytes
themselves) and a lookup table maps each code point to its id.
"""
from __future__ import annotations

import numpy as np

ID_DTYPE = np.int64
MAX_CODE_POINT = 0x10FFFF
_CHUNK = 1 << 24  # characters per encoding chunk: bounds the temporary utf-32 copy to 64 MB


class UnknownSymbolsError(ValueError):
    """Text holds symbols that are not in the vocabulary; ``symbols`` lists them (sorted)."""

    def __init__(self, symbols, message):
        super().__init__(message)
        self.symbols = symbols


def _code_points(text):
    """Code points of a str (uint32 array, or uint8 for pure ASCII) or of bytes (uint8), chunk by chunk."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        yield np.frombuffer(text, np.uint8)
        return
    if text.isascii():
        yield np.frombuffer(text.encode("ascii"), np.uint8)
        return
    for start in range(0, len(text), _CHUNK):
        yield np.frombuffer(text[start:start + _CHUNK].encode("utf-32-le", "surrogatepass"), np.uint32)


def symbol_repr(code, bytes_mode):
    """How error messages and ``--per-char`` show one symbol: ``'a'``, ``'\\n'``, ``b'\\xff'``."""
    return repr(bytes([code])) if bytes_mode else repr(chr(code))


class Vocab:
    """The symbols of a corpus in id order: unicode code points, or byte values in bytes mode.

    ``codes`` (V,) int64, distinct: id i stands for ``chr(codes[i])`` (or the
    byte ``codes[i]``). Build one with :meth:`from_text` (sorted codes) or
    :meth:`extended`.
    """

    def __init__(self, codes, bytes_mode=False):
        codes = np.asarray(codes)
        bytes_mode = bool(bytes_mode)
        limit = 255 if bytes_mode else MAX_CODE_POINT
        if codes.ndim != 1 or codes.size == 0 or codes.dtype.kind not in "iu":
            raise ValueError("a vocabulary is a non-empty 1-D array of integer code points")
        codes = codes.astype(ID_DTYPE)
        if codes.min() < 0 or codes.max() > limit:
            raise ValueError(f"vocabulary code points must be in [0, {limit}]")
        if np.unique(codes).size != codes.size:
            raise ValueError("vocabulary code points must be distinct")
        self.codes = codes
        self.bytes_mode = bytes_mode
        self._table = np.full(int(codes.max()) + 1, -1, ID_DTYPE)  # code point -> id, -1: unknown
        self._table[codes] = np.arange(codes.size, dtype=ID_DTYPE)

    @classmethod
    def from_text(cls, text):
        """The vocabulary of ``text``: a str (characters) or bytes (bytes mode, V <= 256)."""
        bytes_mode = not isinstance(text, str)
        counts = np.zeros(256 if bytes_mode else MAX_CODE_POINT + 1, np.int64)
        for cps in _code_points(text):
            counts[: 256 if cps.dtype == np.uint8 else None] += np.bincount(
                cps, minlength=256 if cps.dtype == np.uint8 else counts.size)
        codes = np.flatnonzero(counts)
        if codes.size == 0:
            raise ValueError("cannot build a vocabulary from empty text")
        return cls(codes, bytes_mode)

    def extended(self, other: "Vocab") -> "Vocab":
        """This vocabulary, every id unchanged, followed by ``other``'s symbols that it lacks (in ``other``'s
        order): the vocabulary of a model fine-tuned from this one on ``other``'s text. Same mode only."""
        if other.bytes_mode != self.bytes_mode:
            raise ValueError("a characters vocabulary cannot be extended by a bytes one, nor the reverse")
        new = other.codes[self.ids_of(other.codes) < 0]
        return Vocab(np.concatenate([self.codes, new]), self.bytes_mode)

    def ids_of(self, codes) -> np.ndarray:
        """(n,) int64: the id of each code point of ``codes`` (any integer array-like), -1 where it has none."""
        codes = np.asarray(codes, dtype=ID_DTYPE)
        inside = (codes >= 0) & (codes < self._table.size)
        return np.where(inside, self._table[np.where(inside, codes, 0)], -1)

    def id_of(self, code: int) -> int | None:
        """The id of one code point (10 for a newline...), or None if it is not in the vocabulary."""
        ix = int(self.ids_of([code])[0])
        return ix if ix >= 0 else None

    def __len__(self):
        return int(self.codes.size)

    @property
    def size(self) -> int:
        return len(self)

    def __eq__(self, other):
        return (isinstance(other, Vocab) and self.bytes_mode == other.bytes_mode
                and np.array_equal(self.codes, other.codes))

    def __repr__(self):
        kind = "bytes" if self.bytes_mode else "characters"
        return f"Vocab({len(self)} {kind}: {self.preview()})"

    def preview(self, limit=80):
        """The symbols as one printable string (for logs), shortened to ``limit`` characters."""
        if self.bytes_mode:
            shown = repr(bytes(self.codes.astype(np.uint8)))
        else:
            shown = repr("".join(map(chr, self.codes)))
        return shown if len(shown) <= limit else shown[: limit - 3] + "..."

    def encode(self, text) -> np.ndarray:
        """Ids (int64, C-contiguous) of a str, or of bytes in bytes mode.

        Raises :class:`UnknownSymbolsError` listing every symbol not in the vocabulary.
        """
        if self.bytes_mode and isinstance(text, str):
            text = text.encode("utf-8")
        if not self.bytes_mode and not isinstance(text, str):
            raise TypeError("a character vocabulary encodes str; decode bytes first")
        parts = []
        for cps in _code_points(text):
            limit = self._table.size - 1
            over = cps > limit if limit < np.iinfo(cps.dtype).max else None
            if over is not None and over.any():
                ids = self._table[np.where(over, 0, cps)]
                ids[over] = -1
            else:
                ids = self._table[cps]
            bad = ids < 0
            if bad.any():
                unknown = np.unique(cps[bad]).tolist()
                shown = ", ".join(symbol_repr(c, self.bytes_mode) for c in unknown[:20])
                more = f" and {len(unknown) - 20} more" if len(unknown) > 20 else ""
                kind = "byte" if self.bytes_mode else "character"
                raise UnknownSymbolsError(
                    unknown, f"{len(unknown)} {kind}{'s' if len(unknown) > 1 else ''} not in the model's "
                             f"vocabulary: {shown}{more}")
            parts.append(ids)
        if not parts:
            return np.zeros(0, ID_DTYPE)
        return np.ascontiguousarray(parts[0] if len(parts) == 1 else np.concatenate(parts))

    def decode(self, ids):
        """The text of ``ids``: a str, or bytes in bytes mode."""
        codes = self.codes[np.asarray(ids, dtype=ID_DTYPE)]
        if self.bytes_mode:
            return codes.astype(np.uint8).tobytes()
        return codes.astype(np.uint32).tobytes().decode("utf-32-le", "surrogatepass")

    def symbol(self, ix) -> str:
        """A printable representation of the symbol with id ``ix``."""
        return symbol_repr(int(self.codes[ix]), self.bytes_mode)
