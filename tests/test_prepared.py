"""Prepared corpora: streamed encoding equals load_corpus, cache reuse and rebuild, errors, ``fastrnn prepare``."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastrnn import prepared as prep
from fastrnn.corpus import CorpusError, load_corpus
from fastrnn.prepared import PreparedCorpus, cache_folder, load_prepared, prepare_corpus

# Multi-byte characters of 2, 3 and 4 bytes, so that tiny chunks split them at every byte.
MIXED = "Now is the winter\nhéllo wörld ☃ 𝄞 naïve Ωμέγα\r\n\tend." * 7


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def same_as_load_corpus(path, bytes_mode, prepared: PreparedCorpus):
    corpus = load_corpus(path, bytes_mode=bytes_mode)
    assert prepared.vocab == corpus.vocab
    assert prepared.fingerprint == corpus.fingerprint
    assert len(prepared) == len(corpus)
    assert np.array_equal(np.asarray(prepared.ids, np.int64), corpus.ids)
    assert prepared.path == corpus.path and prepared.name == corpus.name


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 5, 7, 64, 1 << 26])
@pytest.mark.parametrize("bytes_mode", [False, True])
def test_ids_equal_load_corpus_for_any_chunk_size(tmp_path, chunk_bytes, bytes_mode):
    path = write(tmp_path / "mixed.txt", MIXED)
    p = prepare_corpus(path, bytes_mode=bytes_mode, chunk_bytes=chunk_bytes)
    assert isinstance(p.ids, np.memmap) and p.ids.dtype == np.uint8 and not p.ids.flags.writeable
    same_as_load_corpus(path, bytes_mode, p)


def test_ascii_and_non_ascii_chunks_mix(tmp_path):
    # long ASCII stretches (the fast path) between non-ASCII ones (the decoder path)
    text = ("a" * 50 + "é" + "b" * 13 + "€\n") * 40 + "z" * 100
    path = write(tmp_path / "t.txt", text)
    for chunk in (16, 33, 64, 100):
        same_as_load_corpus(path, False, prepare_corpus(path, chunk_bytes=chunk, cache_dir=tmp_path / f"c{chunk}"))


def test_random_text_equals_load_corpus(tmp_path):
    rng = np.random.default_rng(5)
    alphabet = list("ab \n") + ["é", "ß", "中", "文", "😀", "\u0085", "\u2028"]
    for trial in range(5):
        text = "".join(rng.choice(alphabet, size=int(rng.integers(1, 400))))
        path = write(tmp_path / f"r{trial}.txt", text)
        chunk = int(rng.integers(1, 9))
        same_as_load_corpus(path, False, prepare_corpus(path, chunk_bytes=chunk))


def test_more_than_256_symbols_use_uint16(tmp_path):
    text = "".join(chr(c) for c in range(0x400, 0x400 + 300)) * 3 + "abc"
    path = write(tmp_path / "cyr.txt", text)
    p = prepare_corpus(path, chunk_bytes=5)
    assert p.ids.dtype == np.uint16 and len(p.vocab) == 303
    same_as_load_corpus(path, False, p)
    assert p.ids_path.stat().st_size == 2 * len(p)
    # the same file as bytes has fewer than 256 symbols: uint8
    assert prepare_corpus(path, bytes_mode=True).ids.dtype == np.uint8


def test_id_dtype_boundaries():
    assert prep.id_dtype_for(1) == np.uint8 and prep.id_dtype_for(256) == np.uint8
    assert prep.id_dtype_for(257) == np.uint16 and prep.id_dtype_for(65536) == np.uint16
    assert prep.id_dtype_for(65537) == np.uint32 and prep.id_dtype_for(0x110000) == np.uint32


def test_all_256_bytes_in_bytes_mode(tmp_path):
    data = bytes(range(256)) * 3 + b"\xff\x00"
    path = write(tmp_path / "bin.dat", data)
    p = prepare_corpus(path, bytes_mode=True, chunk_bytes=100)
    assert len(p.vocab) == 256 and p.ids.dtype == np.uint8
    same_as_load_corpus(path, True, p)


def test_split_gives_memmap_slices_like_corpus(tmp_path):
    path = write(tmp_path / "m.txt", MIXED)
    p, c = prepare_corpus(path), load_corpus(path)
    for frac in (0.0, 0.1, 0.5):
        for got, want in zip(p.split(frac), c.split(frac)):
            assert got.size == 0 or (isinstance(got, np.memmap) and np.shares_memory(got, p.ids))
            assert np.array_equal(got.astype(np.int64), want)
    w = p.window(3, 40)
    assert w.dtype == np.int64 and w.flags.c_contiguous and np.array_equal(w, c.ids[3:40])
    p.release_pages()  # drops mapped pages; the ids stay readable
    assert np.array_equal(np.asarray(p.ids, np.int64), c.ids)


def test_cache_is_reused_without_encoding(tmp_path, monkeypatch):
    path = write(tmp_path / "m.txt", MIXED)
    first = prepare_corpus(path)
    assert not first.reused and first.ids_path.parent == cache_folder(path)
    assert cache_folder(path).name == "m.txt.fastrnn-ids"
    before = os.stat(first.ids_path)

    def boom(*args, **kwargs):
        raise AssertionError("the ids were encoded again")

    monkeypatch.setattr(prep, "encode_corpus", boom)
    monkeypatch.setattr(prep, "scan_corpus", boom)
    again = prepare_corpus(path)  # just written: mtime is "racy", so it hashes, then reuses
    assert again.reused
    assert prep.cache_status(path) in ("fresh", "hashed")
    # an old mtime and an old check: reused on size + stamps alone, without reading the corpus
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # (the kernel sets the ctime to now)
    real_time_ns = prep.time.time_ns
    monkeypatch.setattr(prep.time, "time_ns", lambda: real_time_ns() + 3_000_000_000)  # checked 3 s later
    prepare_corpus(path)  # mtime and ctime changed: hashed, same text, stamps recorded
    monkeypatch.setattr(prep.time, "time_ns", real_time_ns)
    monkeypatch.setattr(prep, "file_sha256", boom)
    assert prep.cache_status(path) == "fresh"
    third = prepare_corpus(path)
    assert third.reused
    after = os.stat(third.ids_path)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    same_as_load_corpus(path, False, third)


def test_changed_corpus_is_rebuilt(tmp_path):
    path = write(tmp_path / "m.txt", MIXED)
    old = prepare_corpus(path)
    old_ids = np.array(old.ids)
    # same size, different content, mtime forced back to the recorded one: size+mtime would say
    # "fresh" were it not for the racy-mtime rule (the record is younger than 2 s after the mtime)
    st = path.stat()
    write(path, MIXED.replace("winter", "summer"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    new = prepare_corpus(path)
    assert not new.reused
    same_as_load_corpus(path, False, new)
    assert not old.ids_path.exists() and new.ids_path.exists()
    assert np.array_equal(old.ids, old_ids)  # an open map keeps reading the old ids
    # a different size: rebuilt too
    write(path, MIXED + "more")
    assert not prepare_corpus(path).reused
    # verify=True hashes even when size and mtime agree
    assert prepare_corpus(path, verify=True).reused


def test_damaged_cache_is_rebuilt_and_refused_by_load(tmp_path):
    path = write(tmp_path / "m.txt", MIXED)
    p = prepare_corpus(path)
    with open(p.ids_path, "ab") as f:
        f.write(b"x")
    with pytest.raises(CorpusError, match="damaged"):
        load_prepared(cache_folder(path))
    q = prepare_corpus(path)
    assert not q.reused
    same_as_load_corpus(path, False, q)
    meta = json.loads(q.meta_path.read_text())
    meta["format_version"] = 99
    q.meta_path.write_text(json.dumps(meta))
    with pytest.raises(CorpusError, match="format version 99"):
        load_prepared(q.meta_path)
    assert not prepare_corpus(path).reused


def test_load_prepared_from_corpus_folder_or_json(tmp_path):
    path = write(tmp_path / "m.txt", MIXED)
    with pytest.raises(CorpusError, match="missing or out of date: run fastrnn prepare"):
        load_prepared(path)
    p = prepare_corpus(path, bytes_mode=True, cache_dir=tmp_path / "cache")
    q = prepare_corpus(path, cache_dir=tmp_path / "cache")
    assert p.ids_path.parent == q.ids_path.parent and p.ids_path.parent.parent == tmp_path / "cache"
    for loaded, bytes_mode in ((load_prepared(path, cache_dir=tmp_path / "cache"), False),
                               (load_prepared(q.ids_path.parent, bytes_mode=True), True),
                               (load_prepared(p.meta_path), True)):
        same_as_load_corpus(path, bytes_mode, loaded)
    path.unlink()  # the ids stay usable without the text
    same_as_load_corpus_ids = load_prepared(q.ids_path.parent)
    assert len(same_as_load_corpus_ids) == len(MIXED)


@pytest.mark.parametrize("data, offset, reason", [
    (b"abc\xffdef", 3, "invalid start byte"),
    (b"ab\xe2\x82(rest", 2, "invalid continuation byte"),
    (b"line\nline\nab\xe2\x82", 12, "unexpected end of data"),
    (b"x" * 9 + b"\xed\xa0\x80", 9, "invalid continuation byte"),  # a surrogate
])
def test_bad_utf8_reports_the_same_offset_as_load_corpus(tmp_path, data, offset, reason):
    path = write(tmp_path / "bad.txt", data)
    with pytest.raises(CorpusError) as expected:
        load_corpus(path)
    for chunk in (1, 2, 3, 4, 1 << 20):
        with pytest.raises(CorpusError) as got:
            prepare_corpus(path, chunk_bytes=chunk)
        assert str(got.value) == str(expected.value)
        assert f"at byte offset {offset:,}" in str(got.value) and reason in str(got.value)
        assert "--bytes" in str(got.value)
    assert not any(cache_folder(path).glob("*.json"))
    same_as_load_corpus(path, True, prepare_corpus(path, bytes_mode=True))


def test_bad_utf8_offset_after_many_chunks(tmp_path):
    data = ("é" * 1000 + "\n").encode() * 5 + b"\x80" + b"tail"
    path = write(tmp_path / "bad.txt", data)
    with pytest.raises(CorpusError, match=f"byte offset {len(data) - 5:,} \\(line 6\\)"):
        prepare_corpus(path, chunk_bytes=333)


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.txt", "does not exist"),
    (lambda d: d, "is a directory"),
    (lambda d: write(d / "empty.txt", b""), "is empty"),
])
def test_bad_files(tmp_path, make, message):
    with pytest.raises(CorpusError, match=message):
        prepare_corpus(make(tmp_path))


def test_unwritable_cache_folder_suggests_cache_dir(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = write(folder / "m.txt", MIXED)
    folder.chmod(0o555)
    try:
        if os.access(folder, os.W_OK):
            pytest.skip("running as a user who can write anywhere")
        with pytest.raises(CorpusError, match="--cache-dir"):
            prepare_corpus(path)
        same_as_load_corpus(path, False, prepare_corpus(path, cache_dir=tmp_path / "elsewhere"))
    finally:
        folder.chmod(0o755)


# --- the command -------------------------------------------------------------------

def fastrnn(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_cli_prepare_writes_then_reuses(tmp_path):
    path = write(tmp_path / "m.txt", MIXED)
    r = fastrnn("prepare", path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    out = r.stdout.strip()
    assert "wrote" in out and f"{len(MIXED):,} characters" in out and "uint8" in out and "MB/s" in out
    same_as_load_corpus(path, False, load_prepared(path))
    r = fastrnn("prepare", path, cwd=tmp_path)
    assert r.returncode == 0 and "up to date" in r.stdout
    r = fastrnn("prepare", "--bytes", "--cache-dir", tmp_path / "c", path, cwd=tmp_path)
    assert r.returncode == 0 and f"{len(MIXED.encode()):,} bytes" in r.stdout
    same_as_load_corpus(path, True, load_prepared(path, bytes_mode=True, cache_dir=tmp_path / "c"))


@pytest.mark.parametrize("name, data, message", [
    ("missing.txt", None, "does not exist"),
    ("folder", "dir", "is a directory"),
    ("empty.txt", b"", "is empty"),
    ("bad.txt", b"ok\n\xc3(", "not UTF-8 text: byte 0xc3 at byte offset 3 (line 2)"),
])
def test_cli_prepare_errors_are_one_line_exit_2(tmp_path, name, data, message):
    path = tmp_path / name
    if data == "dir":
        path.mkdir()
    elif data is not None:
        write(path, data)
    r = fastrnn("prepare", path, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.startswith("fastrnn prepare: error: ") and message in r.stderr
    assert r.stderr.count("\n") == 1 and r.stdout == ""
