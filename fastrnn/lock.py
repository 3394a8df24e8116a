"""One run per checkpoint: an OS file lock on ``PATH.lock`` beside the checkpoint, and a guard on its saves.

:class:`CheckpointLock` takes ``fcntl.flock`` (exclusive, non-blocking) on a
sidecar file ``PATH.lock`` that holds the holder's PID, for the message a second
run prints. The kernel drops the lock when the process ends however it ends
(a crash or SIGKILL included), so a lock is never stale: a leftover file
whose lock nobody holds is simply taken. The file is removed on release; the
holder checks after locking that the file it locked is still the one at the
path (else another run removed it meanwhile, and it tries again), so removing
it never lets two runs in.

:class:`SaveGuard` protects the file itself against writers that do not take the
lock (another program, a copy by hand): before each save it checks that the
checkpoint on disk is still the one this run found at its start or last wrote
(device, inode, size and mtime), and refuses to replace anything else (a path
where the file was removed is written again: there is nothing there to lose).
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no lock, only the save guard
    fcntl = None


class CheckpointBusy(Exception):
    """Another live process holds the lock of this checkpoint path."""

    def __init__(self, path, pid):
        self.path, self.pid = path, pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"checkpoint {str(path)!r} is in use by {holder} (another fastrnn train writing it); "
                         f"wait for it to finish or choose another --checkpoint")


class CheckpointChanged(Exception):
    """The checkpoint file was replaced or created by someone else during this run."""


def lock_path(path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def _holder(fd) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


class CheckpointLock:
    """``with CheckpointLock(path):`` holds ``path``'s lock for the block; :class:`CheckpointBusy` if taken.

    ``warning`` is set (a sentence) when the file system cannot lock; the run then goes on unlocked.
    """

    def __init__(self, path):
        self.path = Path(path)
        self.lock_path = lock_path(path)
        self.fd = None
        self.warning = None

    def acquire(self):
        if fcntl is None:
            return self
        while True:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                self.warning = f"cannot create the lock file {str(self.lock_path)!r} ({e.strerror or e}); not locked"
                return self
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                pid = _holder(fd)
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise CheckpointBusy(self.path, pid) from None
                self.warning = f"cannot lock {str(self.lock_path)!r} ({e.strerror or e}); not locked"
                return self
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_path))
            except OSError:
                same = False
            if not same:  # its holder removed it after we opened it: lock the file now at the path
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            self.fd = fd
            return self

    def release(self):
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.unlink(self.lock_path)  # while still locked: a run waiting on this file tries again
        except OSError:
            pass
        os.close(fd)  # drops the lock

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _identity(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class SaveGuard:
    """Remembers which file is at ``path`` (or that there is none); :meth:`check` before replacing it."""

    def __init__(self, path):
        self.path = Path(path)
        self.expected = _identity(self.path)
        self.wrote = False

    def check(self):
        """:class:`CheckpointChanged` unless the file at the path is still the one expected."""
        now = _identity(self.path)
        if now is None or now == self.expected:  # ours, or nothing there to lose
            return
        since = "this run last saved it" if self.wrote else "this run started"
        what = "appeared" if self.expected is None else "was replaced"
        raise CheckpointChanged(f"{str(self.path)!r} {what} since {since} (another program wrote it); "
                                f"not replacing it")

    def saved(self):
        """Record the file this run just wrote."""
        self.expected = _identity(self.path)
        self.wrote = True
