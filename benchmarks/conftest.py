"""pytest configuration of the benchmark suite.

A plain ``pytest`` run collects ``benchmarks/`` too (pyproject's testpaths):
there timing is turned off, so pytest-benchmark calls each benchmarked function
once, untimed, as a smoke test. Timing is on when a benchmark flag asks for it:
``--benchmark-only``, ``--benchmark-enable``, ``--benchmark-json``,
``--benchmark-save`` or ``--benchmark-autosave``.
"""
from __future__ import annotations

import os
import platform
from pathlib import Path

import numba
import numpy as np
import pytest

from . import _support

_TIMING_OPTIONS = ("benchmark_only", "benchmark_enable", "benchmark_json", "benchmark_save",
                   "benchmark_autosave")


def _timing_requested(config) -> bool:
    return any(getattr(config.option, name, None) for name in _TIMING_OPTIONS)


def pytest_configure(config):
    if not hasattr(config.option, "benchmark_disable") or _timing_requested(config):
        return
    config.option.benchmark_disable = True
    # When this conftest is found late (pytest started above the repo root), the
    # plugin's session already exists: turn timing off there too.
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        session.disabled = True


def pytest_report_header(config):
    mode = "timed" if _timing_requested(config) else "smoke (one untimed call each)"
    quick = f", quick (rounds / {_support.QUICK_DIVISOR})" if _support.QUICK else ""
    pinned = "" if _support.threadpool_limits else ", BLAS threads NOT pinned (no threadpoolctl)"
    return f"fastrnn benchmarks: {mode}{quick}{pinned}"


def pytest_benchmark_update_machine_info(config, machine_info):
    """Library versions and BLAS builds, so a JSON says what it measured; no host name."""
    machine_info.pop("node", None)
    info = {
        "numpy": np.__version__,
        "numba": numba.__version__,
        "python": platform.python_version(),
        "quick": _support.QUICK,
        "threads_pinned": bool(_support.threadpool_limits),
    }
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    info["caches"] = _cpu_caches()
    # Set, these hold OpenBLAS to another kernel than the CPU's (e.g. AVX2 on AVX-512): record them.
    info["openblas_env"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    if _support.threadpool_limits is not None:
        from threadpoolctl import threadpool_info
        # The libraries' defaults at start-up; each benchmark pins them and records what
        # it saw in extra_info["blas_threads"].
        info["threadpools_at_start"] = [
            {k: lib.get(k) for k in ("user_api", "internal_api", "version", "architecture",
                                       "threading_layer", "num_threads")}
            for lib in threadpool_info()
        ]
    machine_info["fastrnn_bench"] = info


def _cpu_caches():
    """CPU 0's caches from Linux sysfs: level, type, size in bytes, CPUs sharing it ([] elsewhere)."""
    caches = []
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            size = (index / "size").read_text().strip()
            factor = {"K": 1024, "M": 1 << 20, "G": 1 << 30}.get(size[-1:], 1)
            caches.append({
                "level": int((index / "level").read_text()),
                "type": (index / "type").read_text().strip(),
                "size_bytes": int(size.rstrip("KMG")) * factor,
                "shared_cpu_list": (index / "shared_cpu_list").read_text().strip(),
            })
        except (OSError, ValueError):
            continue
    return caches


@pytest.fixture(scope="session")
def corpus():
    """(ids, vocab_size) of tiny shakespeare."""
    return _support.corpus_ids()


@pytest.fixture
def threads(benchmark):
    """Numba and BLAS held to one thread, restored afterwards (the batch-1 groups and GEMM).

    The batched group (test_batched.py) and the 2-thread GEMM pin their own thread
    counts with ``_support.pinned_threads(n)``.

    A timed run refuses to measure without threadpoolctl (BLAS would use its
    default thread count); the untimed smoke run goes on without it.
    """
    if _support.threadpool_limits is None and not benchmark.disabled:
        pytest.skip("threadpoolctl is not installed, so BLAS threads cannot be pinned: "
                    "pip install threadpoolctl (the 'bench' extra)")
    with _support.pinned_threads(1):
        yield 1
