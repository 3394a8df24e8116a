"""``python -m benchmarks.side_by_side`` end to end on tiny sizes: both sides alternated, the JSON and the table."""
from __future__ import annotations

import json
import os

import pytest

from . import side_by_side
from .test_cells import TORCH_MISSING, torch


@pytest.mark.skipif(torch is None and not os.environ.get("CI"), reason=TORCH_MISSING or "")
def test_side_by_side_alternates_both_sides_and_writes_the_table(tmp_path):
    assert side_by_side.main(["--rounds", "3", "--threads", "1", "--points", "lstm2x128", "gru2x512",
                              "--sizes", "16", "4", "8", "--out-dir", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "side_by_side.json").read_text())
    assert [(r["point"], r["threads"]) for r in run["results"]] == [("lstm2x128", 1), ("gru2x512", 1)]
    for row in run["results"]:
        assert {side: len(s) for side, s in row["seconds"].items()} == {"fastrnn": 3, "pytorch": 3}
        assert row["order"] == ["fastrnn", "pytorch", "pytorch", "fastrnn", "fastrnn", "pytorch"]
        assert row["ratio"] == pytest.approx(row["chars_per_second"]["fastrnn"] / row["chars_per_second"]["pytorch"])
    assert run["machine"]["cpu"] and run["machine"]["blas"] and run["gemm_peak_gflops"]["float32-1"] > 0
    table = (tmp_path / "side_by_side.md").read_text()
    assert "| lstm2x128 B4 T8 float32 | 1 |" in table and "| gru2x512 B4 T8 float32 | 1 |" in table


def test_readme_only_rewrites_the_table_between_its_markers_from_the_run(tmp_path, monkeypatch):
    """From the run in --out-dir, timing nothing; the text around the markers is kept, the old table replaced."""
    published = side_by_side.BENCH_RESULTS / "side_by_side.json"
    (tmp_path / "side_by_side.json").write_text(published.read_text())
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{side_by_side.README_START}\nan old table\n{side_by_side.README_END}\nafter\n")
    monkeypatch.setattr(side_by_side, "README_PATH", readme)
    assert side_by_side.main(["--readme-only", "--out-dir", str(tmp_path)]) == 0
    text = readme.read_text()
    expected = side_by_side.table(json.loads(published.read_text())).rstrip("\n")
    assert text == f"before\n{side_by_side.README_START}\n{expected}\n{side_by_side.README_END}\nafter\n"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit):
        side_by_side.main(["--readme-only", "--out-dir", str(tmp_path)])
    assert readme.read_text() == "no markers\n"


def test_the_readme_shows_the_published_run():
    """The README's side-by-side table is the published run's, as the command writes it."""
    published = json.loads((side_by_side.BENCH_RESULTS / "side_by_side.json").read_text())
    assert side_by_side.table(published).rstrip("\n") in side_by_side.README_PATH.read_text()
