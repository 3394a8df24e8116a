"""The report's bar sections: one PASS/MISS/NOT MEASURED table per group of bars, and notes on each miss."""
from __future__ import annotations

from .bars import BAR_GROUPS, BARS, Bar, CellBar, evaluate_bar, measured
from .cautions import contention_warning
from .markdown import cache_size, percent, rate, table, times
from .runs import BATCH_KIND, SCALING_WORK, fraction_of_peak


def bars_section(run):
    """Every group of bars, in BAR_GROUPS order."""
    lines = []
    for group, title in BAR_GROUPS.items():
        lines += bars_table(run, [b for b in BARS if b.group == group], f"## Bars ({title})")
        if group == "batched":
            warning = contention_warning(run)
            lines += warning + ([""] if warning else [])
    return lines


def bars_table(run, bars, heading):
    """One group's table, its counts, and a line on each missed bar."""
    lines = [heading, ""]
    rows, missed, unmeasured = [], [], []
    for bar in bars:
        value, verdict, why = evaluate_bar(run, bar)
        rows.append([bar.label(), measured(bar, value), bar.required(),
                     f"**{verdict}**" + (f" ({why})" if why else "")])
        if verdict == "MISS":
            missed.append((bar, value))
        elif verdict == "NOT MEASURED":
            unmeasured.append(bar)
    passed = len(bars) - len(missed) - len(unmeasured)
    lines.append(table(["target", "measured", "required", "result"], rows))
    lines.append("")
    lines.append(f"{passed} of {len(bars)} bars pass, {len(missed)} missed, {len(unmeasured)} not measured.")
    if missed:
        lines.append("")
        lines.append(f"**Missed: {len(missed)} of {len(bars)} bars.**")
        lines.append("")
        for bar, value in missed:
            lines.append(f"- {bar.label()}: measured {measured(bar, value)}. {limit_note(run, bar)}")
    if unmeasured:
        lines.append("")
        lines.append("Not measured in this run: " + "; ".join(b.label() for b in unmeasured) + ".")
    return lines + [""]


def limit_note(run, bar):
    """What the numbers say about the missed bar: its share of the GEMM peak, Whh against L2."""
    if isinstance(bar, CellBar):
        return _cell_limit_note(run, bar)
    row = run.find(bar.kind, bar.implementation, bar.dtype, bar.batch_size, bar.threads, bar.hidden_size)
    if bar.kind == BATCH_KIND:
        return _batch_limit_note(run, bar, row)
    base = run.find(bar.kind, bar.baseline, bar.baseline_dtype, bar.batch_size, bar.threads,
                    bar.hidden_size)
    parts = []
    frac = fraction_of_peak(run, row)
    if frac is not None:
        parts.append(f"{bar.implementation} {bar.dtype} runs at {percent(frac)} of the GEMM peak")
    base_frac = fraction_of_peak(run, base)
    if base_frac is not None:
        parts.append(f"the {bar.baseline} at {percent(base_frac)}")
    H = bar.hidden_size
    whh = H * H * (8 if bar.dtype == "float64" else 4)
    l2 = run.l2_per_core()
    if l2:
        if whh > l2:
            parts.append(f"Whh ({whh / (1 << 20):.1f} MiB in {bar.dtype}) is larger than one core's "
                         f"L2 ({cache_size(l2)}), so every time step reads it from L3: at batch 1 the "
                         "recurrent matrix-vector product is likely bound by L3 bandwidth rather than by flops")
        else:
            parts.append(f"Whh ({whh / 1024:.0f} KiB in {bar.dtype}) fits in one core's L2 "
                         f"({cache_size(l2)}), so cache capacity does not explain the gap")
    return ("; ".join(parts) + ".") if parts else ""


def _rate_and_peak(run, row):
    frac = fraction_of_peak(run, row)
    return f"{rate(row.chars_per_second)} chars/s" + (f" ({percent(frac)} of GEMM peak)" if frac else "")


def _cell_limit_note(run, bar):
    """The two rates behind a missed cells bar, and their shares of the GEMM peak."""
    return "; ".join(f"{name}: {_rate_and_peak(run, run.find_cell(name, bar.point))}"
                     for name in (bar.implementation, bar.baseline)) + "."


def _batch_limit_note(run, bar, row):
    """The measured rates behind a missed batched bar, and their shares of the GEMM peak."""
    def rate_and_peak(r):
        return _rate_and_peak(run, r)
    parts = [f"{bar.implementation} {bar.dtype} {bar.threads}t: {rate_and_peak(row)}"]
    if isinstance(bar, Bar):
        base = run.find(bar.kind, bar.baseline, bar.baseline_dtype, bar.batch_size, bar.base_threads,
                        bar.hidden_size)
        parts.append(f"{bar.baseline} {bar.baseline_dtype} {bar.base_threads}t: {rate_and_peak(base)}")
        if bar.base_threads != bar.threads:
            entry = (run.thread_scaling or {}).get((bar.dtype, bar.hidden_size, bar.batch_size))
            if entry:
                parts.append(f"with 1t and 2t calls alternated (cross-check): {times(entry[0] / entry[1])}")
            ceiling = [f"{work} {times(x)}" for work in SCALING_WORK
                       if (x := run.scaling_speedup(work)) is not None]
            if ceiling:
                parts.append("this machine's 2-thread speed-up on independent work, same run: " + ", ".join(ceiling))
    return "; ".join(parts) + "."
