"""Training text: read a file (or the embedded tiny shakespeare), fingerprint, encode and split it.

numpy only. A corpus is read as bytes and decoded as strict UTF-8 (no newline
translation: the model sees the file's exact characters), or kept as raw bytes
in bytes mode. Every problem with the file is a :class:`CorpusError` whose
message names the file and says what to do.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .vocab import Vocab, symbol_repr

EMBEDDED_NAME = "tinyshakespeare.txt"


class CorpusError(ValueError):
    """A corpus file that cannot be used (missing, empty, not UTF-8, too short...)."""


def embedded_corpus_path() -> Path:
    """Path of the tiny shakespeare text shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / EMBEDDED_NAME


@dataclass(frozen=True)
class Fingerprint:
    """Identity of a corpus: its length in bytes and the sha256 of those bytes."""

    length: int
    sha256: str

    @classmethod
    def of(cls, data: bytes) -> "Fingerprint":
        return cls(len(data), hashlib.sha256(data).hexdigest())

    def __str__(self):
        return f"{self.length:,} bytes, sha256 {self.sha256[:12]}"


def read_bytes(path, what="corpus") -> bytes:
    """The bytes of a file, or a :class:`CorpusError` naming the problem."""
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise CorpusError(f"{what} {str(path)!r} is a directory, not a file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CorpusError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    if not data:
        raise CorpusError(f"{what} {str(path)!r} is empty")
    return data


def decode_utf8(data: bytes, name="corpus", hint="use --bytes to train on raw bytes") -> str:
    """Strict UTF-8 decoding; an error says at which byte offset (and, by default, suggests ``--bytes``)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        bad = data[e.start:e.end][:4]
        raise CorpusError(
            f"{name} is not UTF-8 text: byte {bad[0]:#04x} at byte offset {e.start:,} (line {line}) "
            f"is {e.reason}; {hint}") from None


@dataclass
class Corpus:
    """An encoded text: ``ids`` (N,) int64 over ``vocab``, where it came from, and its fingerprint.

    ``path`` is None for the embedded corpus.
    """

    ids: np.ndarray
    vocab: Vocab
    fingerprint: Fingerprint
    path: str | None = None

    @property
    def name(self) -> str:
        return self.path if self.path is not None else f"embedded {EMBEDDED_NAME}"

    def __len__(self):
        return int(self.ids.size)

    @classmethod
    def from_text(cls, text, vocab=None, path=None) -> "Corpus":
        """A corpus from a str, or from bytes (bytes mode). ``vocab`` defaults to the text's own."""
        raw = text if isinstance(text, (bytes, bytearray)) else text.encode("utf-8")
        if not raw:
            raise CorpusError("the corpus is empty")
        vocab = Vocab.from_text(text) if vocab is None else vocab
        return cls(vocab.encode(text), vocab, Fingerprint.of(bytes(raw)), path)

    def in_vocab(self, vocab: Vocab) -> "Corpus":
        """This text with its ids in ``vocab`` (a superset of its own, e.g. a fine-tuned model's); itself if equal."""
        if vocab == self.vocab:
            return self
        return Corpus(recoding(self.vocab, vocab)[self.ids], vocab, self.fingerprint, self.path)

    def split(self, val_fraction: float):
        """``(train_ids, val_inputs, val_targets)``: the last ``val_fraction`` of the ids are held out.

        ``k = floor(N * val_fraction)`` held-out ids are the validation targets, each
        predicted from the id before it (so the first one's input is the last
        training id). With ``val_fraction == 0`` both validation arrays are empty.
        """
        k = held_out_count(len(self), val_fraction)
        n_train = len(self) - k
        return self.ids[:n_train], self.ids[n_train - 1:-1] if k else self.ids[:0], self.ids[n_train:]


def recoding(own: Vocab, vocab: Vocab) -> np.ndarray:
    """(len(own),) int64: the id in ``vocab`` of each id of ``own``; a :class:`CorpusError` if ``vocab`` lacks any."""
    if own.bytes_mode != vocab.bytes_mode:
        raise CorpusError("a text of characters cannot be read as bytes, nor the reverse")
    table = vocab.ids_of(own.codes)
    if (table < 0).any():
        missing = own.codes[table < 0][:20]
        raise CorpusError(f"the text has {int((table < 0).sum())} symbol(s) outside the model's vocabulary: "
                          + ", ".join(symbol_repr(int(c), own.bytes_mode) for c in missing))
    return table


def held_out_count(length: int, val_fraction: float) -> int:
    return int(length * float(val_fraction))


def load_corpus(path=None, bytes_mode=False) -> Corpus:
    """Read, decode and encode a corpus file; ``path=None``: the embedded tiny shakespeare."""
    file = embedded_corpus_path() if path is None else Path(path)
    data = read_bytes(file)
    name = str(file) if path is not None else EMBEDDED_NAME
    text = data if bytes_mode else decode_utf8(data, f"corpus {name!r}")
    vocab = Vocab.from_text(text)
    return Corpus(vocab.encode(text), vocab, Fingerprint.of(data), None if path is None else os.path.abspath(file))
