"""``python -m benchmarks.step_split`` on tiny sizes: every kernel's time lands in a phase, the phases add up."""
from __future__ import annotations

import json

import pytest

from . import step_split


@pytest.mark.parametrize("threads, hidden, chunks, kernel", [
    (1, 16, 1, "cell_kernels.lstm_forward"), (2, 256, 1, "cell_parts_kernels.lstm_forward_parts"),
    (2, 16, 2, "chunk_kernels.chunk_steps")])
def test_the_step_split_accounts_for_the_whole_step(tmp_path, threads, hidden, chunks, kernel):
    assert step_split.main(["--points", "lstm2x256", "--threads", str(threads), "--steps", "2",
                            "--sizes", str(hidden), "2", "4", "--out-dir", str(tmp_path)]) == 0
    row, = json.loads((tmp_path / "step_split.json").read_text())["results"]
    if chunks == 1:
        assert row["phases"]["recurrence forward (product + gates)"] > 0
        assert row["phases"]["recurrence backward (product + gates)"] > 0
    else:  # the chunks' whole forward and backward in one compiled call
        assert row["phases"]["chunks of streams at once (their whole forward and backward)"] > 0
    assert row["phases"]["packing Whh"] > 0
    assert row["phases"]["optimizer"] > 0 and "other kernels" not in row["phases"]  # every kernel is named
    assert sum(row["phases"].values()) == pytest.approx(row["seconds_per_step"]) and row["chunks"] == chunks
    assert kernel in row["kernels"]
    assert "| lstm2x256 B2 T4 float32 |" in (tmp_path / "step_split.md").read_text()
