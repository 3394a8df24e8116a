"""The report (``python -m benchmarks.report``) on small hand-made runs: verdicts, the cells section, the CLI.

No timing: each JSON here is written by the test with medians chosen so that
every bar's verdict is known in advance.
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks._support import cell_train_flops_per_char
from benchmarks.report import bars, cli, readme, runs, tables
from benchmarks.report.bars import CELL_BARS, SEED_API_BARS, evaluate_bar

BENCH_RESULTS = Path(__file__).resolve().parent.parent / "bench_results"


def _bench(median, group="g", **info):
    return {"name": f"test_{info.get('implementation')}", "group": group, "extra_info": info,
            "stats": {"median": median, "rounds": 3, "iterations": 1}}


def _step_row(implementation, H, median):
    return _bench(median, kind="forward_backward", implementation=implementation, dtype="float64", hidden_size=H,
                  vocab_size=65, batch_size=1, threads=1, chars_per_step=25, flops_per_char=1000)


def _cell_row(implementation, cell, H, B, T, median, threads=2, dtype="float32"):
    return _bench(median, group="cells", kind="cells", implementation=implementation, cell=cell, num_layers=2,
                  hidden_size=H, vocab_size=65, batch_size=B, seq_length=T, threads=threads, dtype=dtype,
                  chars_per_step=B * T, flops_per_char=cell_train_flops_per_char(cell, 2, H, 65))


def _write(tmp_path, benchmarks, name="run.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"benchmarks": benchmarks, "datetime": "2000-01-01", "machine_info": {}}))
    return path


def _hand_made(tmp_path):
    """numba-api over the reference: 6x at H=100, 3x at H=256, none at H=512; cells: LSTM 2x128 at 2.5x
    PyTorch, LSTM 2x512 at 1x, no GRU; a float32 2-thread GEMM of 1e11 flops/s."""
    return runs.load(_write(tmp_path, [
        _step_row("reference", 100, 6e-3), _step_row("numba-api", 100, 1e-3),
        _step_row("reference", 256, 3e-3), _step_row("numba-api", 256, 1e-3),
        _cell_row("fastrnn", "lstm", 128, 50, 50, 0.01), _cell_row("pytorch", "lstm", 128, 50, 50, 0.025),
        _cell_row("fastrnn", "lstm", 512, 32, 64, 0.1), _cell_row("pytorch", "lstm", 512, 32, 64, 0.1),
        _bench(0.01, kind="gemm", implementation="numpy-matmul", dtype="float32", threads=2, matrix_size=10,
               flops_per_call=1e9),
    ]))


def test_cell_flops_count_recurrent_input_and_head_products():
    # LSTM 2x128, V=65: recurrent 2 * 4 * 128^2 per layer (2 layers) + layer 1's input projection
    # 2 * 4 * 128^2 + head 2 * 128 * 65, times 3 for training.
    assert cell_train_flops_per_char("lstm", 2, 128, 65) == 3 * (3 * 131_072 + 16_640) == 1_229_568
    # One GRU layer: its input is a row lookup, so only the recurrent product and the head count.
    assert cell_train_flops_per_char("gru", 1, 100, 65) == 3 * (2 * 3 * 100 * 100 + 2 * 100 * 65)


def test_seed_api_bars_pass_miss_and_not_measured(tmp_path):
    run = _hand_made(tmp_path)
    verdicts = [evaluate_bar(run, bar)[:2] for bar in SEED_API_BARS]
    assert [v for _, v in verdicts] == ["PASS", "MISS", "NOT MEASURED"]
    assert abs(verdicts[0][0] - 6) < 1e-9 and abs(verdicts[1][0] - 3) < 1e-9


def test_cell_bars_and_section(tmp_path):
    run = _hand_made(tmp_path)
    verdicts = [evaluate_bar(run, bar) for bar in CELL_BARS]
    assert [v[1] for v in verdicts] == ["PASS", "MISS", "NOT MEASURED"]
    assert abs(verdicts[0][0] - 2.5) < 1e-9
    assert "no fastrnn and no pytorch gru 2x512 float32 (2 threads) row" in verdicts[2][2]
    text = tables.render(run)
    assert f"## {tables.CELLS_TITLE}" in text
    # fastrnn LSTM 2x128: 2,500 chars in 0.01 s = 250,000 chars/s x 1,229,568 flops / 1e11 flops/s = 307.4 %.
    assert "| lstm 2x128 | 50 | 50 | float32 | 2 | 1,229,568 | 250,000 | 100,000 | 2.50x | 307.4 % |" in text
    assert "Speed bars: 2 of " in readme.readme_summary(run)


def test_cells_rows_without_kind_from_older_runs(tmp_path):
    old = _bench(0.5, group="cells", implementation="fastrnn", cell="gru", num_layers=2, hidden_size=512,
                 batch_size=32, seq_length=64, threads=2, dtype="float32", chars_per_call=2048)
    torch_row = dict(old, extra_info=dict(old["extra_info"], implementation="pytorch"),
                     stats={"median": 0.25, "rounds": 3})
    run = runs.load(_write(tmp_path, [old, torch_row]))
    value, verdict, _ = evaluate_bar(run, CELL_BARS[2])
    assert (verdict, value) == ("MISS", 0.5)
    assert "| gru 2x512 | 32 | 64 | float32 | 2 | — | 4,096 | 8,192 | 0.50x | — | — |" in tables.render(run)


def test_every_bar_not_measured_on_an_empty_run(tmp_path):
    run = runs.load(_write(tmp_path, []))
    assert {evaluate_bar(run, bar)[1] for bar in bars.BARS} == {"NOT MEASURED"}
    assert tables.cells_section(run) == []


def test_microkernel_rows_leave_the_report_as_it_was(tmp_path):
    """The ``microkernel`` group's rows (GFLOP/s of products, no hidden size or chars) are skipped, not a crash."""
    product = _bench(1e-3, group="microkernel", kind="microkernel", implementation="microkernel", dtype="float32",
                     threads=1, flops_per_call=1e8, model="lstm-512-b32", direction="forward")
    (tmp_path / "alone").mkdir()
    alone = runs.load(_write(tmp_path / "alone", [_step_row("reference", 100, 6e-3)]))
    beside = runs.load(_write(tmp_path, [_step_row("reference", 100, 6e-3), product]))
    assert beside.rows == alone.rows
    assert tables.render(beside) == tables.render(alone)


def test_cli_writes_the_report_and_prints_each_bar(tmp_path, capsys):
    path = _write(tmp_path, [_step_row("reference", 100, 6e-3), _step_row("numba-api", 100, 1e-3)])
    assert cli.main([str(path), "--out-dir", str(tmp_path / "out"), "--no-plot", "--no-readme"]) == 0
    printed = capsys.readouterr().out
    assert "PASS         numba-api float64 >= 5x reference float64, H=100" in printed
    assert printed.count("NOT MEASURED") == len(bars.BARS) - 1
    report = (tmp_path / "out" / "report.md").read_text()
    for title in bars.BAR_GROUPS.values():
        assert f"## Bars ({title})" in report


def test_mpi_section_puts_ranks_beside_threads(tmp_path):
    threads = _bench(0.5, group="mpi", implementation=runs.MPI_THREADS, point="lstm-2x512-B32", steps=2,
                     chars_per_call=4096)  # 8,192 chars/s
    ranks = _bench(9.0, group="mpi", implementation=runs.MPI_RANKS, point="lstm-2x512-B32", steps=2,
                   mpi_chars_per_s=7372.8, allreduce_ms=6.25, allreduce_bytes=13 * 2 ** 20)
    lonely = _bench(0.1, group="mpi", implementation=runs.MPI_THREADS, point="tanh-512-B128", chars_per_call=1000)
    run = runs.load(_write(tmp_path, [threads, ranks, lonely]))
    text = "\n".join(tables.mpi_section(run))
    assert "| lstm-2x512-B32 | 8,192 | 7,373 | 0.90x | 6.25 | 13 MiB |" in text
    assert "| tanh-512-B128 | 10,000 | — | — | — | — |" in text
    assert "## Data-parallel training over MPI" in tables.render(run)
    assert tables.mpi_section(runs.load(_write(tmp_path, [_step_row("reference", 100, 6e-3)]))) == []


def test_committed_runs_render_with_every_group(tmp_path):
    for name in ("latest.json", "cells.json"):
        text = tables.render(runs.load(BENCH_RESULTS / name))
        assert all(f"## Bars ({title})" in text for title in bars.BAR_GROUPS.values())
        assert "issue" not in text.lower()


def test_header_names_the_isa_and_the_blas_kernel_that_ran(tmp_path):
    pools = [{"user_api": "blas", "internal_api": "openblas", "version": "0.3.30", "architecture": "Haswell"},
             {"user_api": "openmp", "internal_api": "openmp", "architecture": None}]
    machine = {"cpu": {"brand_raw": "Some CPU", "count": 2, "flags": ["sse2", "avx2", "fma", "avx512f"]},
               "fastrnn_bench": {"threadpools_at_start": pools, "openblas_env": {"OPENBLAS_CORETYPE": "Haswell"}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"benchmarks": [], "datetime": "2000-01-01", "machine_info": machine}))
    text = "\n".join(tables.header(runs.load(path)))
    assert "ISA: AVX-512 (avx512f, avx2, fma)" in text
    assert "BLAS: openblas 0.3.30 kernel Haswell (with OPENBLAS_CORETYPE=Haswell)" in text
    machine["cpu"]["flags"] = ["avx2"]
    machine["fastrnn_bench"]["openblas_env"] = {}
    path.write_text(json.dumps({"benchmarks": [], "datetime": "2000-01-01", "machine_info": machine}))
    text = "\n".join(tables.header(runs.load(path)))
    assert "ISA: AVX2 (avx2)" in text and "(OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset)" in text


def test_the_newest_run_is_a_benchmark_run_not_another_tools_json(tmp_path):
    import os

    run = _write(tmp_path, [_step_row("reference", 100, 6e-3)])
    other = tmp_path / "step_split.json"
    other.write_text(json.dumps({"machine": {}, "results": []}))
    os.utime(run, (1, 1))  # the run is older than the other JSON
    assert runs.newest_json(tmp_path) == run
