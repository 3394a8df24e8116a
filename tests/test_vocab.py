"""Vocabulary and corpus: sorted symbols, vectorised encoding, bytes mode, UTF-8 errors, splits."""
from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest

from fastrnn.corpus import Corpus, CorpusError, Fingerprint, embedded_corpus_path, load_corpus
from fastrnn.vocab import UnknownSymbolsError, Vocab


def naive_encode(text, chars):
    table = {ch: i for i, ch in enumerate(chars)}
    return np.array([table[ch] for ch in text], np.int64)


@pytest.mark.parametrize("text", [
    "hello world",
    "naïve café — “quotes” ✓ \U0001F600 and \U0010FFFF",
    "\x00nul\x00 and tabs\t\r\n",
    "a",
])
def test_vocab_is_sorted_set_and_encoding_matches_a_dict(text):
    vocab = Vocab.from_text(text)
    chars = sorted(set(text))
    assert [chr(c) for c in vocab.codes] == chars
    ids = vocab.encode(text)
    assert ids.dtype == np.int64 and ids.flags.c_contiguous
    np.testing.assert_array_equal(ids, naive_encode(text, chars))
    assert vocab.decode(ids) == text


def test_ascii_fast_path_equals_utf32_path():
    text = "The quick brown fox.\n" * 50
    vocab = Vocab.from_text(text)
    wide = Vocab.from_text(text + "é")  # forces the utf-32 route for the same characters
    np.testing.assert_array_equal(wide.encode(text)[:10], naive_encode(text[:10], sorted(set(text + "é"))))
    np.testing.assert_array_equal(vocab.encode(text), naive_encode(text, sorted(set(text))))


def test_unknown_symbols_are_all_listed():
    vocab = Vocab.from_text("abc")
    with pytest.raises(UnknownSymbolsError) as info:
        vocab.encode("abxcyx\U0001F600")
    assert info.value.symbols == [ord("x"), ord("y"), 0x1F600]
    msg = str(info.value)
    assert "'x'" in msg and "'y'" in msg and "'😀'" in msg and msg.startswith("3 characters")


def test_unknown_symbol_beyond_the_table_and_below_it():
    vocab = Vocab.from_text("mn")
    for text in ("a", "z", "\U0001F600"):
        with pytest.raises(UnknownSymbolsError):
            vocab.encode(text)


def test_bytes_mode():
    data = bytes([255, 0, 10, 97, 255, 128])
    vocab = Vocab.from_text(data)
    assert vocab.bytes_mode and vocab.codes.tolist() == [0, 10, 97, 128, 255]
    ids = vocab.encode(data)
    np.testing.assert_array_equal(ids, [4, 0, 1, 2, 4, 3])
    assert vocab.decode(ids) == data
    np.testing.assert_array_equal(vocab.encode("a\n"), [2, 1])  # a str is taken as its UTF-8 bytes
    with pytest.raises(UnknownSymbolsError, match=r"b'b'"):
        vocab.encode(b"ab")


def test_vocab_validation_and_equality():
    with pytest.raises(ValueError):
        Vocab([3, 2, 3])
    assert Vocab([3, 2]).encode("\x02\x03").tolist() == [1, 0]  # any order (a fine-tuned model's)
    with pytest.raises(ValueError):
        Vocab([1, 300], bytes_mode=True)
    with pytest.raises(ValueError):
        Vocab([])
    assert Vocab([1, 2]) == Vocab(np.array([1, 2], np.uint32))
    assert Vocab([1, 2]) != Vocab([1, 2], bytes_mode=True)


def test_encoding_is_vectorised_fast():
    # 20 MB of mixed text; a per-character Python loop would take ~5 s, the vectorised path well under 2 s.
    text = ("To be, or not to be: that is the question — ✓\n" * 450_000)
    t0 = time.perf_counter()
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    elapsed = time.perf_counter() - t0
    assert ids.size == len(text)
    assert elapsed < 4.0, f"encoding {len(text):,} characters took {elapsed:.2f} s"


# --- corpus files --------------------------------------------------------------

def test_load_corpus_fingerprint_and_no_newline_translation(tmp_path):
    raw = "line one\r\nline two\n".encode("utf-8")
    path = tmp_path / "c.txt"
    path.write_bytes(raw)
    corpus = load_corpus(path)
    assert corpus.fingerprint == Fingerprint(len(raw), hashlib.sha256(raw).hexdigest())
    assert corpus.vocab.decode(corpus.ids) == raw.decode("utf-8")  # \r kept
    assert corpus.path == str(path.resolve())


def test_embedded_corpus():
    corpus = load_corpus()
    assert corpus.path is None and len(corpus) == len(embedded_corpus_path().read_text("utf-8"))
    assert len(corpus.vocab) == 65


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("dir", "is a directory"),
    (b"", "is empty"),
])
def test_unusable_files(tmp_path, content, message):
    path = tmp_path / "c.txt"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CorpusError, match=message):
        load_corpus(path)


def test_non_utf8_says_where_and_suggests_bytes(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"abc\nde\xfffg")
    with pytest.raises(CorpusError) as info:
        load_corpus(path)
    msg = str(info.value)
    assert "byte offset 6" in msg and "line 2" in msg and "0xff" in msg and "--bytes" in msg
    corpus = load_corpus(path, bytes_mode=True)
    assert corpus.vocab.bytes_mode and len(corpus) == 9


def test_split_holds_out_the_tail():
    corpus = Corpus.from_text("abcdefghij" * 10)
    train, val_in, val_tgt = corpus.split(0.1)
    assert train.size == 90 and val_tgt.size == 10
    np.testing.assert_array_equal(val_tgt, corpus.ids[90:])
    np.testing.assert_array_equal(val_in, corpus.ids[89:99])  # each held-out id predicted from the one before
    train, val_in, val_tgt = corpus.split(0.0)
    assert train.size == 100 and val_in.size == 0 and val_tgt.size == 0
