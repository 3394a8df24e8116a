"""The benchmark summary in the repository's README.md, between its ``benchmark-summary`` markers."""
from __future__ import annotations

from pathlib import Path

from .bars import BARS, evaluate_bar
from .markdown import rate, ratio, table, times
from .runs import BATCH_KIND, speedup

README_START = "<!-- benchmark-summary:start (written by python -m benchmarks.report; do not edit) -->"
README_END = "<!-- benchmark-summary:end -->"
README_PATH = Path(__file__).resolve().parent.parent.parent / "README.md"


def readme_summary(run):
    """The short tables the README shows: batch 1 by H, batched at B=128, LSTM/GRU stacks, the bar counts."""
    lines = [f"Run of {run.meta.get('datetime') or '?'} ({run.path.name}); full tables: "
             "[bench_results/report.md](bench_results/report.md).", ""]
    train = [r for r in run.rows if r.kind == "train_step"]
    if train:
        sizes = sorted({r.hidden_size for r in train})
        by_key = {(r.implementation, r.dtype, r.hidden_size): r for r in train}
        rows = []
        for impl, dtype in (("reference", "float64"), ("pytorch", "float64"), ("numba", "float64"),
                            ("numba", "float32")):
            if any((impl, dtype, h) in by_key for h in sizes):
                cells = []
                for h in sizes:
                    r = by_key.get((impl, dtype, h))
                    x = speedup(run, r, "reference") if r is not None else None
                    cells.append("—" if r is None else rate(r.chars_per_second) + (f" ({times(x)})" if x else ""))
                rows.append([("fastrnn" if impl == "numba" else impl) + f" {dtype}"] + cells)
        lines += ["Batch 1, one thread, chars/s (x the reference twin):", "",
                  table(["training step"] + [f"H={h}" for h in sizes], rows), ""]
    batched = [r for r in run.rows if r.kind == BATCH_KIND and r.batch_size == 128 and r.implementation == "numba"]
    if batched:
        rows = []
        for r in sorted(batched, key=lambda r: (r.hidden_size, r.dtype != "float64", r.threads)):
            rows.append([r.hidden_size, r.dtype, r.threads, rate(r.chars_per_second),
                         times(speedup(run, r, "pytorch", r.dtype))])
        lines += ["Batched training, B=128 streams, chars/s (x PyTorch at the same H, dtype, B and threads):", "",
                  table(["H", "dtype", "threads", "fastrnn chars/s", "x PyTorch"], rows), ""]
    points = list(dict.fromkeys(r.point for r in run.cells))
    if points:
        rows = []
        for point in points:
            ours, theirs = run.find_cell("fastrnn", point), run.find_cell("pytorch", point)
            any_row = ours or theirs
            rows.append([any_row.model, any_row.batch_size, any_row.seq_length, any_row.dtype, any_row.threads,
                         rate(ours and ours.chars_per_second),
                         ratio(ours.chars_per_second / theirs.chars_per_second if ours and theirs else None)])
        lines += ["LSTM/GRU stacks, training step, chars/s (x PyTorch on the same model, dtype and threads):", "",
                  table(["model", "B", "T", "dtype", "threads", "fastrnn chars/s", "x PyTorch"], rows), ""]
    verdicts = [evaluate_bar(run, bar)[1] for bar in BARS]
    lines.append(f"Speed bars: {verdicts.count('PASS')} of {len(verdicts)} pass, {verdicts.count('MISS')} missed"
                 + (f", {verdicts.count('NOT MEASURED')} not measured" if "NOT MEASURED" in verdicts else "")
                 + " (the list is in the report).")
    return "\n".join(lines)


def replace_between(path: Path, start: str, end: str, body: str) -> bool:
    """Replace the text of ``path`` between its ``start`` and ``end`` marker lines with ``body``; False
    (and nothing written) if either marker is missing."""
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + start + "\n" + body.rstrip("\n") + "\n" + end + tail, encoding="utf-8")
    return True


def update_readme(run, path=README_PATH):
    """Replace the README's text between the summary markers; False if the markers are not there."""
    return replace_between(path, README_START, README_END, readme_summary(run))


def publish(out_dir: Path, name: str, title: str, md: str, start: str, end: str, default_out: Path) -> None:
    """Write ``md`` to ``out_dir/name.md`` under ``title``; into the README between ``start`` and ``end`` too
    when ``out_dir`` is ``default_out`` (the published results, not a trial run elsewhere); print it."""
    import sys

    (out_dir / f"{name}.md").write_text(f"# {title}\n\n" + md)
    if Path(out_dir).resolve() == Path(default_out).resolve() and not replace_between(README_PATH, start, end, md):
        print(f"README.md has no {name} markers; not updated", file=sys.stderr)
    print(md)
