"""The output files of ``export`` and ``plot``: checked before anything is read or written."""
from __future__ import annotations

import os
from pathlib import Path

from .exits import UsageError


def output_path(flag, name, suffixes, hint):
    """``name`` as a Path in an existing, writable folder, its suffix one of ``suffixes``; else a UsageError."""
    out = Path(name)
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{flag}{name!r}: {hint}")
    if out.is_dir():
        raise UsageError(f"{name!r} is a directory")
    folder = out.parent if str(out.parent) else Path(".")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UsageError(f"cannot write {name!r}: folder {str(folder)!r} "
                         f"{'is not writable' if folder.is_dir() else 'does not exist'}")
    return out


def refuse_existing(paths, overwrite, flag="--overwrite"):
    """Refuse to replace anything at ``paths`` (a symlink counts, dangling or not) unless ``overwrite``."""
    for path in paths:
        if os.path.lexists(path) and not overwrite:
            raise UsageError(f"{str(path)!r} already exists; pass {flag} to replace it")


def refuse_input(paths, input_path, what):
    """Refuse output paths that are the input file itself (by name or by samefile): writing would destroy it."""
    for path in paths:
        if os.path.abspath(path) == os.path.abspath(input_path) or (
                os.path.exists(path) and os.path.exists(input_path) and os.path.samefile(path, input_path)):
            raise UsageError(f"{str(path)!r} is the {what} being read; choose another output name")
