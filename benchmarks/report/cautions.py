"""Warnings the report prints above the numbers when a run's conditions make them doubtful."""
from __future__ import annotations

from .runs import BATCH_KIND


def thread_warnings(data_rows):
    """Rows whose BLAS pools or numba ran with more threads than the row claims."""
    bad = [f"{r['name']} (claims {r['threads']}, BLAS {r['blas']}, numba {r['numba']})" for r in data_rows
           if (r["blas"] is not None and r["blas"] > r["threads"])
           or (r["numba"] is not None and r["numba"] > r["threads"])]
    if not bad:
        return []
    return ["", "**Warning: threads were not pinned in: " + "; ".join(bad) + ".**"]


def contention_warning(run):
    """A warning line when 2-thread batched rows ran below half their 1-thread rate ([] otherwise)."""
    rows = {(r.implementation, r.dtype, r.threads, r.hidden_size, r.batch_size): r
            for r in run.rows if r.kind == BATCH_KIND}
    slow = []
    for (impl, dtype, threads, H, B), r in rows.items():
        one = rows.get((impl, dtype, 1, H, B))
        if threads == 2 and one is not None and r.chars_per_second < 0.5 * one.chars_per_second:
            slow.append(f"{impl} {dtype} H={H} B={B}")
    if not slow:
        return []
    return [f"**Warning: at 2 threads, {len(slow)} batched row(s) ran at less than half their 1-thread "
            f"rate ({'; '.join(sorted(slow))}). That is usually the signature of a busy machine (another "
            "process on one of the cores; PyTorch's OpenMP threads spin-wait and collapse under "
            "contention): rerun on an idle machine before reading the 2-thread rows and bars.**"]
