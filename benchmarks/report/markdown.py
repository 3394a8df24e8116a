"""Formatting helpers of the report: numbers as the tables print them, markdown tables, series labels."""
from __future__ import annotations


def rate(x):
    """A rate (chars/s) with thousands separators, or a dash when unmeasured."""
    return "—" if x is None else f"{x:,.0f}"


def times(x):
    """A ratio as ``1.5x``, or a dash."""
    return "—" if x is None else f"{x:.1f}x"


def ratio(x):
    """A ratio to two decimals, ``0.32x`` (where ratios near or below 1 matter), or a dash."""
    return "—" if x is None else f"{x:.2f}x"


def percent(x):
    """A fraction as ``75.0 %``, or a dash."""
    return "—" if x is None else f"{100 * x:.1f} %"


def table(header, rows):
    """A markdown table: one header row, then one line per row."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def series_label(series):
    """``(implementation, dtype, batch_size, threads)`` as ``numba float64 B=32 2 threads`` (B, threads if not 1)."""
    implementation, dtype, batch_size, threads = series
    label = f"{implementation} {dtype}"
    if batch_size != 1:
        label += f" B={batch_size}"
    if threads != 1:
        label += f" {threads} threads"
    return label


def cache_size(value):
    """A cache size in bytes as KiB or MiB (strings pass through, None is ``?``)."""
    if value in (None, ""):
        return "?"
    if isinstance(value, (int, float)):
        return f"{value / 1024:.0f} KiB" if value < 1 << 20 else f"{value / (1 << 20):.0f} MiB"
    return str(value)


def threads_label(n):
    """``1 thread``, ``2 threads``."""
    return f"{n} thread{'s' if n > 1 else ''}"
