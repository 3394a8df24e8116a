"""Writing output files whole or not at all: a temporary file beside the target, then a rename over it."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class OutputWriteError(OSError):
    """An output file could not be written (a full disk, a quota, an I/O error); what was at its path is unchanged.

    ``str()`` is one line: "cannot write 'PATH': REASON"; ``errno`` is the cause's."""

    def __init__(self, path, cause: BaseException):
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(getattr(cause, "errno", None), reason, str(path))
        self.message = f"cannot write {str(path)!r}: {reason}"

    def __str__(self):
        return self.message


def folder_of(path) -> Path:
    """The folder ``path`` is in (``.`` for a bare name)."""
    path = Path(path)
    return path.parent if str(path.parent) else Path(".")


def new_file_mode() -> int:
    """The mode a plain ``open(path, 'w')`` gives a new file (``0o666`` less the umask; mkstemp's are private)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, write) -> Path:
    """``write(tmp_path)`` into a temporary file beside ``path``, then rename it onto ``path``.

    Nothing half-written is ever at ``path``: if ``write`` or the rename fails the
    temporary file is removed and what was at ``path`` stays as it was. An
    ``OSError`` (a full disk...) becomes :class:`OutputWriteError` naming ``path``.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder_of(path))
    except OSError as e:
        raise OutputWriteError(path, e) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError) and not isinstance(e, OutputWriteError):
            raise OutputWriteError(path, e) from None
        raise
    return path
