"""What the README promises beyond the happy path, run for real: one run per checkpoint, a corpus cache that
notices in-place edits, signals wherever they land, huge values refused in one line, finite "last good"
checkpoints, and the small ones (--overwrite, exploding loss, prepare's cleanup, eval from stdin)."""
from __future__ import annotations

import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from fastrnn import limits
from fastrnn.checkpoint import load_checkpoint, save_checkpoint
from fastrnn.corpus import load_corpus
from fastrnn.lock import CheckpointBusy, CheckpointLock, lock_path
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from conftest import YORK_TEXT, rewrite_npz
from test_cli import fastrnn

SMALL = ["--hidden-size", "16", "--seq-length", "10"]
CLI = [sys.executable, "-m", "fastrnn"]


def _lines(stream):
    """A queue of the lines of ``stream``, read by a thread; None once it has ended."""
    lines = queue.Queue()

    def read():
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _rest(lines, timeout=60):
    """The lines left in ``lines`` up to the end of its stream."""
    return "".join(iter(lambda: lines.get(timeout=timeout), None))


def _wait_for(lines, predicate, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(1, deadline - time.monotonic()))
        assert line is not None, "the output ended first"
        if predicate(line):
            return line


def _start_training(tmp_path, corpus_file, checkpoint, *extra):
    """A long ``fastrnn train``, returned once it is training (a few log lines seen), and its stdout lines."""
    proc = subprocess.Popen([*CLI, "train", str(corpus_file), *SMALL, "--steps", "100000000", "--log-every", "200",
                             "--sample-every", "0", "--checkpoint", checkpoint, *extra],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = _lines(proc.stdout)
    seen = 0
    while seen < 3:
        seen += _wait_for(lines, lambda line: line.startswith("iter ")) is not None
    return proc, lines


# --- 1. one run per checkpoint ----------------------------------------------------------------

def test_a_second_run_on_the_same_checkpoint_exits_2_naming_the_holder(tmp_path, corpus_file):
    first, _ = _start_training(tmp_path, corpus_file, "same.npz", "--seed", "11")
    try:
        start = time.monotonic()
        second = fastrnn("train", corpus_file, *SMALL, "--steps", 30000, "--seed", 22, "--checkpoint", "same.npz",
                         cwd=tmp_path)
        assert second.returncode == 2, second.stderr
        assert time.monotonic() - start < 30  # at once: not after training
        assert f"is in use by process {first.pid}" in second.stderr and second.stderr.count("\n") == 1
        assert lock_path(tmp_path / "same.npz").read_text().strip() == str(first.pid)
        # nor can a resume or an --overwrite take it
        r = fastrnn("train", corpus_file, *SMALL, "--steps", 10, "--checkpoint", "same.npz", "--overwrite",
                    cwd=tmp_path)
        assert r.returncode == 2 and f"process {first.pid}" in r.stderr
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143, first.stderr.read()
    finally:
        first.kill()
    assert load_checkpoint(tmp_path / "same.npz").config.seed == 11  # the first run's, whole
    assert not lock_path(tmp_path / "same.npz").exists()  # released (and removed) on the way out
    r = fastrnn("train", "--resume", "same.npz", "--steps", load_checkpoint(tmp_path / "same.npz").state.n + 5,
                "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_a_lock_left_by_a_dead_run_is_not_in_the_way(tmp_path, corpus_file):
    lock_path(tmp_path / "c.npz").write_text("999999999\n")  # a crashed run's file: nobody holds its lock
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 5, "--quiet", "--checkpoint", "c.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert load_checkpoint(tmp_path / "c.npz").state.n == 5 and not lock_path(tmp_path / "c.npz").exists()


def test_the_lock_holds_within_one_process_too(tmp_path):
    with CheckpointLock(tmp_path / "x.npz"):
        assert lock_path(tmp_path / "x.npz").read_text().strip() == str(os.getpid())
        with pytest.raises(CheckpointBusy, match=f"process {os.getpid()}"):
            CheckpointLock(tmp_path / "x.npz").acquire()
    with CheckpointLock(tmp_path / "x.npz"):  # free again
        pass


@pytest.mark.parametrize("at", ["the first try", "the write of the pid"])
def test_a_lock_stopped_by_a_signal_while_it_is_taken_leaves_no_file(tmp_path, monkeypatch, at):
    import fastrnn.lock as lock

    module, name = (lock.fcntl, "flock") if at == "the first try" else (lock.os, "pwrite")
    real, calls = getattr(module, name), []

    def interrupted_once(*args):
        calls.append(args)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as a signal handler's exception arrives
        return real(*args)
    monkeypatch.setattr(module, name, interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        lock.FileLock(tmp_path / "x.lock").acquire()
    assert list(tmp_path.iterdir()) == []


def test_a_lock_stopped_while_waiting_leaves_the_holders_file(tmp_path, monkeypatch):
    import fastrnn.lock as lock

    with CheckpointLock(tmp_path / "x.npz"):
        blocking_flock = lock.fcntl.flock

        def interrupted_wait(fd, how):
            if how == lock.fcntl.LOCK_EX:  # the blocking wait
                raise KeyboardInterrupt
            return blocking_flock(fd, how)
        monkeypatch.setattr(lock.fcntl, "flock", interrupted_wait)
        with pytest.raises(KeyboardInterrupt):
            lock.FileLock(lock_path(tmp_path / "x.npz")).acquire(wait=True)
        monkeypatch.undo()
        assert lock_path(tmp_path / "x.npz").read_text().strip() == str(os.getpid())  # still the holder's
    assert list(tmp_path.iterdir()) == []


def test_a_save_never_replaces_a_file_another_program_wrote(tmp_path, corpus_file):
    proc, _ = _start_training(tmp_path, corpus_file, "mine.npz", "--checkpoint-every", "0", "--seed", "1")
    try:
        (tmp_path / "mine.npz").write_text("someone else's file")  # appears while the run goes on
        proc.send_signal(signal.SIGTERM)  # the run now saves
        assert proc.wait(timeout=60) == 2
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert "'mine.npz' appeared since this run started" in err and "not replacing it" in err, err
    assert "Traceback" not in err
    assert (tmp_path / "mine.npz").read_text() == "someone else's file"


# --- 2. a corpus changed in place ---------------------------------------------------------------

def test_a_corpus_edited_in_place_with_its_mtime_restored_is_prepared_again(tmp_path, corpus_file):
    text = YORK_TEXT.replace("York", "the quick brown fox")
    corpus_file.write_text(text, encoding="utf-8")
    old = time.time_ns() - 3600 * 10 ** 9
    os.utime(corpus_file, ns=(old, old))  # an hour old: size and mtime alone would make the cache "fresh"
    r = fastrnn("prepare", corpus_file, cwd=tmp_path)
    assert r.returncode == 0 and "wrote" in r.stdout, r.stderr
    time.sleep(2.1)  # past the 2 s in which a time proves nothing: only the stamps decide now
    r = fastrnn("prepare", corpus_file, cwd=tmp_path)
    assert r.returncode == 0 and "up to date" in r.stdout, r.stdout
    st = corpus_file.stat()
    corpus_file.write_text(text.replace("fox", "FOX"), encoding="utf-8")  # same size,
    os.utime(corpus_file, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, as after cp -p or touch -d
    r = fastrnn("prepare", corpus_file, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "up to date" not in r.stdout, r.stdout
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 5, "--quiet", "--checkpoint", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {"F", "O", "X"} <= {chr(c) for c in load_checkpoint(tmp_path / "m.npz").vocab.codes}
    r = fastrnn("eval", "m.npz", corpus_file, cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_a_copy_with_the_same_content_and_mtime_is_reused_after_hashing(tmp_path, corpus_file):
    from fastrnn import prepared as prep
    old = time.time_ns() - 3600 * 10 ** 9
    os.utime(corpus_file, ns=(old, old))
    prep.prepare_corpus(corpus_file)
    copy = tmp_path / "copy.txt"
    copy.write_bytes(corpus_file.read_bytes())
    os.utime(copy, ns=(old, old))
    os.replace(copy, corpus_file)  # another inode, same bytes, same mtime (rsync -a)
    assert prep.cache_status(corpus_file) == "hashed"


# --- 3. signals wherever they land ----------------------------------------------------------------

@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_during_the_final_validation_saves_and_exits_128_plus_it(tmp_path, signum, status):
    # Half of tiny shakespeare held out: the final validation takes seconds; it starts right after the
    # log line of the last step (--eval-every 0: no validation before it).
    proc = subprocess.Popen([*CLI, "train", "--hidden-size", "64", "--val-fraction", "0.5", "--steps", "101",
                             "--log-every", "100", "--eval-every", "0", "--sample-every", "0", "--seed", "1",
                             "--checkpoint", "v.npz"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = _lines(proc.stdout)
        _wait_for(lines, lambda line: line.startswith("iter 100,"))
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == status
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert "Traceback" not in err
    how = "terminated \\(SIGTERM\\)" if signum == signal.SIGTERM else "interrupted"
    assert re.fullmatch(rf"fastrnn train: {how} at step 101; saved checkpoint v\.npz .*\n", err), err
    assert load_checkpoint(tmp_path / "v.npz").state.n == 101


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_importing_exits_128_plus_it_without_a_traceback(tmp_path, corpus_file, signum, status):
    env = dict(os.environ, FASTRNN_TEST_ANNOUNCE_IMPORT="1")
    proc = subprocess.Popen([*CLI, "train", str(corpus_file), *SMALL, "--steps", "100000000", "--quiet",
                             "--checkpoint", "i.npz"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        errors = _lines(proc.stderr)
        assert errors.get(timeout=60) == "fastrnn: importing\n"  # handlers are in place; numpy, Numba next
        proc.send_signal(signum)
        assert proc.wait(timeout=120) == status
        err = _rest(errors)
    finally:
        proc.kill()
    assert "Traceback" not in err
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    assert err.startswith(f"fastrnn train: {word}") and err.count("\n") == 1, err
    assert not lock_path(tmp_path / "i.npz").exists()


# Numba's compiler calls back into Python (llvmlite's object-cache callback, through ctypes); a Ctrl-C that lands
# there raises inside the callback, which prints the exception and drops it. Here the kernels' warm-up first runs
# such a callback while the signal arrives.
_DROPPED_IN_A_CALLBACK = """
import ctypes, os, signal, sys
from fastrnn import _entry
from fastrnn.trainer import Trainer

warm_up = Trainer.warm_up

def warm_up_with_a_signal_in_a_callback(self):
    def callback():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # Python runs the handler here, inside the callback
            pass
    ctypes.CFUNCTYPE(None)(callback)()
    warm_up(self)

Trainer.warm_up = warm_up_with_a_signal_in_a_callback
sys.exit(_entry.main(sys.argv[1:]))
"""


def test_a_signal_dropped_by_a_callback_while_compiling_still_interrupts(tmp_path, corpus_file):
    proc = subprocess.run([sys.executable, "-c", _DROPPED_IN_A_CALLBACK, "train", str(corpus_file), *SMALL,
                           "--steps", "3", "--quiet", "--checkpoint", "d.npz"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "Exception ignored on calling ctypes callback" in proc.stderr  # the signal's exception was dropped
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.endswith("fastrnn train: interrupted\n"), proc.stderr
    assert not (tmp_path / "d.npz").exists() and not lock_path(tmp_path / "d.npz").exists()


# --- 4. huge values: one line, exit 2 -----------------------------------------------------------------

@pytest.fixture
def small_checkpoint(tmp_path, corpus_file):
    trainer = Trainer(load_corpus(corpus_file), TrainConfig(hidden_size=8, seq_length=10, seed=0))
    trainer.train(5)
    save_checkpoint(tmp_path / "m.npz", trainer)
    return tmp_path / "m.npz"


HUGE = {
    "sample length beyond int64": (["sample", "m.npz", "--length", "99999999999999999999"],
                                   r"argument --length: 99999999999999999999 is out of range"),
    "train sample length beyond int64": (["train", "york.txt", "--sample-length", "99999999999999999999",
                                          "--quiet", "--checkpoint", "n.npz"], r"argument --sample-length: .* out of range"),
    "hidden size the machine cannot hold": (["train", "york.txt", "--hidden-size", "1000000", "--steps", "1",
                                             "--checkpoint", "n.npz"],
                                            r"--hidden-size 1,000,000 needs about [\d,.]+ [GTM]iB of memory, more than "
                                            r"this machine's"),
    "seq length the machine cannot hold": (["train", "--seq-length", "1000000", "--hidden-size", "100000",
                                            "--val-fraction", "0", "--steps", "1", "--checkpoint", "n.npz"],
                                           r"--seq-length 1,000,000 needs about .* more than this machine.s"),
    "sample length the machine cannot hold": (["train", "york.txt", "--sample-length", "1000000000000000",
                                               "--quiet", "--checkpoint", "n.npz"],
                                              r"--sample-length 1,000,000,000,000,000 needs about"),
}


@pytest.mark.parametrize("case", list(HUGE))
def test_huge_values_get_one_line_and_exit_2(tmp_path, corpus_file, small_checkpoint, case):
    args, pattern = HUGE[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = fastrnn(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert re.search(pattern, r.stderr), r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_sample_streams_a_length_larger_than_memory(tmp_path, small_checkpoint):
    proc = subprocess.Popen([*CLI, "sample", "m.npz", "--length", "10000000000", "--seed", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        head = proc.stdout.read(1 << 20)  # the text comes as it is drawn
        proc.stdout.close()  # like `| head`
        assert proc.wait(timeout=60) == 0
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert len(head) == 1 << 20 and err == b"", err
    model = load_checkpoint(small_checkpoint).model
    assert head.decode("utf-8").startswith(model.sample(5000, seed=1))


def test_streamed_samples_equal_the_api_across_pieces(tmp_path, small_checkpoint):
    from fastrnn.rnn import SAMPLE_CHUNK
    n = 2 * SAMPLE_CHUNK + 123
    model = load_checkpoint(small_checkpoint).model
    r = fastrnn("sample", "m.npz", "--length", n, "--seed", 5, "--prime", "Now", "--temperature", 0.7, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Now" + model.sample(n, prime="Now", temperature=0.7, seed=5) + "\n"
    assert "".join(model.sample_chunks(1000, seed=2, chunk=7)) == model.sample(1000, seed=2)


def test_training_bytes_grow_with_the_flags():
    model, seqs = limits.training_bytes(65, 100_000, 25, dtype=np.float64)
    assert 70 * 2 ** 30 < model < 1000 * 2 ** 30  # the 74.5 GiB of one (H, H) float64 matrix, and more
    assert seqs < model
    total, available = limits.memory_limits()
    assert total is None or total > 0


# --- 5. "last good" means finite outputs; eval of non-finite outputs is an error ---------------------

def test_outputs_bounded():
    from fastrnn.params import init_params
    p = init_params(5, 4, seed=0, dtype=np.float32)
    assert limits.outputs_bounded(p)
    huge = p._replace(Why=np.full_like(p.Why, 1e38))
    assert not limits.outputs_bounded(huge) and np.isfinite(huge.Why).all()


def test_eval_of_non_finite_outputs_exits_1(tmp_path, corpus_file):
    trainer = Trainer(load_corpus(corpus_file), TrainConfig(hidden_size=8, seq_length=10, seed=0, dtype="float32"))
    trainer.train(5)
    save_checkpoint(tmp_path / "ok.npz", trainer)
    with np.load(tmp_path / "ok.npz") as npz:
        why = np.full_like(npz["Why"], 3e38)  # finite, but the logits overflow
    rewrite_npz(tmp_path / "ok.npz", tmp_path / "big.npz", Why=why)
    for args in (["big.npz"], ["big.npz", corpus_file]):
        r = fastrnn("eval", *args, cwd=tmp_path)
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "the model's outputs are not finite" in r.stderr and r.stdout == ""
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


def test_the_last_good_checkpoint_evaluates_to_a_finite_score(tmp_path):
    # The run: float32 at learning-rate 1e37 overflows the logits while the parameters stay finite.
    r = fastrnn("train", "--hidden-size", 16, "--steps", 500, "--seed", 1, "--learning-rate", "1e37", "--dtype",
                "float32", "--batch-size", 4, "--threads", 2, "--checkpoint-every", 5, "--checkpoint", "d.npz",
                "--quiet", cwd=tmp_path)
    assert r.returncode == 1 and "training diverged" in r.stderr, r.stderr
    if "no checkpoint was saved" in r.stderr:
        assert not (tmp_path / "d.npz").exists()
        return
    assert "last good checkpoint is 'd.npz'" in r.stderr
    r = fastrnn("eval", "d.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert math.isfinite(float(re.search(r"(\S+) nats/char", r.stdout).group(1))), r.stdout


# --- 6. the smaller ones ----------------------------------------------------------------------------

def test_overwrite_replaces_only_a_checkpoint(tmp_path, corpus_file):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 5, "--checkpoint", notes, "--overwrite", cwd=tmp_path)
    assert r.returncode == 2 and "--overwrite replaces only a fastrnn checkpoint" in r.stderr, r.stderr
    assert notes.read_text() == "my notes"
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    r = fastrnn("train", corpus_file, *SMALL, "--steps", 5, "--checkpoint", "other.npz", "--overwrite", cwd=tmp_path)
    assert r.returncode == 2 and "without fastrnn's format marker" in r.stderr


def test_a_loss_that_explodes_without_reaching_nan_is_warned_of(tmp_path, corpus_file):
    r = fastrnn("train", corpus_file, *SMALL, "--seed", 1, "--steps", 300, "--learning-rate", "1e300",
                "--checkpoint", "e.npz", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert re.fullmatch(r"fastrnn train: warning: at step [\d,]+ the smoothed loss is \S+ nats/char, over 100 "
                        r"times a uniform guess's \S+: training is blowing up \(a lower learning rate may help\)\n",
                        r.stderr), r.stderr


#: ``python -c`` running ``fastrnn ARGS``, each background thread of prepare started ``pause`` s late (a slow
#: machine: the prepare stays under way long enough to be caught), and with ``term_at`` > 0 a real SIGTERM
#: sent to itself just as the ``term_at``-th thread is about to start (the moment where it once raised
#: "cannot join thread before it is started").
_SLOW_CLI = """
import os, runpy, signal, sys, threading, time
start, calls = threading.Thread.start, [0]
def late_start(self):
    calls[0] += 1
    time.sleep({pause})
    if calls[0] == {term_at}:
        os.kill(os.getpid(), signal.SIGTERM)
    start(self)
threading.Thread.start = late_start
sys.argv = ["fastrnn", *sys.argv[1:]]
runpy.run_module("fastrnn", run_name="__main__")
"""


def _slow_cli(*args, pause=0.05, term_at=0, **kwargs):
    return subprocess.Popen([sys.executable, "-c", _SLOW_CLI.format(pause=pause, term_at=term_at), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


@pytest.fixture(scope="module")
def big_text(tmp_path_factory):
    """A 64 MB non-ASCII text (big.txt): a second or more to prepare."""
    folder = tmp_path_factory.mktemp("big")
    line = "héllo wörld ☃ naïve Ωμέγα " * 40 + "\n"
    with open(folder / "big.txt", "w", encoding="utf-8") as f:
        for _ in range(64_000_000 // len(line.encode())):
            f.write(line)
    return folder / "big.txt"


def _until(condition, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the prepare ended first"
        assert time.monotonic() < deadline
        time.sleep(0.002)


@pytest.mark.parametrize("moment", ["its cache folder appears", "its id file appears", "a thread is started"])
def test_prepare_stopped_by_sigterm_exits_143_and_leaves_no_cache_folder(big_text, moment):
    folder = big_text.with_name(big_text.name + ".fastrnn-ids")
    shutil.rmtree(folder, ignore_errors=True)  # one failure here does not fail the next
    proc = _slow_cli("prepare", big_text.name, cwd=big_text.parent, term_at=3 if moment == "a thread is started" else 0)
    try:
        if moment == "its cache folder appears":  # the first pass has begun
            _until(folder.exists, proc)
            proc.send_signal(signal.SIGTERM)
        elif moment == "its id file appears":  # the second pass has begun
            _until(lambda: folder.exists() and any(p.name.endswith(".ids.tmp") for p in folder.iterdir()), proc)
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 143
        err = proc.stderr.read()
    finally:
        proc.kill()
    assert err == "fastrnn prepare: terminated\n"
    assert not folder.exists()


def test_a_prepare_waits_for_another_of_the_same_corpus_and_survives_its_interruption(big_text):
    from fastrnn.prepared import load_prepared

    folder = big_text.with_name(big_text.name + ".fastrnn-ids")
    shutil.rmtree(folder, ignore_errors=True)
    first = _slow_cli("prepare", big_text.name, cwd=big_text.parent, pause=0.2)  # slow: still at it below
    second = None
    try:
        _until(folder.exists, first)
        second = _slow_cli("prepare", big_text.name, cwd=big_text.parent, pause=0)
        err = _lines(second.stderr)
        # the second waits for the first, saying so (or, unlocked, builds into the same folder beside it)
        _until(lambda: not err.empty() or any(f".{second.pid}." in p.name for p in folder.iterdir()), second)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143
        assert second.wait(timeout=120) == 0, _rest(err)
        said = _rest(err)
    finally:
        for proc in (first, second):
            if proc is not None:
                proc.kill()
    assert said == f"fastrnn prepare: waiting for process {first.pid}, which is preparing big.txt too\n"
    assert first.stderr.read() == "fastrnn prepare: terminated\n"
    prepared = load_prepared(big_text)
    assert len(prepared) == len(big_text.read_text(encoding="utf-8"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(["chars.json", prepared.ids_path.name])  # no temp, no lock
    del prepared
    shutil.rmtree(folder)


def test_eval_reads_standard_input(tmp_path, small_checkpoint):
    (tmp_path / "line.txt").write_text("Now is the winter")
    from_file = fastrnn("eval", "m.npz", "line.txt", cwd=tmp_path)
    from_stdin = fastrnn("eval", "m.npz", "-", cwd=tmp_path, input="Now is the winter")
    assert from_file.returncode == from_stdin.returncode == 0, from_stdin.stderr
    assert from_stdin.stdout == from_file.stdout.replace("line.txt", "standard input")
    r = fastrnn("eval", "m.npz", "-", cwd=tmp_path, input="")
    assert r.returncode == 2 and "standard input is empty" in r.stderr


def test_the_distinct_count_has_a_thousands_separator(tmp_path):
    text = "".join(chr(0x4E00 + i) for i in range(1500)) * 3
    (tmp_path / "han.txt").write_text(text, encoding="utf-8")
    r = fastrnn("prepare", "han.txt", cwd=tmp_path)
    assert r.returncode == 0 and "1,500 distinct" in r.stdout, r.stdout
    r = fastrnn("train", "han.txt", "--hidden-size", 8, "--steps", 1, "--sample-every", 0, cwd=tmp_path)
    assert r.returncode == 0 and "1,500 distinct" in r.stdout, r.stderr
