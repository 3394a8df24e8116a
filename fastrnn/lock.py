"""One run per checkpoint: an OS file lock on ``PATH.lock`` beside the checkpoint, and a guard on its saves.

:class:`CheckpointLock` takes ``fcntl.flock`` (exclusive, non-blocking) on a
sidecar file ``PATH.lock`` that holds the holder's PID, for the message a second
run prints (``train`` locks its metrics log the same way, and ``prepare`` waits
on a :class:`FileLock` in the cache folder). The kernel drops the lock when the process ends however it ends
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
    """Another live process holds the lock of this checkpoint path (or of this run's metrics log: ``what``)."""

    def __init__(self, path, pid, what="checkpoint"):
        self.path, self.pid = path, pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{what} {str(path)!r} is in use by {holder} (another fastrnn train writing it); "
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


_BUSY = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


class FileLock:
    """An exclusive OS lock (``flock``) on the file ``lock_file``, created when taken and removed when released.

    The file holds the holder's PID (:attr:`holder` when it is taken by another).
    The kernel drops the lock when its process ends, however it ends, so a lock
    is never stale. Removing the file on release never lets two holders in: a
    process that locked a file it then finds gone (or replaced) from the path
    tries again on the file now there.
    """

    def __init__(self, lock_file):
        self.lock_file = Path(lock_file)
        self.fd = None
        self.holder = None

    def acquire(self, wait=False) -> bool:
        """Take the lock: True. Without ``wait``, False when another process holds it (its PID in
        :attr:`holder`); with ``wait``, block until it is free. OSError when the file cannot be
        created (FileNotFoundError: its folder is gone) or the file system cannot lock."""
        if fcntl is None:
            return True
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            locked = False
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as e:
                    if e.errno not in _BUSY:
                        raise
                    self.holder = _holder(fd)
                    if not wait:
                        os.close(fd)
                        return False
                    fcntl.flock(fd, fcntl.LOCK_EX)  # blocks; a signal's KeyboardInterrupt ends the wait
                locked = True
                same = os.path.samestat(os.fstat(fd), os.stat(self.lock_file))
                if same:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
            except FileNotFoundError:
                same = False
            except BaseException:  # a signal or an error on the way: leave no lock file of ours behind
                self._abandon(fd, locked)
                raise
            if not same:  # its holder removed it after we opened it: lock the file now at the path
                os.close(fd)
                continue
            self.fd = fd
            return True

    def _abandon(self, fd, locked):
        """Close ``fd``, first removing the file at the path if it is the one ``fd`` holds, or one nobody
        holds (a file this attempt created before a signal stopped it); never a file another process holds."""
        try:
            if not locked:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # OSError when another process holds it
            if os.path.samestat(os.fstat(fd), os.stat(self.lock_file)):
                os.unlink(self.lock_file)  # while locked, as in release
        except OSError:
            pass
        finally:
            os.close(fd)

    def release(self):
        if self.fd is None:
            return
        fd, self.fd = self.fd, None
        try:
            os.unlink(self.lock_file)  # while still locked: a process waiting on this file tries again
        except OSError:
            pass
        os.close(fd)  # drops the lock


class CheckpointLock:
    """``with CheckpointLock(path):`` holds ``path``'s lock (``PATH.lock``) for the block; :class:`CheckpointBusy`
    if taken. ``what`` names the file in that message (``"checkpoint"``, ``"metrics log"``).

    ``warning`` is set (a sentence) when the file system cannot lock; the run then goes on unlocked.
    """

    def __init__(self, path, what="checkpoint"):
        self.path = Path(path)
        self.what = what
        self.lock_path = lock_path(path)
        self._lock = FileLock(self.lock_path)
        self.warning = None

    def acquire(self):
        try:
            taken = self._lock.acquire()
        except OSError as e:
            self.warning = f"cannot lock {str(self.lock_path)!r} ({e.strerror or e}); not locked"
            return self
        if not taken:
            raise CheckpointBusy(self.path, self._lock.holder, self.what)
        return self

    def release(self):
        self._lock.release()

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
