"""The commands under an MPI launcher: only ``train`` runs as several ranks."""
from __future__ import annotations

import os

from .exits import RANK_VARIABLES, UsageError


def mpi_world(args):
    """This process's :class:`~fastrnn.distributed.MPIWorld` when an MPI launcher started several, else None."""
    if not any(os.environ.get(name) for name in (*RANK_VARIABLES, "PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
        return None
    from ..distributed import MPIUnavailable, launched_size, world_from_environment
    if args.command != "train":
        if (launched_size() or 0) > 1:
            raise UsageError(f"only train runs across MPI ranks; run {args.command} as one process")
        return None
    try:
        return world_from_environment()
    except MPIUnavailable as e:
        raise UsageError(str(e)) from None


def single_process(run):
    """Commands other than train refuse to run as several MPI ranks (they would race on their output)."""
    def checked(args):
        mpi_world(args)
        return run(args)
    checked.__doc__ = run.__doc__
    return checked


def threads_per_rank() -> int:
    """A new run's default --threads under MPI: this node's cores shared by the ranks the launcher put on it."""
    local = next((int(os.environ[n]) for n in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
                  if os.environ.get(n, "").isdigit()), 1)
    return max(1, (os.cpu_count() or 1) // max(local, 1))
