"""The report's PNGs: chars/s against hidden size (batch 1) and against batch size (batched rows)."""
from __future__ import annotations

from .runs import BATCH_KIND, impl_rank
from .markdown import series_label
from .tables import KIND_TITLES

PLOT = "chars_per_second.png"
BATCH_PLOT = "batched_chars_per_second.png"


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or SystemExit saying how to get it."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("the plot needs matplotlib (pip install -e '.[bench]'), or pass --no-plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _log_axes(ax, ticks, xlabel):
    """Log-2 x axis with a tick at each value, log y axis of chars/s."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("characters per second (log)")


def plot(run, path, kind="train_step"):
    """chars/s against hidden size, one line per implementation/dtype/B/threads, log y."""
    plt = _pyplot()
    rows = [r for r in run.rows if r.kind == kind]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    series = list(dict.fromkeys(r.series for r in rows))
    for s in series:
        points = sorted((r.hidden_size, r.chars_per_second) for r in rows if r.series == s)
        style = "--" if s[0] == "reference" else ":" if s[0] == "pytorch" else "-"
        ax.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=series_label(s))
    sizes = sorted({r.hidden_size for r in rows})
    for (dtype, threads), (flops, _n, _m) in sorted(run.gemm.items()):
        vocab = rows[0].vocab_size if rows else None
        if vocab is None or threads != 1:
            continue
        flops_per_char = [next((r.flops_per_char for r in rows if r.hidden_size == h), None) for h in sizes]
        ceiling = [flops / f for f in flops_per_char if f]
        if len(ceiling) == len(sizes):
            ax.plot(sizes, ceiling, color="grey", alpha=0.6, linewidth=1,
                    linestyle="-." if dtype == "float64" else (0, (1, 3)),
                    label=f"GEMM-peak ceiling {dtype} (1 thread)")
    _log_axes(ax, sizes, "hidden size H")
    title = f"fastrnn, {KIND_TITLES.get(kind, kind)}: T=25, V={rows[0].vocab_size if rows else '?'}"
    if run.meta["quick"]:
        title += " (QUICK RUN)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_batched(run, path):
    """Batched training: chars/s against batch size, one panel per H, one line per
    implementation/dtype/threads, log-log. Returns False (and writes nothing) without batched rows."""
    rows = [r for r in run.rows if r.kind == BATCH_KIND]
    if not rows:
        return False
    plt = _pyplot()
    sizes = sorted({r.hidden_size for r in rows})
    batch_sizes = sorted({r.batch_size for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 5), squeeze=False)
    colors = {("numba", "float64"): "C0", ("numba", "float32"): "C1",
              ("pytorch", "float64"): "C2", ("pytorch", "float32"): "C3"}
    for ax, H in zip(axes[0], sizes):
        here = [r for r in rows if r.hidden_size == H]
        series = sorted({(impl_rank(r.implementation), r.implementation, r.dtype != "float64", r.dtype, r.threads)
                         for r in here})
        for _, impl, _, dtype, threads in series:
            points = sorted((r.batch_size, r.chars_per_second) for r in here
                            if (r.implementation, r.dtype, r.threads) == (impl, dtype, threads))
            ax.plot([p[0] for p in points], [p[1] for p in points],
                    "-" if threads == 1 else "--", marker="o" if impl == "numba" else "s",
                    color=colors.get((impl, dtype)), label=f"{impl} {dtype} {threads} thread{'s' if threads > 1 else ''}")
        for dtype in ("float64", "float32"):
            peak = run.peak(dtype, 1)
            if peak is not None and here:
                ax.axhline(peak / here[0].flops_per_char, color="grey", alpha=0.6, linewidth=1,
                           linestyle="-." if dtype == "float64" else (0, (1, 3)),
                           label=f"GEMM-peak ceiling {dtype} (1 thread)")
        _log_axes(ax, batch_sizes, "batch size B (streams per step)")
        ax.set_title(f"H={H}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    title = f"Batched training step, fastrnn vs PyTorch: chars/s against batch size, T=25, V={rows[0].vocab_size}"
    if run.meta["quick"]:
        title += " (QUICK RUN)"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
