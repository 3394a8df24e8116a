"""Data-parallel training: N processes sharing a batch equal one process with N threads.

Two layers of tests. In-process, a group of Python threads stands in for the
MPI ranks (:class:`ThreadWorld`: the same calls as :class:`fastrnn.distributed.MPIWorld`,
the sums added in rank order as MPI adds two ranks' buffers), so every cell and
optimizer is checked cheaply, resume across process counts included. Then the
real thing: ``mpiexec -n 2 python -m fastrnn train`` (the ``mpi`` extra: mpi4py
and MPICH's wheel, which brings ``mpiexec``) against one process with 2
threads, and the faults: a rank killed with -9, SIGTERM / Ctrl-C to mpiexec,
bad input on one rank. The MPI tests skip without mpi4py or mpiexec, except
under CI (``CI`` set), where they fail.

Equivalence: the seed's case (1-layer rnn, Adagrad, clip by value; on the
engine at B > 1 too) is bit for bit (a rank's gradient is the one-process run's
chunk gradient, and two ranks' sum is that run's reduction); the other models (lstm, gru, stacks, other
optimizers) reduce over their rows in one GEMM in one process and in two
halves over two ranks, so they agree to rounding: within 1e-9 relative after
80 steps (the figure is ~1e-15).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import fastrnn
from fastrnn.checkpoint import load_checkpoint, save_checkpoint
from fastrnn.config import recipe_config, TrainConfig
from fastrnn.trainer import Trainer

STEPS = 80
RTOL = 1e-9
# (cell, layers, optimizer, clip, clip_norm): the seed's case, and every cell and optimizer on the engine
CASES = [("rnn", 1, "adagrad", 5.0, None), ("rnn", 2, "rmsprop", 5.0, None), ("lstm", 1, "adam", None, 1.0),
         ("lstm", 2, "adagrad", 5.0, None), ("gru", 2, "adam", 5.0, None), ("gru", 1, "rmsprop", None, 1.0)]


def config_of(case, threads, batch_size=4):
    cell, layers, optimizer, clip, clip_norm = case
    return TrainConfig(hidden_size=8, seq_length=5, batch_size=batch_size, seed=3, threads=threads, cell=cell,
                       num_layers=layers, optimizer=optimizer, clip=clip, clip_norm=clip_norm)


def seed_exact(case) -> bool:
    """The seed's model and update (1-layer rnn, Adagrad at a constant rate, clip by value): bit for bit."""
    cell, layers, optimizer, clip, clip_norm = case
    return (cell, layers, optimizer, clip_norm) == ("rnn", 1, "adagrad", None) and clip is not None


@pytest.fixture(scope="module")
def corpus():
    return fastrnn.load_corpus(None)


# --- a group of threads standing in for MPI ranks ---------------------------------------------------

class ThreadGroup:
    def __init__(self, size):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=120)
        self.slots = [None] * size

    def exchange(self, rank, value) -> list:
        """Every member's ``value``, by rank (an allgather)."""
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


class ThreadWorld:
    """One member of a :class:`ThreadGroup`, with the calls a :class:`fastrnn.Trainer` makes of its world."""

    def __init__(self, group, rank):
        self.group, self.rank, self.size = group, rank, group.size
        self.sums = 0

    def announce(self, *command):
        pass  # every member runs the same calls itself

    def sum_grads(self, flat):
        parts = self.group.exchange(self.rank, flat.copy())
        total = parts[0].copy()
        for part in parts[1:]:
            total += part
        flat[:] = total
        self.sums += 1

    def end_block(self, losses, stop, finite):
        rows = self.group.exchange(self.rank, (losses.copy(), stop, finite))
        total = np.zeros(losses.shape[0])
        for row in rows:
            total += row[0]
        return total, max(row[1] for row in rows), all(row[2] for row in rows)

    def collect_streams(self, share, full):
        parts = self.group.exchange(self.rank, [np.array(s) for s in share])
        if self.rank == 0:
            for i, whole in enumerate(full):
                Bl = parts[0][i].shape[1]
                for r in range(self.size):
                    whole[:, r * Bl:(r + 1) * Bl] = parts[r][i]


def run_ranks(size, make_trainer, steps):
    """``size`` trainers, one per thread of a group, each trained ``steps`` steps; their states collected."""
    group = ThreadGroup(size)
    trainers, errors = [None] * size, []

    def work(rank):
        try:
            trainer = make_trainer(ThreadWorld(group, rank))
            trainer.train(steps)
            trainer.collect_state()
            trainers[rank] = trainer
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)
            group.barrier.abort()

    threads = [threading.Thread(target=work, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return trainers


def rel_err(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_same_run(actual: Trainer, expected: Trainer, exact: bool):
    """Parameters, optimizer buffers, every stream's state, pointer and smoothed loss agree."""
    assert (actual.n, actual.p) == (expected.n, expected.p)
    pairs = [("params", actual.params.flat, expected.params.flat)]
    pairs += [(f"opt_state[{i}]", a.flat, b.flat) for i, (a, b) in enumerate(zip(actual.opt_state, expected.opt_state))]
    pairs += [(f"hidden[{i}]", a, b) for i, (a, b) in enumerate(zip(actual.hidden, expected.hidden))]
    pairs += [("smooth_loss", actual.smooth_loss, expected.smooth_loss)]
    for name, a, b in pairs:
        if exact:
            assert np.array_equal(a, b), f"{name}: not bit for bit (rel err {rel_err(a, b):.2e})"
        else:
            assert rel_err(a, b) <= RTOL, f"{name}: rel err {rel_err(a, b):.2e} > {RTOL}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-L{c[1]}-{c[2]}-{'norm' if c[4] else 'value'}")
def test_two_ranks_equal_two_threads(corpus, case):
    one = Trainer(corpus, config_of(case, threads=2))
    one.train(STEPS)
    ranks = run_ranks(2, lambda world: Trainer(corpus, config_of(case, threads=1), world=world), STEPS)
    assert_same_run(ranks[0], one, exact=seed_exact(case))
    assert np.array_equal(ranks[0].params.flat, ranks[1].params.flat)  # the replicas stay equal bit for bit
    assert all(np.array_equal(a.flat, b.flat) for a, b in zip(ranks[0].opt_state, ranks[1].opt_state))
    assert ranks[0].world.sums == STEPS  # one sum of the gradients per step


@pytest.mark.parametrize("case", [CASES[2], CASES[4]], ids=lambda c: f"{c[0]}-L{c[1]}-{c[2]}")
def test_two_ranks_with_dropout_draw_the_masks_of_one_process(corpus, case):
    """Each rank's share draws the masks of its own streams of the whole batch: the run equals one process's."""
    with_dropout = lambda threads: replace(config_of(case, threads=threads), dropout=0.3)  # noqa: E731
    one = Trainer(corpus, with_dropout(2))
    one.train(STEPS)
    ranks = run_ranks(2, lambda world: Trainer(corpus, with_dropout(1), world=world), STEPS)
    assert_same_run(ranks[0], one, exact=False)
    without = Trainer(corpus, config_of(case, threads=2))
    without.train(STEPS)
    assert rel_err(without.params.flat, one.params.flat) > 1e-3  # the masks did something


@pytest.mark.parametrize("case", CASES[:3], ids=lambda c: f"{c[0]}-L{c[1]}-{c[2]}")
def test_resume_across_process_counts(corpus, case, tmp_path):
    """2 ranks x 1 thread, a checkpoint, then 1 process x 2 threads, and the reverse: as one run of 2 threads."""
    one = Trainer(corpus, config_of(case, threads=2))
    one.train(STEPS)
    half = STEPS // 2
    ranks = run_ranks(2, lambda world: Trainer(corpus, config_of(case, threads=1), world=world), half)
    save_checkpoint(tmp_path / "ranks.npz", ranks[0])
    resumed = load_checkpoint(tmp_path / "ranks.npz").trainer(corpus, threads=2)
    resumed.train(STEPS - half)
    assert_same_run(resumed, one, exact=seed_exact(case))
    single = Trainer(corpus, config_of(case, threads=2))
    single.train(half)
    save_checkpoint(tmp_path / "one.npz", single)
    # Each rank loads its own copy, as each MPI rank does (a trainer works on the state it is given).
    ranks = run_ranks(2, lambda world: load_checkpoint(tmp_path / "one.npz").trainer(corpus, threads=1, world=world),
                      STEPS - half)
    assert_same_run(ranks[0], one, exact=seed_exact(case))


def test_four_ranks_and_two_threads_per_rank(corpus):
    """4 ranks of one stream, and 2 ranks x 2 threads, against 1 process x 4 threads (the seed's case)."""
    case = CASES[0]
    one = Trainer(corpus, config_of(case, threads=4))
    one.train(STEPS)
    four = run_ranks(4, lambda world: Trainer(corpus, config_of(case, threads=1), world=world), STEPS)
    # Two ranks add (c0 + c1) + ... where one process adds c0 + c1 + c2 + c3 in turn: rounding only.
    assert_same_run(four[0], one, exact=False)
    two = run_ranks(2, lambda world: Trainer(corpus, config_of(case, threads=2), world=world), STEPS)
    assert_same_run(two[0], one, exact=False)


def test_a_stop_on_any_rank_stops_all_at_one_block(corpus):
    """A stop asked on rank 1 only ends every rank's train() at the same step, with its signal."""
    config = config_of(CASES[2], threads=1)
    group = ThreadGroup(2)
    results = [None, None]

    def work(rank):
        trainer = Trainer(corpus, config, world=ThreadWorld(group, rank))
        done = trainer.train(3, callback=lambda t: t.request_stop(signal.SIGTERM) if rank == 1 else None,
                             every=1)
        results[rank] = (done, trainer.n, trainer.stop_signal)
        trainer.train(1)  # the stop is spent: both go on, still in step
        results[rank] += (trainer.n,)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results[0] == results[1] == (False, 2, signal.SIGTERM, 3)


def test_a_batch_the_processes_cannot_share_is_refused(corpus):
    group = ThreadGroup(2)
    with pytest.raises(fastrnn.trainer.ConfigError, match="not divisible by the 2 processes"):
        Trainer(corpus, config_of(CASES[0], threads=1, batch_size=3), world=ThreadWorld(group, 0))


# --- mpiexec for real --------------------------------------------------------------------------------

SMALL = ["--hidden-size", "8", "--seq-length", "5", "--batch-size", "4", "--seed", "3", "--sample-every", "0",
         "--eval-every", "0"]
MPI_TIMEOUT = 240


@pytest.fixture(scope="module")
def mpiexec():
    """The ``mpiexec`` beside this Python (the mpich wheel's), with mpi4py importable: skip without, fail under CI."""
    found = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                          os.environ.get("PATH", "")]))
    try:
        import mpi4py  # noqa: F401
    except ImportError as e:
        missing = f"mpi4py is not importable ({e}): pip install '.[mpi]'"
    else:
        missing = None if found else "no mpiexec on PATH: pip install '.[mpi]'"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return found


def mpi_command(mpiexec, n, *args):
    return [mpiexec, "-n", str(n), sys.executable, "-m", "fastrnn", *map(str, args)]


def run_mpi(mpiexec, n, *args, cwd):
    return subprocess.run(mpi_command(mpiexec, n, *args), cwd=cwd, capture_output=True, text=True,
                          timeout=MPI_TIMEOUT)


def cli_config(**overrides):
    base = dict(hidden_size=8, seq_length=5, batch_size=4, seed=3, threads=2)
    base.update(overrides)
    return TrainConfig(**base)


def test_mpiexec_equals_threads_and_resumes(mpiexec, corpus, tmp_path):
    """Seed case: 2 ranks x 1 thread, 80 steps, bit for bit as 1 process x 2 threads; and a 1-process
    checkpoint resumed by 2 ranks; an LSTM with Adam within 1e-9."""
    one = Trainer(corpus, cli_config())
    one.warm_up()  # the ranks load these kernels from the cache
    one.train(STEPS)
    r = run_mpi(mpiexec, 2, "train", *SMALL, "--threads", "1", "--steps", STEPS, "--checkpoint", "a.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "2 MPI ranks of 2 streams" in r.stdout
    assert_same_run(load_checkpoint(tmp_path / "a.npz").trainer(corpus), one, exact=True)

    half = Trainer(corpus, cli_config())
    half.train(STEPS // 2)
    save_checkpoint(tmp_path / "b.npz", half)
    r = run_mpi(mpiexec, 2, "train", "--resume", "b.npz", "--threads", "1", "--steps", STEPS, "--sample-every", 0,
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_same_run(load_checkpoint(tmp_path / "b.npz").trainer(corpus), one, exact=True)

    # The lstm recipe's other defaults (float32, warmup, cosine decay over the run's steps) hold on every rank.
    lstm = dict(cell="lstm", num_layers=2, optimizer="adam", clip=None, clip_norm=1.0)
    given = dict(hidden_size=8, seq_length=5, batch_size=4, seed=3, threads=2, **lstm)  # what SMALL and the flags say
    one = Trainer(corpus, replace(recipe_config(**given), decay_steps=STEPS))
    assert one.config.dtype == "float32" and one.config.scheduled
    one.train(STEPS)
    r = run_mpi(mpiexec, 2, "train", *SMALL, "--model", "lstm", "--num-layers", 2, "--optimizer", "adam",
                "--clip-norm", 1, "--threads", 1, "--steps", STEPS, "--checkpoint", "c.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_same_run(load_checkpoint(tmp_path / "c.npz").trainer(corpus), one, exact=False)


def test_mpiexec_time_budget_sizes_the_schedule_on_every_rank(mpiexec, corpus, tmp_path):
    """The lstm recipe under a time budget: rank 0 sizes the cosine decay from its speed and tells the other
    rank within the warmup; the run equals one process trained with that decay from its start."""
    r = run_mpi(mpiexec, 2, "train", *SMALL, "--model", "lstm", "--threads", 1, "--steps", 10**6,
                "--time-budget", 3, "--checkpoint", "t.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import re
    sized = re.search(r"cosine decay to 0.1x by step ([\d,]+) \(fixed at step ([\d,]+):", r.stdout)
    assert sized, r.stdout
    resumed = load_checkpoint(tmp_path / "t.npz").trainer(corpus)
    decay = int(sized.group(1).replace(",", ""))
    assert resumed.config.decay_steps == decay and resumed.n > 0
    assert int(sized.group(2).replace(",", "")) <= resumed.config.warmup_steps  # fixed within the warmup
    one = Trainer(corpus, replace(recipe_config(hidden_size=8, seq_length=5, batch_size=4, seed=3, threads=2,
                                                cell="lstm"), decay_steps=decay))
    one.train(resumed.n)
    assert_same_run(resumed, one, exact=False)


def test_mpiexec_bad_input_is_one_message_and_exit_2(mpiexec, tmp_path):
    """A batch the ranks cannot share, and a corpus only rank 0 can see: exit 2, one message, no hang."""
    r = run_mpi(mpiexec, 2, "train", *SMALL[:4], "--batch-size", 3, "--steps", 5, cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("error:") == 1 and "not divisible by the 2 MPI ranks" in r.stderr, r.stderr
    assert not (tmp_path / "tinyshakespeare.ckpt.npz").exists()
    # Rank 1 runs in another folder, where the corpus's relative path leads nowhere (a node without the file).
    (tmp_path / "here").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "here" / "text.txt").write_text("To be, or not to be, that is the question.\n" * 40)
    args = [sys.executable, "-m", "fastrnn", "train", "text.txt", *SMALL, "--steps", "5"]
    r = subprocess.run([mpiexec, "-n", "1", "-wdir", str(tmp_path / "here"), *args, ":",
                        "-n", "1", "-wdir", str(tmp_path / "elsewhere"), *args],
                       capture_output=True, text=True, timeout=MPI_TIMEOUT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("error:") == 1 and "rank 1:" in r.stderr and "text.txt" in r.stderr, r.stderr
    assert not (tmp_path / "here" / "text.ckpt.npz").exists()


@pytest.mark.parametrize("other", ["the same symbols", "one extra symbol"])
def test_mpiexec_ranks_whose_texts_differ_exit_2_naming_the_rank(mpiexec, tmp_path, other):
    """Each rank reads ``text.txt`` in its own folder (a node with another copy): the texts must be one."""
    text = "To be, or not to be, that is the question.\n" * 40
    changed = {"the same symbols": text.replace("question", "questoin", 1), "one extra symbol": text + "!"}[other]
    for folder, content in (("here", text), ("elsewhere", changed)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "text.txt").write_text(content)
    args = [sys.executable, "-m", "fastrnn", "train", "text.txt", *SMALL, "--steps", "5"]
    r = subprocess.run([mpiexec, "-n", "1", "-wdir", str(tmp_path / "here"), *args, ":",
                        "-n", "1", "-wdir", str(tmp_path / "elsewhere"), *args],
                       capture_output=True, text=True, timeout=MPI_TIMEOUT)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.startswith("fastrnn train: error: rank 1: its corpus "), r.stderr
    assert repr(str(tmp_path / "elsewhere" / "text.txt")) in r.stderr and "is not rank 0's" in r.stderr
    assert not (tmp_path / "here" / "text.ckpt.npz").exists()


def _descendants(pid) -> list:
    children = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if int(fields.get("PPid", "0").strip()) == pid:
            child = int(status.parent.name)
            children += [child] + _descendants(child)
    return children


def _rank_pid(pid, rank):
    for child in _descendants(pid):
        try:
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in env and b"fastrnn" in Path(f"/proc/{child}/cmdline").read_bytes():
            return child
    return None


def _start_long_run(mpiexec, tmp_path, checkpoint):
    proc = subprocess.Popen(mpi_command(mpiexec, 2, "train", *SMALL, "--threads", 1, "--steps", 10**9,
                                        "--checkpoint-every", 50, "--log-every", 50, "--checkpoint", checkpoint),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + MPI_TIMEOUT
    while not (tmp_path / checkpoint).exists():  # training is under way and has saved once
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run ended or stalled before its first checkpoint: {proc.communicate()}")
        time.sleep(0.1)
    return proc


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_mpiexec_saves_once(mpiexec, tmp_path, signum, status):
    proc = _start_long_run(mpiexec, tmp_path, "s.npz")
    try:
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert err.count("saved checkpoint s.npz") == 1 and "Traceback" not in err, err
    ckpt = load_checkpoint(tmp_path / "s.npz")
    assert f"at step {ckpt.state.n:,};" in err


def test_a_rank_killed_with_9_ends_the_job(mpiexec, tmp_path):
    proc = _start_long_run(mpiexec, tmp_path, "k.npz")
    try:
        rank1 = _rank_pid(proc.pid, 1)
        assert rank1 is not None
        os.kill(rank1, signal.SIGKILL)
        t0 = time.monotonic()
        proc.communicate(timeout=60)  # within a minute: no rank left waiting in a collective
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert elapsed < 60
    ckpt = load_checkpoint(tmp_path / "k.npz")  # the last checkpoint is whole
    assert ckpt.state.n >= 50 and ckpt.state.n % 50 == 0
