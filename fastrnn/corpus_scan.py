"""Reading a corpus file for :func:`fastrnn.prepared.prepare_corpus`, in chunks and never whole: pass 1
(:func:`scan_corpus`) checks the UTF-8 and finds the vocabulary while a second thread hashes the file;
pass 2 (:func:`encode_corpus`) encodes chunk by chunk while the second thread writes the ids."""
from __future__ import annotations

import codecs
import hashlib
import os
import threading
from pathlib import Path

import numpy as np

from .corpus import CorpusError, Fingerprint
from .vocab import MAX_CODE_POINT, Vocab

PIECE_CHARS = 1 << 22  # characters per utf-32 conversion: bounds that copy to 16 MB
HASH_BLOCK = 4 << 20  # blocks that stay in cache hash faster than large ones


def check_file(path: Path, what="corpus") -> os.stat_result:
    if not path.exists():
        raise CorpusError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise CorpusError(f"{what} {str(path)!r} is a directory, not a file")
    st = path.stat()
    if st.st_size == 0:
        raise CorpusError(f"{what} {str(path)!r} is empty")
    return st


def read_chunks(path: Path, chunk_bytes: int):
    """``(offset, bytes)`` of the file, chunk by chunk."""
    try:
        with open(path, "rb") as f:
            offset = 0
            while chunk := f.read(chunk_bytes):
                yield offset, chunk
                offset += len(chunk)
    except OSError as e:
        raise CorpusError(f"cannot read corpus {str(path)!r}: {e.strerror or e}") from None


def _line_of(path: Path, offset: int) -> int:
    lines = 1
    with open(path, "rb") as f:
        while offset > 0 and (block := f.read(min(offset, HASH_BLOCK))):
            lines += block.count(b"\n")
            offset -= len(block)
    return lines


def _utf8_error(path: Path, name: str, e: UnicodeDecodeError, base: int) -> CorpusError:
    offset = base + e.start
    bad = e.object[e.start]
    return CorpusError(f"{name} is not UTF-8 text: byte {bad:#04x} at byte offset {offset:,} "
                       f"(line {_line_of(path, offset)}) is {e.reason}; use --bytes to train on raw bytes")


class _Utf8Piece:
    """A decoded stretch of a UTF-8 corpus: ``text`` and its complete, valid UTF-8 ``data`` (for pass 1)."""

    __slots__ = ("data", "text")

    def __init__(self, data, text):
        self.data, self.text = data, text

    def __len__(self):
        return len(self.text)


def _pieces(chunks, path: Path, bytes_mode: bool, name: str, with_data=False):
    """The chunks as ``(offset, piece)``: bytes whose values are the code points (raw bytes, or ASCII
    text), else a str of decoded text (a :class:`_Utf8Piece` with ``with_data``); strict UTF-8 decoding
    across chunk boundaries (a character split between chunks comes out whole, in the later piece)."""
    decoder = None if bytes_mode else codecs.getincrementaldecoder("utf-8")("strict")
    for offset, chunk in chunks:
        if decoder is None:
            yield offset, chunk
            continue
        pending = decoder.getstate()[0]
        if not pending and chunk.isascii():
            yield offset, chunk
            continue
        try:
            text = decoder.decode(chunk)
        except UnicodeDecodeError as e:
            raise _utf8_error(path, name, e, offset - len(pending)) from None
        if with_data:
            tail = len(decoder.getstate()[0])
            yield offset, _Utf8Piece(pending + chunk[:len(chunk) - tail] if pending or tail else chunk, text)
            continue
        del chunk
        for start in range(0, len(text), PIECE_CHARS):
            yield offset, text[start:start + PIECE_CHARS]
    if decoder is not None:
        pending = decoder.getstate()[0]
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as e:
            raise _utf8_error(path, name, e, path.stat().st_size - len(pending)) from None


def _code_points(piece) -> np.ndarray:
    """Code points of a bytes piece or an ASCII str (uint8), else of a str: uint16 when it has no
    character beyond U+FFFF (utf-16 is several times faster to produce than utf-32), else uint32."""
    if isinstance(piece, bytes):
        return np.frombuffer(piece, np.uint8)
    if piece.isascii():
        return np.frombuffer(piece.encode("ascii"), np.uint8)
    utf16 = piece.encode("utf-16-le")
    if len(utf16) == 2 * len(piece):  # no surrogate pairs
        return np.frombuffer(utf16, np.uint16)
    return np.frombuffer(piece.encode("utf-32-le"), np.uint32)


_ASCII = bytes(range(128))
_NON_ASCII = bytes(range(128, 256))


class _Presence:
    """Which code points occur. Byte-valued pieces go through ``bytes.translate(None, known)``, which
    deletes the known values at GB/s and leaves only the new ones to look at; in UTF-8 text the known
    ASCII bytes are deleted the same way and only the rest is decoded and looked at."""

    def __init__(self):
        self.present = np.zeros(MAX_CODE_POINT + 1, bool)
        self.known = b""  # known code points below 256, as bytes
        self.known_ascii = b""

    def _mark(self, cps):
        self.present[cps] = True
        self.known = np.flatnonzero(self.present[:256]).astype(np.uint8).tobytes()
        self.known_ascii = self.known[:int(np.count_nonzero(self.present[:128]))]

    def add(self, piece):
        if isinstance(piece, _Utf8Piece):
            rest = piece.data.translate(None, self.known_ascii)
            if len(rest) > len(piece.data) // 2:  # mostly non-ASCII: look at the decoded text once
                self._mark(_code_points(piece.text))
                return
            new_ascii = rest.translate(None, _NON_ASCII)
            if new_ascii:
                self._mark(np.frombuffer(new_ascii, np.uint8))
            self._mark(_code_points(rest.translate(None, _ASCII).decode("utf-8")))
            return
        if isinstance(piece, str):
            self._mark(_code_points(piece))
            return
        if not self.known:  # seed from a prefix, so that little is left to look at below
            self._mark(np.frombuffer(piece[:1 << 16], np.uint8))
        rest = piece.translate(None, self.known)
        if rest:
            self._mark(np.frombuffer(rest, np.uint8))


class _Background:
    """One task at a time in a second thread, in submission order, so that hashing and writing (which
    release the GIL) overlap the decoding and encoding done by the caller. Errors surface in :meth:`wait`."""

    def __init__(self):
        self._thread, self._error = None, None

    def _run(self, fn, args):
        try:
            fn(*args)
        except BaseException as e:  # re-raised in the caller's thread
            self._error = e

    def submit(self, fn, *args):
        self.wait()
        thread = threading.Thread(target=self._run, args=(fn, args), daemon=True)
        thread.start()
        self._thread = thread  # only once started: a signal in between leaves nothing unstartable to join

    def wait(self):
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _tapped(chunks, tap):
    for offset, chunk in chunks:
        tap(offset, chunk)
        yield offset, chunk


def scan_corpus(path: Path, chunk_bytes: int, bytes_mode: bool, name: str, progress):
    """Pass 1: (vocabulary, number of symbols, fingerprint); raises on bad UTF-8."""
    presence, count, sha, worker = _Presence(), 0, hashlib.sha256(), _Background()
    hashed = [0]

    def tap(offset, chunk):
        worker.submit(sha.update, chunk)
        hashed[0] += len(chunk)
        if progress is not None:
            progress("scan", offset + len(chunk))

    try:
        for _, piece in _pieces(_tapped(read_chunks(path, chunk_bytes), tap), path, bytes_mode, name, True):
            presence.add(piece)
            count += len(piece)
    finally:
        worker.wait()
    return Vocab(np.flatnonzero(presence.present), bytes_mode), count, Fingerprint(hashed[0], sha.hexdigest())


def encode_corpus(path: Path, out, vocab: Vocab, dtype: np.dtype, chunk_bytes: int, bytes_mode: bool, name: str,
            progress) -> int:
    """Pass 2: write the ids of the corpus to the open file ``out``; the number of ids written."""
    table = np.zeros(int(vocab.codes.max()) + 1, dtype)  # code point -> id
    table[vocab.codes] = np.arange(len(vocab), dtype=dtype)
    byte_table = np.zeros(256, np.uint8)
    small = vocab.codes[vocab.codes < 256]
    byte_table[small] = table[small] if dtype == np.uint8 else 0
    byte_table = byte_table.tobytes()  # for bytes.translate: byte value -> uint8 id
    written, worker = 0, _Background()

    def tap(offset, chunk):
        if progress is not None:
            progress("encode", offset + len(chunk))

    try:
        for _, piece in _pieces(_tapped(read_chunks(path, chunk_bytes), tap), path, bytes_mode, name):
            if isinstance(piece, bytes) and dtype == np.uint8:
                ids = piece.translate(byte_table)  # one C loop, no int array per piece
            else:
                cps = _code_points(piece)
                if cps.size and int(cps.max()) >= table.size:
                    raise CorpusError(f"{name} changed while it was being prepared; run prepare again")
                ids = np.take(table, cps)
            worker.submit(out.write, ids)
            written += len(ids) if isinstance(ids, bytes) else ids.size
    finally:
        worker.wait()
    return written
