"""Two runs side by side (``--compare OLD.json``): chars/s before, after, and after/before (cells rows too)."""
from __future__ import annotations

from .markdown import rate, series_label, table, threads_label


def compare(old, new):
    """Markdown table: chars/s (GFLOP/s for GEMM) before and after, and after/before."""
    rows = []
    old_rows = {r.key: r for r in old.rows}
    for r in new.rows:
        o = old_rows.get(r.key)
        if o is None:
            continue
        rows.append([r.kind, series_label(r.series), r.hidden_size, rate(o.chars_per_second),
                     rate(r.chars_per_second), f"{r.chars_per_second / o.chars_per_second:.2f}"])
    for key, (flops, _n, _m) in sorted(new.gemm.items()):
        if key in old.gemm:
            rows.append(["gemm", f"numpy-matmul {key[0]} {key[1]} thread", "—",
                         f"{old.gemm[key][0] / 1e9:.1f} GFLOP/s", f"{flops / 1e9:.1f} GFLOP/s",
                         f"{flops / old.gemm[key][0]:.2f}"])
    old_cells = {r.key: r for r in old.cells}
    for r in new.cells:
        o = old_cells.get(r.key)
        if o is not None:
            rows.append(["cells", f"{r.implementation} {r.model} {r.dtype} B={r.batch_size} T={r.seq_length} "
                         f"{threads_label(r.threads)}", r.hidden_size,
                         rate(o.chars_per_second), rate(r.chars_per_second),
                         f"{r.chars_per_second / o.chars_per_second:.2f}"])
    only_old = sorted({r.key for r in old.rows} - {r.key for r in new.rows})
    only_new = sorted({r.key for r in new.rows} - {r.key for r in old.rows})
    lines = [f"# Benchmark comparison: `{old.path.name}` (before) -> `{new.path.name}` (after)", "",
             "after/before > 1 means faster after. Runs on different machines or under different "
             "load are not comparable.", "",
             table(["kind", "implementation", "H", "before chars/s", "after chars/s", "after/before"], rows)]
    for label, keys in (("Only in before", only_old), ("Only in after", only_new)):
        if keys:
            lines += ["", f"{label}: " + "; ".join(f"{k[0]} {k[1]} {k[2]} B={k[3]} t={k[4]} H={k[5]}" for k in keys)]
    return "\n".join(lines) + "\n"
