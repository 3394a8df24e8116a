"""Optional dependencies (pyproject's extras): import one, or say in one line which ``pip install`` provides it."""
from __future__ import annotations

import importlib


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(module: str, extra: str, what: str):
    """Import ``module``, or raise :class:`MissingExtra`: "WHAT needs the M package: pip install 'fastrnn[EXTRA]'"."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingExtra(f"{what} needs the {package} package: pip install 'fastrnn[{extra}]'") from None
