"""Data-parallel training over MPI: ``mpiexec -n N fastrnn train ...`` (or ``srun``), one rank per process.

Imported only when an MPI launcher started this process among several
(:func:`launched_size`); fastrnn without mpi4py is unchanged. The pattern is
Horovod's and PyTorch DDP's: every rank holds the whole model, trains its
share of the B streams of a step (rank r: streams r * B/N ... (r + 1) * B/N - 1),
the shares' gradients are summed by one ``Allreduce`` on the flat gradient
buffer, and every rank applies the same update, so the replicas stay equal
(see :class:`fastrnn.Trainer`).

Rank 0 leads: it parses, checks and locks as a one-process run does, prepares
the corpus, prints, validates, samples and writes checkpoints. The other ranks
follow (:func:`follow`): they wait for rank 0's commands, broadcast from it
(:meth:`MPIWorld.announce`), and answer each with the same collectives:

- ``("build", setup)``: make this rank's trainer (the corpus through its
  prepared memmap, the checkpoint when resuming), warm its kernels up, and
  send back an error message or None (a gather): any bad input on any rank
  ends every rank with exit status 2 and one message, from rank 0 (a corpus
  whose fingerprint, length and sha256, is not rank 0's included: a file of
  the same name holding another text on this rank's node or folder);
- ``("block", k)``: k training steps (:meth:`fastrnn.Trainer.advance`): one
  ``Allreduce`` per step, then one ``Allgather`` of the losses, the stop
  requests and whether the states are finite, so every rank stops (a signal
  on any rank) or diverges at the same step;
- ``("collect",)``: gather the hidden states of every stream to rank 0 (before
  a checkpoint);
- ``("decay", steps)``: fix a cosine schedule's decay-steps, as rank 0 sized it
  to the time budget (:meth:`fastrnn.Trainer.fix_decay`);
- ``("exit", status)``: leave with rank 0's exit status.

A rank that dies (``kill -9``) makes the launcher end the others (MPICH's
Hydra does by default); rank 0 leaving in the middle of a block (a second
Ctrl-C) calls ``MPI_Abort`` with its exit status, so no rank is left waiting
in a collective.
"""
from __future__ import annotations

import os
import signal
import sys
import traceback

import numpy as np

#: Environment variables by which launchers tell a process how many were started, and its rank:
#: MPICH's Hydra and Slurm's PMI-2 (PMI_*), Open MPI (OMPI_COMM_WORLD_*), PMIx launchers (PMIX_RANK).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
INSTALL_HINT = "pip install 'fastrnn[mpi]'"


class MPIUnavailable(RuntimeError):
    """Launched by an MPI launcher among several processes, but mpi4py cannot be imported."""


def launched_size() -> int | None:
    """How many processes the MPI launcher started (None: not launched by one; 0: one that does not say)."""
    for name in SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 0 if any(os.environ.get(name) for name in RANK_VARIABLES) else None


def launched_rank() -> int:
    """This process's rank as its launcher's environment says (0 when there is none)."""
    for name in RANK_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 0


def world_from_environment():
    """An :class:`MPIWorld` when an MPI launcher started this process among two or more, else None.

    Raises :class:`MPIUnavailable` when it did but mpi4py is not installed.
    """
    size = launched_size()
    if size is None or size == 1:
        return None
    try:
        import mpi4py
        mpi4py.rc.thread_level = "funneled"  # only the main thread calls MPI
        from mpi4py import MPI
    except ImportError as e:
        raise MPIUnavailable(f"started by an MPI launcher{f' as one of {size} processes' if size else ''}, but "
                             f"mpi4py is not importable ({e}); install it with {INSTALL_HINT}") from None
    comm = MPI.COMM_WORLD
    return MPIWorld(comm, MPI) if comm.Get_size() > 1 else None


class MPIWorld:
    """The ranks of one run: rank 0's commands, and the collectives of a data-parallel step.

    ``busy`` is True from a command's announcement until its collectives are
    done: rank 0 leaving while busy must abort the job, since the others
    are inside a collective.
    """

    def __init__(self, comm, mpi):
        self.comm, self._mpi = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.busy = False
        self.allreduce_calls, self.allreduce_seconds = 0, 0.0

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    # --- commands: broadcast by rank 0, received by the others --------------------

    def announce(self, *command):
        """Rank 0: broadcast ``command`` to the others (they are in :meth:`receive`); elsewhere nothing."""
        if self.is_leader:
            self.busy = command[0] != "exit"
            self.comm.bcast(command, root=0)

    def receive(self) -> tuple:
        """Ranks > 0: the next command of rank 0."""
        return self.comm.bcast(None, root=0)

    def gather(self, value) -> list | None:
        """Every rank's ``value`` on rank 0 (a list by rank), None elsewhere."""
        values = self.comm.gather(value, root=0)
        self.busy = False
        return values

    # --- the collectives of training -----------------------------------------------

    def sum_grads(self, flat: np.ndarray):
        """``flat`` (the flat gradient buffer, 1-D C-contiguous) summed over the ranks, in place."""
        import time
        t0 = time.perf_counter()
        self.comm.Allreduce(self._mpi.IN_PLACE, flat, op=self._mpi.SUM)
        self.allreduce_seconds += time.perf_counter() - t0
        self.allreduce_calls += 1

    def end_block(self, losses: np.ndarray, stop: int, finite: bool):
        """After a block: ``(losses summed over the ranks in rank order, the largest stop request, all finite)``."""
        k = losses.shape[0]
        row = np.empty(k + 2, np.float64)
        row[:k], row[k], row[k + 1] = losses, stop, 1.0 if finite else 0.0
        rows = np.empty((self.size, k + 2), np.float64)
        self.comm.Allgather(row, rows)
        self.busy = False
        total = np.zeros(k, np.float64)
        for r in range(self.size):  # rank order: as a one-process step adds its chunks
            total += rows[r, :k]
        return total, int(rows[:, k].max()), bool(rows[:, k + 1].all())

    def collect_streams(self, share: tuple, full: tuple):
        """Copy each rank's ``share`` (views (L, Bl, H)) into ``full`` (L, B, H) on rank 0."""
        for part, whole in zip(share, full):
            send = np.ascontiguousarray(part)
            recv = np.empty((self.size,) + send.shape, send.dtype) if self.is_leader else None
            self.comm.Gather(send, recv, root=0)
            if self.is_leader:
                Bl = send.shape[1]
                for r in range(self.size):
                    whole[:, r * Bl:(r + 1) * Bl] = recv[r]
        self.busy = False

    def abort(self, status: int):
        """End every rank of the job now with ``status`` (MPI_Abort)."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(int(status))

    def leave(self, status: int) -> int:
        """Rank 0: tell the others to exit with ``status`` (or abort the job if they are inside a collective)."""
        if self.busy:
            self.abort(status)
        self.announce("exit", int(status))
        return status


# --- the ranks that follow rank 0 ---------------------------------------------------

class _Signals:
    """SIGINT / SIGTERM on a following rank: passed to the trainer as a stop request, never raised.

    Rank 0 gets the launcher's signal too and decides; a signal that reaches
    only this rank still stops the job, at the end of the block (the stop
    requests are exchanged after every block).
    """

    def __init__(self):
        self.trainer = None
        self.signum = 0

    def __call__(self, signum, frame):
        self.signum = self.signum or signum
        if self.trainer is not None:
            self.trainer.request_stop(signum)

    def install(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(signum) is not signal.SIG_IGN:
                signal.signal(signum, self)


def follow(world: MPIWorld, build) -> int:
    """Ranks > 0: run rank 0's commands until it says exit; returns the exit status.

    ``build(setup)``: this rank's :class:`~fastrnn.Trainer` for rank 0's setup,
    or raises an exception whose message rank 0 prints.
    """
    from .train_state import TrainingDiverged

    signals = _Signals()
    signals.install()
    trainer = None
    while True:
        command = world.receive()
        kind = command[0]
        try:
            if kind == "exit":
                return int(command[1])
            if kind == "build":
                try:
                    trainer = build(command[1])
                    trainer.warm_up()
                    error = None
                except Exception as e:  # reported by rank 0, one line, exit 2 everywhere
                    error = f"rank {world.rank}: {e}"
                world.gather(error)
                signals.trainer = trainer
                if trainer is not None and signals.signum:
                    trainer.request_stop(signals.signum)
            elif kind == "block":
                try:
                    trainer.advance(int(command[1]))
                except TrainingDiverged:
                    pass  # every rank saw it at the same step; rank 0 reports it and says exit
            elif kind == "collect":
                trainer.collect_state()
            elif kind == "decay":  # rank 0 sized its cosine schedule to the time budget: the same here
                trainer.fix_decay(int(command[1]))
            else:
                raise RuntimeError(f"unknown command {command!r} from rank 0")
        except Exception:
            traceback.print_exc()
            world.abort(1)
