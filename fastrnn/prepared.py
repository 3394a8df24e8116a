"""Prepared corpora: a text encoded once, streaming, to a compact id file read through ``numpy.memmap``.

numpy only (plus :mod:`.vocab` and :mod:`.corpus`). ``prepare_corpus`` reads a
corpus in chunks and never holds the whole file: pass 1 validates the UTF-8
(an incremental decoder, so characters split across chunks decode correctly)
and finds the vocabulary while a second thread computes the sha256 fingerprint;
pass 2 encodes chunk by chunk while the second thread writes the id file (a
corpus whose size or mtime changes between the passes is an error). The ids
are the smallest unsigned type that holds the vocabulary: uint8 when V <= 256,
else uint16, else uint32. They equal ``load_corpus(path).ids`` (same :class:`Vocab`: the
sorted code points, or byte values in bytes mode) and the fingerprint equals
``load_corpus(path).fingerprint``.

Cache layout: ``CORPUS.fastrnn-ids/`` beside the corpus (or, with
``cache_dir``, ``CACHE_DIR/NAME-<hash of the corpus's absolute path>.fastrnn-ids/``)
holds per mode (``chars`` or ``bytes``) a metadata file ``MODE.json`` and the
id file ``MODE-<sha256 prefix>.ids`` it names (raw ids, native byte order, no
header). The JSON is written last with ``os.replace``: it is the commit, so a
reader sees the old ids or the new ones, never half of a file.

Reuse rule (:func:`cache_status`): the cache is reused without reading the
corpus when its size, ``st_mtime_ns``, ``st_ctime_ns``, inode and device all
equal the recorded ones and both times were at least 2 s older than the moment
they were recorded (a file written in the same clock tick as the check could
change again without changing its times). The mtime alone is not enough: ``cp
-p``, ``rsync -a`` and ``touch -d`` set it back after changing the content, but
none can set the ctime (the kernel stamps it at every change, ``touch``
included) nor keep the inode of a file that was replaced. When the size matches
but any of the others does not (or was not recorded), or a time is that
recent, or ``verify=True``, the corpus is hashed: the same sha256 reuses the ids
(and records the new stamps), another rebuilds them. A different size, a
missing, damaged or older-format cache always rebuilds.
"""
from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import mmap
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .corpus import EMBEDDED_NAME, CorpusError, Fingerprint, held_out_count
from .lock import FileLock
from .vocab import ID_DTYPE, MAX_CODE_POINT, Vocab

FORMAT = "fastrnn-ids"
FORMAT_VERSION = 1
CACHE_SUFFIX = ".fastrnn-ids"
DEFAULT_CHUNK_BYTES = 4 << 20  # measured: 2-4x faster than 64 MiB chunks, which stream through RAM at every step
_PIECE_CHARS = 1 << 22  # characters per utf-32 conversion: bounds that copy to 16 MB
_RACY_NS = 2_000_000_000  # an mtime this close to the moment it was recorded proves nothing
_HASH_BLOCK = 4 << 20  # blocks that stay in cache hash faster than large ones
LOCK_NAME = ".prepare.lock"  # in a cache folder: held by the process building into it


def id_dtype_for(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids 0 .. vocab_size - 1."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} symbols is larger than unicode")


def _mode(bytes_mode) -> str:
    return "bytes" if bytes_mode else "chars"


def cache_folder(path, cache_dir=None) -> Path:
    """Where the prepared ids of corpus ``path`` live (see the module docstring)."""
    path = Path(os.path.abspath(path))
    if cache_dir is None:
        return path.with_name(path.name + CACHE_SUFFIX)
    key = hashlib.sha256(os.fsencode(path)).hexdigest()[:12]
    return Path(cache_dir) / f"{path.name}-{key}{CACHE_SUFFIX}"


@dataclass
class PreparedCorpus:
    """Encoded text read through a memory map: what :class:`~fastrnn.corpus.Corpus` offers, without the RAM.

    ``ids`` (N,) read-only ``numpy.memmap`` of ``dtype`` (uint8/uint16/uint32),
    ``vocab``, ``fingerprint`` (same as ``load_corpus`` gives), ``path`` (the
    corpus's absolute path). ``reused`` says whether :func:`prepare_corpus`
    found the ids already built, ``seconds`` how long it took.
    """

    ids: np.memmap
    vocab: Vocab
    fingerprint: Fingerprint
    path: str | None
    ids_path: Path
    meta_path: Path
    reused: bool = False
    seconds: float = 0.0
    _mmap: object = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path if self.path is not None else f"embedded {EMBEDDED_NAME}"

    @property
    def dtype(self) -> np.dtype:
        return self.ids.dtype

    def __len__(self):
        return int(self.ids.size)

    def split(self, val_fraction: float):
        """``(train_ids, val_inputs, val_targets)`` as :meth:`Corpus.split`, but memmap slices (no copies)."""
        k = held_out_count(len(self), val_fraction)
        n_train = len(self) - k
        return self.ids[:n_train], self.ids[n_train - 1:-1] if k else self.ids[:0], self.ids[n_train:]

    def window(self, start: int, stop: int) -> np.ndarray:
        """Ids ``start:stop`` copied out as a C-contiguous int64 array (the kernels' id dtype)."""
        return np.array(self.ids[start:stop], dtype=ID_DTYPE)

    def release_pages(self):
        """Drop this process's mapped pages (they stay in the page cache), so RSS stops growing with reads.

        The ids stay valid: a later read faults its pages back in. No-op where madvise is missing.
        """
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


# --- reading the corpus -----------------------------------------------------------

def _check_file(path: Path, what="corpus") -> os.stat_result:
    if not path.exists():
        raise CorpusError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise CorpusError(f"{what} {str(path)!r} is a directory, not a file")
    st = path.stat()
    if st.st_size == 0:
        raise CorpusError(f"{what} {str(path)!r} is empty")
    return st


def _chunks(path: Path, chunk_bytes: int):
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
        while offset > 0 and (block := f.read(min(offset, _HASH_BLOCK))):
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
        for start in range(0, len(text), _PIECE_CHARS):
            yield offset, text[start:start + _PIECE_CHARS]
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


def _scan(path: Path, chunk_bytes: int, bytes_mode: bool, name: str, progress):
    """Pass 1: (vocabulary, number of symbols, fingerprint); raises on bad UTF-8."""
    presence, count, sha, worker = _Presence(), 0, hashlib.sha256(), _Background()
    hashed = [0]

    def tap(offset, chunk):
        worker.submit(sha.update, chunk)
        hashed[0] += len(chunk)
        if progress is not None:
            progress("scan", offset + len(chunk))

    try:
        for _, piece in _pieces(_tapped(_chunks(path, chunk_bytes), tap), path, bytes_mode, name, True):
            presence.add(piece)
            count += len(piece)
    finally:
        worker.wait()
    return Vocab(np.flatnonzero(presence.present), bytes_mode), count, Fingerprint(hashed[0], sha.hexdigest())


def _encode(path: Path, out, vocab: Vocab, dtype: np.dtype, chunk_bytes: int, bytes_mode: bool, name: str,
            progress) -> int:
    """Pass 2: write the ids of the corpus to the open file ``out``; the number of ids written."""
    table = np.zeros(int(vocab.codes[-1]) + 1, dtype)  # code point -> id
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
        for _, piece in _pieces(_tapped(_chunks(path, chunk_bytes), tap), path, bytes_mode, name):
            if isinstance(piece, bytes) and dtype == np.uint8:
                ids = piece.translate(byte_table)  # ~3x faster than a numpy lookup
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


# --- the cache: metadata, freshness, atomic writes -----------------------------------

def _meta_path(folder: Path, bytes_mode: bool) -> Path:
    return folder / f"{_mode(bytes_mode)}.json"


def _read_meta(meta_path: Path, bytes_mode: bool | None = None) -> dict:
    """The validated metadata of a prepared corpus; :class:`CorpusError` if missing or damaged."""
    def bad(why):
        return CorpusError(f"prepared corpus {str(meta_path)!r} is {why}; run fastrnn prepare on the corpus again")

    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CorpusError(f"no prepared corpus at {str(meta_path)!r}: run fastrnn prepare first") from None
    except (OSError, ValueError) as e:
        raise bad(f"unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise bad("not a fastrnn id file description")
    if meta.get("format_version") != FORMAT_VERSION:
        raise bad(f"format version {meta.get('format_version')!r}, this fastrnn reads {FORMAT_VERSION}")
    try:
        mode = meta["mode"]
        if mode not in ("chars", "bytes") or (bytes_mode is not None and mode != _mode(bytes_mode)):
            raise ValueError(f"mode {mode!r}")
        vocab = Vocab(np.asarray(meta["vocab"], dtype=np.int64), mode == "bytes")
        dtype = np.dtype(meta["dtype"])
        if dtype != id_dtype_for(len(vocab)):
            raise ValueError(f"dtype {dtype} for {len(vocab)} symbols")
        length, c = int(meta["length"]), meta["corpus"]
        fingerprint = Fingerprint(int(c["length"]), str(c["sha256"]))
        ids_name = str(meta["ids_file"])
        if length < 1 or "/" in ids_name or os.sep in ids_name:
            raise ValueError("length or file name")
    except (KeyError, TypeError, ValueError) as e:
        raise bad(f"damaged ({e})") from None
    ids_path = meta_path.parent / ids_name
    try:
        size = ids_path.stat().st_size
    except OSError:
        raise bad(f"incomplete: its id file {ids_name!r} is missing") from None
    if size != length * dtype.itemsize:
        raise bad(f"damaged: {ids_name!r} holds {size:,} bytes, not {length:,} {dtype} ids")
    return dict(meta, _vocab=vocab, _dtype=dtype, _fingerprint=fingerprint, _ids_path=ids_path)


def _open(meta_path: Path, meta: dict, reused=False, seconds=0.0) -> PreparedCorpus:
    ids = np.memmap(meta["_ids_path"], dtype=meta["_dtype"], mode="r", shape=(int(meta["length"]),))
    return PreparedCorpus(ids, meta["_vocab"], meta["_fingerprint"], meta["corpus"].get("path"),
                          meta["_ids_path"], meta_path, reused, seconds, getattr(ids, "_mmap", None))


def _write_atomic(path: Path, data: bytes):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_meta(meta_path: Path, meta: dict):
    public = {k: v for k, v in meta.items() if not k.startswith("_")}
    _write_atomic(meta_path, (json.dumps(public, indent=1) + "\n").encode("utf-8"))


def file_sha256(path) -> Fingerprint:
    """The :class:`Fingerprint` of a file, read in blocks (the same as ``Fingerprint.of(read_bytes(path))``)."""
    sha, length = hashlib.sha256(), 0
    for _, block in _chunks(Path(path), _HASH_BLOCK):
        sha.update(block)
        length += len(block)
    return Fingerprint(length, sha.hexdigest())


def _stamps(st: os.stat_result) -> dict:
    """What identifies a corpus file's version without reading it (see the module docstring)."""
    return {"mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns, "inode": st.st_ino, "device": st.st_dev}


def cache_status(path, bytes_mode=False, cache_dir=None, verify=False) -> str:
    """``"fresh"`` (reuse, no hashing needed), ``"hashed"`` (reuse after hashing, mtime refreshed),
    or ``"stale"`` (rebuild: missing, damaged or a different text). See the module docstring."""
    path = Path(path)
    st = _check_file(path)
    meta_path = _meta_path(cache_folder(path, cache_dir), bytes_mode)
    try:
        meta = _read_meta(meta_path, bytes_mode)
    except CorpusError:
        return "stale"
    recorded = meta["corpus"]
    if st.st_size != meta["_fingerprint"].length:
        return "stale"
    stamps, checked = _stamps(st), recorded.get("checked_ns")
    if (not verify and all(recorded.get(k) == v for k, v in stamps.items()) and isinstance(checked, int)
            and checked - max(st.st_mtime_ns, st.st_ctime_ns) >= _RACY_NS):
        return "fresh"
    if file_sha256(path) != meta["_fingerprint"]:
        return "stale"
    recorded.update(stamps, checked_ns=time.time_ns(), path=os.path.abspath(path))
    try:
        _write_meta(meta_path, meta)
    except OSError:
        pass  # a read-only cache: the next check hashes again
    return "hashed"


def _check_folder(folder: Path, cache_dir):
    where = f"--cache-dir {str(cache_dir)!r}" if cache_dir is not None else f"folder {str(folder.parent)!r}"
    try:
        folder.mkdir(parents=cache_dir is not None, exist_ok=True)
    except FileExistsError:
        raise CorpusError(f"cannot cache ids in {str(folder)!r}: it exists and is not a folder") from None
    except OSError as e:
        hint = "" if cache_dir is not None else "; pass --cache-dir DIR to put them elsewhere"
        raise CorpusError(f"cannot cache ids in {where}: {e.strerror or e}{hint}") from None
    if not os.access(folder, os.W_OK):
        hint = "" if cache_dir is not None else "; pass --cache-dir DIR to put them elsewhere"
        raise CorpusError(f"cannot cache ids in {str(folder)!r}: not writable{hint}")


@contextlib.contextmanager
def _building(folder: Path, cache_dir, waiting):
    """Hold the cache folder's :data:`LOCK_NAME` (created with the folder where missing) for the block,
    waiting for another process preparing into it (``waiting(pid)`` first, if given). A folder that an
    interrupted process removes meanwhile is made again; where the file system cannot lock, unlocked."""
    lock = None
    for _ in range(100):
        _check_folder(folder, cache_dir)
        lock = FileLock(folder / LOCK_NAME)
        try:
            if not lock.acquire():
                if waiting is not None:
                    waiting(lock.holder)
                lock.acquire(wait=True)
            break
        except FileNotFoundError:  # the folder was removed after we made it (an interrupted prepare's cleanup)
            lock = None
        except OSError:  # no locks on this file system: as before, unlocked
            lock = None
            break
    try:
        yield
    finally:
        if lock is not None:
            lock.release()


def prepare_corpus(path, bytes_mode=False, cache_dir=None, chunk_bytes=DEFAULT_CHUNK_BYTES, progress=None,
                   verify=False, waiting=None) -> PreparedCorpus:
    """Encode the corpus file ``path`` to a cached id file (or reuse it) and open it as a memmap.

    ``progress(phase, bytes_done)``, if given, is called after each chunk of each pass
    (``phase``: ``"scan"`` then ``"encode"``). ``verify=True`` hashes the corpus even when
    size and mtime say the cache is fresh. Every problem is a :class:`CorpusError`.

    One process at a time builds into a cache folder (an OS lock on its
    :data:`LOCK_NAME`): another one preparing the same corpus waits for it
    (``waiting(pid)`` is called first, ``pid`` the holder's or None), then
    reuses what it built. An interrupted or failed prepare removes only its own
    temporary files (and its lock file).
    """
    start = time.perf_counter()
    path = Path(path)
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
    folder = cache_folder(path, cache_dir)
    meta_path = _meta_path(folder, bytes_mode)
    if cache_status(path, bytes_mode, cache_dir, verify) != "stale":
        return _open(meta_path, _read_meta(meta_path, bytes_mode), True, time.perf_counter() - start)
    with _building(folder, cache_dir, waiting):
        if cache_status(path, bytes_mode, cache_dir, verify) != "stale":  # built meanwhile by the process waited for
            return _open(meta_path, _read_meta(meta_path, bytes_mode), True, time.perf_counter() - start)
        return _build(path, bytes_mode, folder, meta_path, chunk_bytes, progress, start)


def _build(path: Path, bytes_mode, folder: Path, meta_path: Path, chunk_bytes, progress, start) -> PreparedCorpus:
    """Pass 1 and 2 into ``folder`` (locked by the caller), then the metadata: the commit."""
    try:
        previous = _read_meta(meta_path, bytes_mode)["_ids_path"]
    except CorpusError:
        previous = None
    name = f"corpus {str(path)!r}"
    before = path.stat()
    vocab, count, fingerprint = _scan(path, chunk_bytes, bytes_mode, name, progress)
    dtype = id_dtype_for(len(vocab))
    tmp = folder / f".{_mode(bytes_mode)}.{os.getpid()}.ids.tmp"
    try:
        try:
            with open(tmp, "wb") as out:
                written = _encode(path, out, vocab, dtype, chunk_bytes, bytes_mode, name, progress)
        except OSError as e:
            raise CorpusError(f"cannot write ids to {str(tmp.parent)!r}: {e.strerror or e}") from None
        after = path.stat()
        if (written != count or fingerprint.length != before.st_size or after.st_size != before.st_size
                or _stamps(after) != _stamps(before)):
            raise CorpusError(f"{name} changed while it was being prepared; run prepare again")
        ids_path = folder / f"{_mode(bytes_mode)}-{fingerprint.sha256[:16]}.ids"
        os.replace(tmp, ids_path)
    finally:
        tmp.unlink(missing_ok=True)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "mode": _mode(bytes_mode),
        "ids_file": ids_path.name, "dtype": dtype.name, "length": written, "byte_order": "little"
        if np.little_endian else "big", "vocab": vocab.codes.tolist(),
        "corpus": {"path": os.path.abspath(path), "length": fingerprint.length, "sha256": fingerprint.sha256,
                   **_stamps(before), "checked_ns": time.time_ns()},
    }
    _write_meta(meta_path, meta)  # the commit: readers now see the new ids
    if previous is not None and previous != ids_path:
        previous.unlink(missing_ok=True)
    return _open(meta_path, _read_meta(meta_path, bytes_mode), False, time.perf_counter() - start)


def load_prepared(path, bytes_mode=False, cache_dir=None) -> PreparedCorpus:
    """Open prepared ids: ``path`` is a cache folder (``*.fastrnn-ids``), a ``MODE.json`` in one, or the
    corpus file itself, whose cache must then be up to date (else :class:`CorpusError`: run prepare)."""
    path = Path(path)
    if path.is_dir():
        meta_path = _meta_path(path, bytes_mode)
    elif path.suffix == ".json" and path.parent.name.endswith(CACHE_SUFFIX):
        meta_path = path
        bytes_mode = None
    else:
        if cache_status(path, bytes_mode, cache_dir) == "stale":
            raise CorpusError(f"the prepared ids of {str(path)!r} are missing or out of date: run "
                              f"fastrnn prepare {'--bytes ' if bytes_mode else ''}{path}")
        meta_path = _meta_path(cache_folder(path, cache_dir), bytes_mode)
    return _open(meta_path, _read_meta(meta_path, bytes_mode))
