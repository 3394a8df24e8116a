"""``fastrnn sample --lines N [--novel] [--max-draws M]``: items, one per line, and which of them are new."""
from __future__ import annotations

import numpy as np
import pytest

from fastrnn import items as items_module
from fastrnn.items import lines_found

from test_cli import fastrnn

WORDS = ["ash", "birch", "cedar", "elm", "fir", "hazel", "larch", "lime", "maple", "oak", "pine", "rowan", "yew"]


@pytest.fixture(scope="module")
def words_model(tmp_path_factory):
    """(folder, checkpoint) of an rnn trained briefly on a list of tree names, one per line."""
    folder = tmp_path_factory.mktemp("words")
    rng = np.random.default_rng(0)
    (folder / "trees.txt").write_text("\n".join(rng.choice(WORDS, 3000)) + "\n", encoding="utf-8")
    r = fastrnn("train", "trees.txt", "--hidden-size", "24", "--steps", "600", "--seed", "2", "--quiet",
                "--checkpoint", "t.npz", cwd=folder)
    assert r.returncode == 0, r.stderr
    return folder, "t.npz"


def lines(text):
    return text.split("\n")[:-1]


def test_lines_are_items_one_per_line(words_model):
    folder, ckpt = words_model
    r = fastrnn("sample", ckpt, "--lines", "40", "--seed", "3", "--length", "12", cwd=folder)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    got = lines(r.stdout)
    assert len(got) == 40 and all(0 < len(x) <= 12 and "\n" not in x for x in got)
    assert sum(x in WORDS for x in got) >= 20  # a trained model mostly copies the list back
    again = fastrnn("sample", ckpt, "--lines", "40", "--seed", "3", "--length", "12", cwd=folder)
    assert again.stdout == r.stdout  # the seed fixes the draws
    primed = fastrnn("sample", ckpt, "--lines", "5", "--seed", "3", "--prime", "ma", cwd=folder)
    assert primed.returncode == 0 and all(x.startswith("ma") for x in lines(primed.stdout))


def test_novel_leaves_out_exactly_the_corpus_lines_among_the_same_draws(words_model):
    folder, ckpt = words_model
    r = fastrnn("sample", ckpt, "--lines", "10", "--novel", "--seed", "4", cwd=folder)
    assert r.returncode == 0, r.stderr
    novel = lines(r.stdout)
    assert len(novel) == 10 and not set(novel) & set(WORDS)
    summary = r.stderr.strip()
    assert summary.startswith("fastrnn sample: 10 items in ") and r.stderr.count("\n") == 1
    draws = int(summary.split(" in ")[1].split()[0].replace(",", ""))
    copies = int(summary.split("; ")[1].split()[0].replace(",", ""))
    # The same seed without --novel draws the same items: every item of the first `draws` draws
    plain = fastrnn("sample", ckpt, "--lines", str(10 * draws), "--max-draws", str(draws), "--seed", "4", cwd=folder)
    assert plain.returncode == 1, plain.stderr  # fewer items than asked: those found, then exit 1
    drawn = lines(plain.stdout)
    assert [x for x in drawn if x not in WORDS] == novel and sum(x in WORDS for x in drawn) == copies > 0


@pytest.mark.parametrize("chunk", [3, 7, 64, 1 << 22])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int64])
def test_lines_found_reads_the_corpus_a_chunk_at_a_time(tmp_path, monkeypatch, chunk, dtype):
    monkeypatch.setattr(items_module, "SCAN_CHUNK", chunk)
    rng = np.random.default_rng(chunk)
    NL = 0
    corpus_lines = [rng.integers(1, 4, rng.integers(0, 6)).tolist() for _ in range(200)]
    corpus_lines[50] = [1] * 40  # a line longer than the small chunks
    ids = np.array(sum((x + [NL] for x in corpus_lines), [])[:-1], dtype)  # the last line without its newline
    path = tmp_path / "ids.bin"
    ids.tofile(path)
    mapped = np.memmap(path, dtype, mode="r")
    candidates = [rng.integers(1, 4, rng.integers(1, 6)).tolist() for _ in range(60)]
    candidates += [[1] * 40, [1] * 20, corpus_lines[-1], corpus_lines[0] or [2]]
    truth = [tuple(c) in {tuple(x) for x in corpus_lines} for c in candidates]
    assert any(truth) and not all(truth)
    assert lines_found(mapped, NL, [np.array(c) for c in candidates]).tolist() == truth


def test_bad_requests_exit_2_with_one_line(words_model, tmp_path):
    folder, ckpt = words_model
    for flags, message in [(["--lines", "0"], "--lines must be a positive integer"),
                           (["--novel"], "--novel goes with --lines N"),
                           (["--max-draws", "5"], "--max-draws goes with --lines N"),
                           (["--lines", "3", "--num-samples", "2"], "--lines and --num-samples exclude"),
                           (["--lines", "3", "--max-draws", "0"], "--max-draws must be a positive integer")]:
        r = fastrnn("sample", ckpt, *flags, cwd=folder)
        assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and message in r.stderr, flags
    (tmp_path / "flat.txt").write_text("no line breaks in this text at all " * 30, encoding="utf-8")
    r = fastrnn("train", "flat.txt", "--hidden-size", "8", "--steps", "5", "--quiet", "--checkpoint", "f.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = fastrnn("sample", "f.npz", "--lines", "3", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "has no newline" in r.stderr


def test_novel_needs_the_training_corpus(words_model, tmp_path):
    folder, ckpt = words_model
    text = (folder / "trees.txt").read_bytes()
    (tmp_path / "trees.txt").write_bytes(text)
    r = fastrnn("train", "trees.txt", "--hidden-size", "8", "--steps", "5", "--quiet", "--checkpoint", "m.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (tmp_path / "trees.txt").unlink()
    r = fastrnn("sample", "m.npz", "--lines", "3", "--novel", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "is gone" in r.stderr


def test_an_impossible_novel_request_prints_what_it_found_and_exits_1(words_model):
    folder, ckpt = words_model
    r = fastrnn("sample", ckpt, "--lines", "50", "--novel", "--max-draws", "20", "--argmax", cwd=folder)
    assert r.returncode == 1
    assert lines(r.stdout) == []  # the argmax item is one word of the list, every time
    summary, error = r.stderr.splitlines()
    assert summary == "fastrnn sample: 0 items in 20 draws; 20 draws were lines of the training corpus, left out"
    assert error.startswith("fastrnn sample: error: only 0 of the 50 items asked for within --max-draws 20")
