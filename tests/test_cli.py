"""The ``fastrnn`` command, run for real in subprocesses: train, sample, eval, resume, Ctrl-C, SIGTERM,
divergence, --cache-dir."""
from __future__ import annotations

import math
import os
import queue
import re
import signal
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastrnn.checkpoint import load_checkpoint
from fastrnn.corpus import load_corpus
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from conftest import YORK_TEXT

SMALL = ["--hidden-size", "16", "--seq-length", "10", "--seed", "1"]


def fastrnn(*args, cwd, timeout=180, **kwargs):
    return subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def npz_arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def test_train_sample_eval(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 300, "--log-every", 100, "--eval-every", 100,
                "--sample-every", 150, "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    out = r.stdout
    # The seed's log line, same numbers: compare with the trainer run in this process.
    trainer = Trainer(load_corpus(corpus_file), TrainConfig(hidden_size=16, seq_length=10, seed=1))
    trainer.train(1)
    assert f"iter 0, loss: {trainer.smooth_loss:.2f} |" in out
    for n in (100, 200):
        assert f"\niter {n}, loss: " in out
    assert re.search(r"bits/char \| [\d,]+ chars/s", out)
    assert out.count("----\n") == 4  # samples at steps 0 and 150, the seed's format
    trainer.train(299)
    val = trainer.validation_loss()
    assert f"step 300: validation {val.nats_per_char:.4f} nats/char, {val.bits_per_char:.4f} bits/char" in out
    assert "saved checkpoint m.npz" in out

    r = fastrnn("eval", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{val.nats_per_char:.4f} nats/char, {val.bits_per_char:.4f} bits/char" in r.stdout
    assert "held-out split" in r.stdout

    (tmp_path / "line.txt").write_text("Now is the winter")
    r = fastrnn("eval", "m.npz", "line.txt", "--per-char", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert rows[0].startswith("position") and len(rows) == 1 + 16 + 1
    probs = [float(row.split("\t")[2]) for row in rows[1:-1]]
    bits = -sum(math.log2(p) for p in probs) / 16
    assert rows[-1].startswith("line.txt: 16 characters") and f"{bits:.2f}" in rows[-1]

    a = fastrnn("sample", "m.npz", "--seed", 3, "--length", 50, cwd=tmp_path)
    b = fastrnn("sample", "m.npz", "--seed", 3, "--length", 50, cwd=tmp_path)
    assert a.returncode == 0 and a.stdout == b.stdout and len(a.stdout) == 51
    c = fastrnn("sample", "m.npz", "--prime", "Now is", "--length", 30, "--temperature", 0.5, cwd=tmp_path)
    assert c.returncode == 0 and c.stdout.startswith("Now is") and len(c.stdout) == 6 + 30 + 1
    g1 = fastrnn("sample", "m.npz", "--argmax", "--seed", 1, "--length", 30, cwd=tmp_path)
    g2 = fastrnn("sample", "m.npz", "--argmax", "--seed", 2, "--length", 30, cwd=tmp_path)
    assert g1.stdout == g2.stdout


def test_resume_through_the_cli_is_bit_identical(tmp_path, corpus_file):
    common = [corpus_file, *SMALL, "--log-every", 40, "--sample-every", 60, "--sample-length", 40,
              "--eval-every", 0]
    r = fastrnn("train", *common, "--steps", 240, "--checkpoint", "full.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r1 = fastrnn("train", *common, "--steps", 110, "--checkpoint", "half.npz", cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr
    r2 = fastrnn("train", "--resume", "half.npz", "--steps", 240, "--log-every", 40, "--sample-every", 60,
                 "--sample-length", 40, "--eval-every", 0, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    full, half = npz_arrays(tmp_path / "full.npz"), npz_arrays(tmp_path / "half.npz")
    assert int(half["n"]) == 240
    for name in ("Wxh", "Whh", "Why", "bh", "by", "mWxh", "mWhh", "mWhy", "mbh", "mby", "hprev", "p",
                 "smooth_loss", "rng_state"):
        np.testing.assert_array_equal(full[name], half[name], err_msg=name)

    def samples_and_logs(text):
        return [line.rsplit(" | ", 1)[0] if line.startswith("iter ") else line  # drop the chars/s
                for line in text.split("\n") if line.startswith((" ", "iter "))]

    # Log lines and samples after the resume are those of the uninterrupted run.
    assert samples_and_logs(r1.stdout) + samples_and_logs(r2.stdout) == samples_and_logs(r.stdout)


def test_default_checkpoint_path_and_no_silent_overwrite(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 20, "--quiet", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""
    ckpt = tmp_path / "york.ckpt.npz"
    before = ckpt.read_bytes()
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 20, cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr and "--resume" in r.stderr
    assert ckpt.read_bytes() == before
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 30, "--overwrite", "--quiet", cwd=tmp_path)
    assert r.returncode == 0 and load_checkpoint(ckpt).state.n == 30
    r = fastrnn("train", "--resume", ckpt, "--steps", 30, cwd=tmp_path)
    assert r.returncode == 0 and "nothing to do" in r.stdout


def test_embedded_corpus_is_the_default(tmp_path):
    r = fastrnn("train", "--steps", 3, "--hidden-size", 8, "--sample-every", 0, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "corpus embedded tinyshakespeare.txt: 1,115,394 characters, 65 distinct" in r.stdout
    assert load_checkpoint(tmp_path / "tinyshakespeare.ckpt.npz").corpus_path is None
    r = fastrnn("eval", "tinyshakespeare.ckpt.npz", cwd=tmp_path)
    assert r.returncode == 0 and "55,769 characters" in r.stdout


def test_bytes_mode(tmp_path):
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 3 + "café".encode("latin-1") * 20)
    r = fastrnn("train", "blob.bin", "--bytes", *SMALL, "--steps", 30, "--checkpoint", "b.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "256 distinct" in r.stdout
    r = subprocess.run([sys.executable, "-m", "fastrnn", "sample", "b.npz", "--length", "40", "--seed", "0"],
                       cwd=tmp_path, capture_output=True)
    assert r.returncode == 0 and len(r.stdout) == 41
    r = fastrnn("eval", "b.npz", cwd=tmp_path)
    assert r.returncode == 0 and "bytes" in r.stdout


def _reader(stream):
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def _train_then_signal(tmp_path, corpus_file, signum, checkpoint):
    """Start a long ``fastrnn train``, wait for a few log lines, send ``signum``; return (exit status, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastrnn", "train", str(corpus_file), *SMALL, "--steps", "100000000",
         "--log-every", "200", "--sample-every", "0", "--checkpoint", checkpoint],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines, seen = _reader(proc.stdout), 0
        deadline = time.monotonic() + 120
        while seen < 3:  # a few log lines: training is under way
            line = lines.get(timeout=max(1, deadline - time.monotonic()))
            seen += line.startswith("iter ")
        proc.send_signal(signum)
        proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert "Traceback" not in err
    return proc.returncode, err


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path, corpus_file):
    status, err = _train_then_signal(tmp_path, corpus_file, signal.SIGINT, "int.npz")
    assert status == 130, err
    assert re.fullmatch(r"fastrnn train: interrupted at step [\d,]+; saved checkpoint int\.npz .*\n", err)
    ckpt = load_checkpoint(tmp_path / "int.npz")
    assert ckpt.state.n > 400
    n = ckpt.state.n
    r = fastrnn("train", "--resume", "int.npz", "--steps", n + 10, "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(tmp_path / "int.npz").state.n == n + 10


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path, corpus_file):
    status, err = _train_then_signal(tmp_path, corpus_file, signal.SIGTERM, "term.npz")
    assert status == 143, err
    assert re.fullmatch(r"fastrnn train: terminated \(SIGTERM\) at step [\d,]+; saved checkpoint term\.npz "
                        r"\(continue with: fastrnn train --resume term\.npz, which trains on to step 100,000,000\)\n", err), err
    ckpt = load_checkpoint(tmp_path / "term.npz")
    assert ckpt.state.n > 400
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_every_command_is_named_in_its_interruption_line():
    """The entry point names the command in "fastrnn NAME: interrupted" from its own list (it loads before
    the command line): that list must be the command line's."""
    from fastrnn import _entry, cli
    assert _entry.COMMANDS == tuple(cli.COMMANDS)


def test_stop_signals_first_stops_second_aborts_none_during_a_save(tmp_path, corpus_file):
    """The policy of the train loop's handler, called directly: no timing games."""
    from fastrnn._entry import Terminated
    from fastrnn.cli.exits import StopSignals
    trainer = Trainer(load_corpus(corpus_file), TrainConfig(hidden_size=8, seq_length=10, seed=0))
    stop = StopSignals(trainer)
    stop(signal.SIGTERM, None)  # the first: a stop at the end of the block
    assert trainer.stop_requested and stop.signum == signal.SIGTERM
    with stop.save():
        stop(signal.SIGINT, None)  # while a checkpoint is written: ignored
    with pytest.raises(KeyboardInterrupt) as e:
        stop(signal.SIGINT, None)  # the stop is still pending: stop at once
    assert not isinstance(e.value, Terminated)
    with pytest.raises(Terminated):
        stop(signal.SIGTERM, None)
    assert trainer.train(5) is False and not trainer.stop_requested  # honoured: the loop now saves
    stop(signal.SIGTERM, None)  # during that final save: ignored
    assert stop.signum == signal.SIGTERM


def test_train_restores_the_signal_handlers(tmp_path, corpus_file):
    from fastrnn.cli import main

    def handler(signum, frame):
        pass

    before = signal.signal(signal.SIGINT, handler), signal.signal(signal.SIGTERM, handler)
    try:
        assert main(["train", str(corpus_file), "--hidden-size", "8", "--seq-length", "10", "--steps", "5",
                     "--quiet", "--checkpoint", str(tmp_path / "h.npz")]) == 0
        assert signal.getsignal(signal.SIGINT) is handler and signal.getsignal(signal.SIGTERM) is handler
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


def test_slow_kernel_load_is_explained(tmp_path, corpus_file, monkeypatch, capsys):
    """A first run compiles for tens of seconds: the CLI says so rather than sitting silent."""
    import time

    from fastrnn import cli
    from fastrnn.cli import run_loop
    from fastrnn.trainer import Trainer

    real = Trainer.warm_up

    def slow_warm_up(self):
        time.sleep(0.5)
        real(self)

    monkeypatch.setattr(run_loop, "COMPILE_NOTE_AFTER_S", 0.1)
    monkeypatch.setattr(Trainer, "warm_up", slow_warm_up)
    args = ["train", str(corpus_file), "--hidden-size", "8", "--seq-length", "10", "--steps", "5", "--checkpoint"]
    assert cli.main(args + [str(tmp_path / "a.npz")]) == 0
    out = capsys.readouterr().out
    assert "compiling the training kernels" in out and "kernels ready after" in out

    monkeypatch.setattr(run_loop, "COMPILE_NOTE_AFTER_S", 30.0)  # a fast load says nothing
    assert cli.main(args + [str(tmp_path / "b.npz")]) == 0
    assert "compiling" not in capsys.readouterr().out


def test_sigterm_outside_training_acts_like_ctrl_c():
    from fastrnn._entry import Terminated
    from fastrnn.cli.exits import sigterm_as_interrupt
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():  # finally blocks and cleanup run, as for Ctrl-C
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert issubclass(Terminated, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGTERM) is before


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--learning-rate", "1e306", "--checkpoint-every", 1,
                "--steps", 100, "--checkpoint", "d.npz", cwd=tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    m = re.search(r"training diverged: .* step (\d+).*last good checkpoint is 'd\.npz' \(step (\d+)\)", r.stderr)
    assert m, r.stderr
    *warnings, error = r.stderr.splitlines()  # the loss blew up on the way: warned once, before the error
    assert error.startswith("fastrnn train: error: training diverged")
    assert len(warnings) <= 1 and all("smoothed loss" in w for w in warnings), r.stderr
    ckpt = load_checkpoint(tmp_path / "d.npz")  # loads: finite, consistent
    assert ckpt.state.n == int(m.group(2)) == int(m.group(1)) - 1


def test_divergence_leaves_an_existing_checkpoint_alone(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 5, "--checkpoint", "d.npz", "--quiet", cwd=tmp_path)
    before = (tmp_path / "d.npz").read_bytes()
    r = fastrnn("train", corpus_file, *SMALL, "--learning-rate", "1e308", "--steps", 100, "--checkpoint", "d.npz",
                "--overwrite", cwd=tmp_path)
    assert r.returncode == 1 and "no checkpoint was saved by this run; 'd.npz' is unchanged" in r.stderr
    assert (tmp_path / "d.npz").read_bytes() == before


def test_progress_bar_on_a_terminal(tmp_path, corpus_file):
    pty = pytest.importorskip("pty")
    import os
    import fcntl
    import termios
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a 120-column terminal
    proc = subprocess.Popen([sys.executable, "-m", "fastrnn", "train", str(corpus_file), *SMALL, "--steps", "400",
                             "--sample-every", "0"], cwd=tmp_path, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(master)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert proc.returncode == 0
    assert "400/400" in out and "chars/s" in out and "bpc" in out
    assert "iter 0, loss" not in out  # the bar replaces the plain lines


# --- bad input: one line on stderr, exit 2, no traceback, nothing overwritten ------------

@pytest.fixture
def setup(tmp_path, corpus_file):
    """A trained checkpoint, a sentinel checkpoint that must never change, and assorted bad files."""
    trainer = Trainer(load_corpus(corpus_file), TrainConfig(hidden_size=8, seq_length=10, seed=0))
    trainer.train(5)
    from fastrnn.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "good.npz", trainer)
    save_checkpoint(tmp_path / "sentinel.npz", trainer)
    good = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    arrays = npz_arrays(tmp_path / "good.npz")
    arrays["format_version"] = np.int64(99)
    np.savez(tmp_path / "v99.npz", **arrays)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "short.txt").write_text("too short")
    (tmp_path / "one.txt").write_text("N")
    (tmp_path / "latin1.txt").write_bytes("Now is the winter\nof our discontent, café".encode("latin-1"))
    (tmp_path / "other.txt").write_text(YORK_TEXT.replace("York", "Yorx"))
    (tmp_path / "alien.txt").write_text("Now is the ₿ winter ☃")
    (tmp_path / "folder").mkdir()
    (tmp_path / "hundred.txt").write_text("abcdefghij" * 10)
    return tmp_path


SENTINEL = ["--checkpoint", "sentinel.npz", "--overwrite"]

BAD_INPUT = {
    "missing corpus": (["train", "nope.txt", *SENTINEL], "'nope.txt' does not exist"),
    "corpus is a directory": (["train", "folder", *SENTINEL], "is a directory"),
    "empty corpus": (["train", "empty.txt", *SENTINEL], "is empty"),
    "corpus too short": (["train", "short.txt", "--val-fraction", "0", *SENTINEL], "needs at least 27"),
    "not utf-8": (["train", "latin1.txt", *SENTINEL], r"not UTF-8 text: byte 0xe9 at byte offset 40 \(line 2\).*--bytes"),
    "hidden size 0": (["train", "york.txt", "--hidden-size", "0", *SENTINEL], "--hidden-size must be a positive"),
    "negative seq length": (["train", "york.txt", "--seq-length", "-5", *SENTINEL], "--seq-length must be a positive"),
    "zero steps": (["train", "york.txt", "--steps", "0", *SENTINEL], "--steps must be a positive"),
    "zero learning rate": (["train", "york.txt", "--learning-rate", "0", *SENTINEL], "--learning-rate must be"),
    "nan learning rate": (["train", "york.txt", "--learning-rate", "nan", *SENTINEL], "--learning-rate must be"),
    "not a number": (["train", "york.txt", "--hidden-size", "many", *SENTINEL], "invalid int value: 'many'"),
    "val fraction 1": (["train", "york.txt", "--val-fraction", "1", *SENTINEL], r"--val-fraction must be in \[0, 1\)"),
    "val fraction negative": (["train", "york.txt", "--val-fraction", "-0.1", *SENTINEL], r"must be in \[0, 1\)"),
    "val leaves too little to train": (["train", "hundred.txt", "--val-fraction", "0.8", *SENTINEL],
                                       "20 characters are left to train on"),
    "val leaves nothing to evaluate": (["train", "hundred.txt", "--val-fraction", "0.001", *SENTINEL],
                                       "holds out nothing"),
    "resume missing": (["train", "--resume", "gone.npz", *SENTINEL], "'gone.npz' does not exist"),
    "resume truncated": (["train", "--resume", "truncated.npz", *SENTINEL], "not a usable fastrnn checkpoint"),
    "resume not a checkpoint": (["train", "--resume", "notes.txt", *SENTINEL], "not an .npz file"),
    "resume other version": (["train", "--resume", "v99.npz", *SENTINEL], "format version 99"),
    "resume contradicting flags": (["train", "--resume", "good.npz", "--hidden-size", "9", "--dtype", "float32",
                                    *SENTINEL], r"--hidden-size 9 \(checkpoint: 8\); --dtype float32 \(checkpoint"),
    "resume another corpus": (["train", "other.txt", "--resume", "good.npz", *SENTINEL], "is not the text"),
    "resume with fewer steps": (["train", "--resume", "good.npz", "--steps", "2", *SENTINEL], "fewer than the 5"),
    "checkpoint folder missing": (["train", "york.txt", "--checkpoint", "no/such/dir/c.npz"], "does not exist"),
    "checkpoint exists": (["train", "york.txt", "--checkpoint", "sentinel.npz"], "already exists"),
    "cache dir is a file": (["train", "york.txt", "--cache-dir", "notes.txt", *SENTINEL],
                            "cannot cache ids in --cache-dir 'notes.txt'"),
    "bad corpus, new cache dir": (["train", "latin1.txt", "--cache-dir", "new/cache", *SENTINEL],
                                  "not UTF-8 text"),  # new/ and new/cache are removed again
    "temperature 0": (["sample", "good.npz", "--temperature", "0"], "--temperature must be a positive"),
    "temperature negative": (["sample", "good.npz", "--temperature", "-1"], "--temperature must be a positive"),
    "length 0": (["sample", "good.npz", "--length", "0"], "--length must be a positive"),
    "prime unseen": (["sample", "good.npz", "--prime", "Now ₿☃ x"], r"--prime has 3 characters not in the model's "
                                                                     r"vocabulary: ' ?x'?, '₿', '☃'|--prime has 3"),
    "sample missing": (["sample", "gone.npz"], "does not exist"),
    "sample truncated": (["sample", "truncated.npz"], "not a usable fastrnn checkpoint"),
    "sample not a checkpoint": (["sample", "notes.txt"], "not an .npz file"),
    "sample other version": (["sample", "v99.npz"], "format version 99"),
    "eval unseen characters": (["eval", "good.npz", "alien.txt"], r"alien.txt has 2 characters .*'₿', '☃'"),
    "eval missing file": (["eval", "good.npz", "nope.txt"], "'nope.txt' does not exist"),
    "eval not utf-8": (["eval", "good.npz", "latin1.txt"], "byte offset 40 .*reads UTF-8 text"),
    "eval too short": (["eval", "good.npz", "one.txt"], "too short to score"),
    "eval truncated checkpoint": (["eval", "truncated.npz"], "not a usable fastrnn checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input(setup, case):
    args, pattern = BAD_INPUT[case]
    sentinel = (setup / "sentinel.npz").read_bytes()
    before = sorted(p.name for p in setup.iterdir())
    r = fastrnn(*args, cwd=setup)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("fastrnn"), r.stderr
    assert re.search(pattern, r.stderr), r.stderr
    assert (setup / "sentinel.npz").read_bytes() == sentinel
    assert sorted(p.name for p in setup.iterdir()) == before  # nothing new written either


def test_eval_without_file_needs_the_corpus_and_a_split(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 5, "--val-fraction", 0, "--checkpoint", "all.npz",
                "--quiet", cwd=tmp_path)
    assert r.returncode == 0
    r = fastrnn("eval", "all.npz", cwd=tmp_path)
    assert r.returncode == 2 and "--val-fraction 0" in r.stderr and "pass FILE" in r.stderr
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 5, "--checkpoint", "split.npz", "--quiet", cwd=tmp_path)
    corpus_file.unlink()
    r = fastrnn("eval", "split.npz", cwd=tmp_path)
    assert r.returncode == 2 and "is gone" in r.stderr and r.stderr.count("\n") == 1
    r = fastrnn("train", "--resume", "split.npz", "--steps", 10, cwd=tmp_path)
    assert r.returncode == 2 and "is gone" in r.stderr
    corpus_file.write_text(YORK_TEXT + "changed")
    r = fastrnn("eval", "split.npz", cwd=tmp_path)
    assert r.returncode == 2 and "is not the text" in r.stderr


# --- --cache-dir ------------------------------------------------------------------

def _listing(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_cache_dir_holds_the_ids_for_train_and_eval(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    r = fastrnn("train", data / "york.txt", *SMALL, "--steps", 20, "--sample-every", 0, "--cache-dir", "cache",
                "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _listing(data) == ["york.txt"]  # nothing beside the corpus
    (folder,) = (tmp_path / "cache").iterdir()
    assert folder.name.startswith("york.txt-") and folder.name.endswith(".fastrnn-ids")
    (ids,) = folder.glob("chars-*.ids")
    assert (folder / "chars.json").is_file() and ids.stat().st_size == len(YORK_TEXT)  # uint8 ids
    stamp = ids.stat().st_ino, ids.stat().st_mtime_ns
    listing = _listing(tmp_path / "cache")
    val = re.search(r"step 20: validation (\S+ nats/char, \S+ bits/char)", r.stdout).group(1)

    r = fastrnn("eval", "m.npz", "--cache-dir", "cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "held-out split" in r.stdout and val in r.stdout
    assert (ids.stat().st_ino, ids.stat().st_mtime_ns) == stamp  # reused, not rebuilt
    assert _listing(tmp_path / "cache") == listing and _listing(data) == ["york.txt"]

    r = fastrnn("train", "--resume", "m.npz", "--steps", 30, "--quiet", "--cache-dir", "cache", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (ids.stat().st_ino, ids.stat().st_mtime_ns) == stamp
    assert _listing(data) == ["york.txt"] and load_checkpoint(tmp_path / "m.npz").state.n == 30


def test_cache_dir_trains_on_a_read_only_corpus_folder(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: a read-only folder is still writable, so the test would prove nothing")
    data = tmp_path / "data"
    data.mkdir()
    (data / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    data.chmod(0o555)
    try:
        r = fastrnn("train", data / "york.txt", *SMALL, "--steps", 20, "--quiet", "--cache-dir", "cache",
                    "--checkpoint", "m.npz", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert list((tmp_path / "cache").glob("york.txt-*.fastrnn-ids/chars-*.ids"))
        r = fastrnn("eval", "m.npz", "--cache-dir", "cache", cwd=tmp_path)
        assert r.returncode == 0 and "held-out split" in r.stdout, r.stderr
        assert _listing(data) == ["york.txt"]
    finally:
        data.chmod(0o755)
