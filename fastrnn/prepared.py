"""Prepared corpora: a text encoded once, streaming, to a compact id file read through ``numpy.memmap``.

numpy only (plus :mod:`.vocab`, :mod:`.corpus` and the reading in :mod:`.corpus_scan`). ``prepare_corpus`` reads a
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

import contextlib
import hashlib
import json
import mmap
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .corpus import EMBEDDED_NAME, CorpusError, Fingerprint, held_out_count, recoding
from .corpus_scan import HASH_BLOCK, check_file, encode_corpus, read_chunks, scan_corpus
from .lock import FileLock
from .vocab import ID_DTYPE, Vocab

FORMAT = "fastrnn-ids"
FORMAT_VERSION = 1
CACHE_SUFFIX = ".fastrnn-ids"
RECODE_PIECE = 1 << 24  # ids per piece of PreparedCorpus.in_vocab
DEFAULT_CHUNK_BYTES = 4 << 20  # stays in cache; chunks of 64 MiB stream through RAM at every step
_RACY_NS = 2_000_000_000  # an mtime this close to the moment it was recorded proves nothing
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

    def in_vocab(self, vocab: Vocab) -> "PreparedCorpus":
        """This text with its ids in ``vocab`` (a superset of its own: a fine-tuned model's); itself if equal.

        The recoded ids are a second file beside this one's, ``<ids file stem>.as-<vocab hash>.ids``, written
        once (atomically) a piece at a time and reused while this one's ids stand; a rebuild removes it.
        """
        if vocab == self.vocab:
            return self
        table = recoding(self.vocab, vocab)
        dtype = id_dtype_for(len(vocab))
        digest = hashlib.sha256(f"{vocab.bytes_mode}:{vocab.codes.tolist()}".encode()).hexdigest()[:16]
        path = self.ids_path.with_name(f"{self.ids_path.stem}.as-{digest}.ids")
        if not (path.exists() and path.stat().st_size == len(self) * dtype.itemsize):
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                with open(tmp, "wb") as out:
                    for start in range(0, len(self), RECODE_PIECE):
                        table[self.ids[start:start + RECODE_PIECE]].astype(dtype).tofile(out)
                os.replace(tmp, path)
            except OSError as e:
                raise CorpusError(f"cannot write ids to {str(path.parent)!r}: {e.strerror or e}") from None
            finally:
                tmp.unlink(missing_ok=True)
        ids = np.memmap(path, dtype=dtype, mode="r", shape=(len(self),))
        return PreparedCorpus(ids, vocab, self.fingerprint, self.path, path, self.meta_path, self.reused,
                              self.seconds, getattr(ids, "_mmap", None))

    def release_pages(self):
        """Drop this process's mapped pages (they stay in the page cache), so RSS stops growing with reads.

        The ids stay valid: a later read faults its pages back in. No-op where madvise is missing.
        """
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap.madvise(mmap.MADV_DONTNEED)


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
    for _, block in read_chunks(Path(path), HASH_BLOCK):
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
    st = check_file(path)
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
    try:  # from the first attempt: a signal right after a lock is taken still releases it (and its file)
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
    vocab, count, fingerprint = scan_corpus(path, chunk_bytes, bytes_mode, name, progress)
    dtype = id_dtype_for(len(vocab))
    tmp = folder / f".{_mode(bytes_mode)}.{os.getpid()}.ids.tmp"
    try:
        try:
            with open(tmp, "wb") as out:
                written = encode_corpus(path, out, vocab, dtype, chunk_bytes, bytes_mode, name, progress)
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
        for recoded in previous.parent.glob(f"{previous.stem}.as-*.ids"):  # PreparedCorpus.in_vocab's
            recoded.unlink(missing_ok=True)
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
