"""Output that cannot be written, and inputs at the edges of sample, export and plot.

Full disks without root: a write past ``RLIMIT_FSIZE`` fails with EFBIG ("File
too large") on the same paths a full disk's ENOSPC takes (SIGXFSZ ignored, so the
process sees the error), and ``/dev/full`` is a standard output that is always
full. Each case: exit status 2, one line on stderr, no traceback, nothing
half-written, what was there before intact.
"""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import YORK_TEXT
from test_cli import fastrnn as run_cli
from test_export import _need

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")
SMALL = ["--hidden-size", 12, "--seq-length", 8, "--sample-every", 0, "--log-every", 0, "--seed", 2]


def _file_size_limit(limit):
    """A preexec_fn: files may not grow past ``limit`` bytes (writes beyond fail with EFBIG, as on a full disk)."""
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return set_limit


def _close_stdout():
    os.close(1)


def fastrnn_raw(*args, cwd, stdout=subprocess.PIPE, preexec_fn=None, env=None):
    """The CLI in a subprocess, output as bytes; ``args`` may hold bytes (raw command-line arguments)."""
    argv = [sys.executable, "-m", "fastrnn", *(a if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(argv, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE, preexec_fn=preexec_fn, env=env,
                          timeout=180)


def one_error_line(r, text):
    err = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    assert r.returncode == 2, err
    assert len(err.strip().splitlines()) == 1 and text in err, err
    assert "Traceback" not in err and "Exception ignored" not in err


def leftovers(folder):
    """Temporary files an interrupted write would leave behind."""
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder with york.txt, checkpoints rnn32/rnn64/lstm32/lstm64.npz (20 steps) and their metrics logs."""
    folder = tmp_path_factory.mktemp("io")
    (folder / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    for cell in ("rnn", "lstm"):
        for bits in (32, 64):
            r = run_cli("train", "york.txt", *SMALL, "--model", cell, "--dtype", f"float{bits}", "--steps", 20,
                        "--eval-every", 10, "--log-every", 5, "--checkpoint", f"{cell}{bits}.npz", cwd=folder)
            assert r.returncode == 0, r.stderr
    return folder


# --- standard output full or closed -------------------------------------------------------------

STDOUT_COMMANDS = {
    "sample": (None, ["sample", "rnn64.npz", "--length", 50, "--seed", 1]),
    "eval": (None, ["eval", "rnn64.npz"]),
    "prepare": (None, ["prepare", "york.txt"]),
    "help": (None, ["sample", "--help"]),
    "export": ("onnx", ["export", "rnn64.npz", "full.onnx", "--overwrite"]),
    "plot": ("matplotlib", ["plot", "rnn64.npz.metrics.csv", "-o", "full.png", "--overwrite"]),
}


@needs_dev_full
@pytest.mark.parametrize("name", list(STDOUT_COMMANDS))
def test_standard_output_full_is_one_line_exit_2(runs, name):
    extra, args = STDOUT_COMMANDS[name]
    if extra:
        _need(extra)
    with open(DEV_FULL, "wb") as full:
        r = fastrnn_raw(*args, cwd=runs, stdout=full)
    one_error_line(r, "cannot write to standard output: No space left on device")


@pytest.mark.parametrize("args,written", [
    (["sample", "rnn64.npz", "--length", 20], None),
    (["eval", "rnn64.npz"], None),
    (["export", "rnn64.npz", "closed.onnx"], "closed.onnx"),
])
def test_closed_standard_output_is_refused_before_any_work(runs, args, written):
    r = fastrnn_raw(*args, cwd=runs, preexec_fn=_close_stdout)
    one_error_line(r, "standard output is closed")
    assert written is None or not (runs / written).exists()


def test_a_closed_pipe_is_still_quiet(runs):
    """`fastrnn sample ... | head -c 10`: exit 0, nothing on stderr (unchanged)."""
    p = subprocess.Popen([sys.executable, "-m", "fastrnn", "sample", "rnn64.npz", "--length", "200000"],
                         cwd=runs, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.read(10)
    p.stdout.close()
    assert p.wait(timeout=180) == 0
    assert p.stderr.read() == b""


# --- files on a full disk -----------------------------------------------------------------------

def test_train_stops_with_one_line_when_a_save_fails_and_keeps_the_old_checkpoint(runs, tmp_path):
    (tmp_path / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    ckpt = tmp_path / "k.npz"
    ckpt.write_bytes((runs / "lstm64.npz").read_bytes())
    (tmp_path / "k.npz.metrics.csv").write_bytes((runs / "lstm64.npz.metrics.csv").read_bytes())
    before = ckpt.read_bytes()
    r = fastrnn_raw("train", "york.txt", "--resume", "k.npz", "--steps", 60, "--checkpoint-every", 20,
                    "--log-every", 0, "--quiet", cwd=tmp_path, preexec_fn=_file_size_limit(len(before) // 2))
    one_error_line(r, "fastrnn train: error: cannot write 'k.npz': File too large; stopped at step 40; "
                      "no checkpoint was saved by this run; 'k.npz' is unchanged")
    assert ckpt.read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_new_run_that_cannot_save_leaves_no_checkpoint(runs, tmp_path):
    (tmp_path / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    r = fastrnn_raw("train", "york.txt", *SMALL, "--steps", 10, "--checkpoint", "k.npz", cwd=tmp_path,
                    preexec_fn=_file_size_limit(4096))
    one_error_line(r, "cannot write 'k.npz': File too large")
    assert not (tmp_path / "k.npz").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".onnx", ".safetensors"])
def test_export_to_a_full_disk_keeps_the_old_file(runs, tmp_path, suffix):
    _need(suffix[1:])
    old = tmp_path / f"model{suffix}"
    old.write_bytes(b"old")
    r = fastrnn_raw("export", runs / "lstm64.npz", old, "--overwrite", cwd=tmp_path,
                    preexec_fn=_file_size_limit(1024))
    one_error_line(r, f"cannot write '{old}': File too large")
    assert old.read_bytes() == b"old" and leftovers(tmp_path) == []


def test_plot_to_a_full_disk_keeps_the_valid_png(runs, tmp_path):
    _need("matplotlib")
    png = tmp_path / "p.png"
    r = fastrnn_raw("plot", runs / "rnn64.npz.metrics.csv", "-o", png, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    before = png.read_bytes()
    r = fastrnn_raw("plot", runs / "rnn64.npz.metrics.csv", "-o", png, "--overwrite", "--title", "another", cwd=tmp_path,
                    preexec_fn=_file_size_limit(len(before) // 2))
    one_error_line(r, f"cannot write '{png}': File too large")
    assert png.read_bytes() == before and leftovers(tmp_path) == []


# --- plot: text as written, and an existing -o -------------------------------------------------

def test_plot_draws_dollar_signs_as_written(runs, tmp_path):
    _need("matplotlib")
    odd = tmp_path / "r$x^{$.metrics.csv"
    odd.write_bytes((runs / "rnn64.npz.metrics.csv").read_bytes())
    r = fastrnn_raw("plot", odd, "-o", "p.png", "--title", "$x^{$", cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
    from fastrnn.plot import figure

    ax = figure([odd], title="$x^{$").axes[0]
    assert ax.get_title() == "$x^{$"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["r$x^{$ train", "r$x^{$ validation"]


def test_plot_replaces_an_existing_png_only_with_overwrite(runs, tmp_path):
    png = tmp_path / "p.png"
    png.write_bytes(b"mine")
    r = fastrnn_raw("plot", runs / "rnn64.npz.metrics.csv", "-o", png, cwd=tmp_path)
    one_error_line(r, f"'{png}' already exists; pass --overwrite to replace it")
    assert png.read_bytes() == b"mine"
    _need("matplotlib")
    r = fastrnn_raw("plot", runs / "rnn64.npz.metrics.csv", "-o", png, "--overwrite", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes().startswith(b"\x89PNG")


# --- export: what OUT may be --------------------------------------------------------------------

@pytest.mark.parametrize("make,out,overwrite,message", [
    (lambda d: os.symlink("nowhere.onnx", d / "link.onnx"), "link.onnx", False,
     "'link.onnx' already exists; pass --overwrite to replace it"),
    (lambda d: (d / "ckpt.onnx").write_bytes((d / "rnn64.npz").read_bytes()), "ckpt.onnx", True,
     "'ckpt.onnx' is the checkpoint being read"),
    (lambda d: os.symlink("ckpt.onnx", d / "alias.onnx"), "alias.onnx", True,
     "'alias.onnx' is the checkpoint being read"),
])
def test_export_refuses_a_symlink_and_the_checkpoint_itself(runs, tmp_path, make, out, overwrite, message):
    (tmp_path / "rnn64.npz").write_bytes((runs / "rnn64.npz").read_bytes())
    (tmp_path / "ckpt.onnx").write_bytes((runs / "rnn64.npz").read_bytes())
    if not os.path.lexists(tmp_path / out):
        make(tmp_path)
    ckpt = "ckpt.onnx" if "checkpoint" in message else "rnn64.npz"
    r = fastrnn_raw("export", ckpt, out, *(["--overwrite"] if overwrite else []), cwd=tmp_path)
    one_error_line(r, message)
    assert (tmp_path / "ckpt.onnx").read_bytes() == (runs / "rnn64.npz").read_bytes()
    assert os.path.islink(tmp_path / out) or not os.path.islink(tmp_path / "link.onnx")


def test_large_onnx_models_put_their_weights_beside_the_graph(runs, tmp_path):
    """Over the threshold (lowered here from 1 GiB), OUT.onnx + OUT.onnx.data; onnxruntime runs it from its path."""
    _need("onnx")
    ort = _need("onnxruntime")
    from fastrnn import inference
    from fastrnn import export as fx
    from fastrnn.checkpoint import load_checkpoint

    ckpt = load_checkpoint(runs / "lstm32.npz")
    out = tmp_path / "m.onnx"
    assert fx.onnx_files(out, ckpt.model.params) == [out]  # a small model: one file, as before
    assert fx.onnx_files(out, ckpt.model.params, external_data_above=0) == [out, tmp_path / "m.onnx.data"]
    fx.save_onnx(out, ckpt.model.params, ckpt.vocab, external_data_above=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert (tmp_path / "m.onnx.data").stat().st_size > out.stat().st_size
    ids = ckpt.vocab.encode("Now is the winter")[None, :]
    expected, _ = inference.logits(ckpt.model.params, ids)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"ids": ids})
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)


# --- sample: tiny temperatures, raw bytes -------------------------------------------------------

@pytest.mark.parametrize("name", ["rnn32", "rnn64", "lstm32", "lstm64"])
@pytest.mark.parametrize("temperature", ["1e-45", "5e-324"])
def test_a_temperature_whose_inverse_overflows_gives_the_argmax_text(runs, name, temperature):
    env = dict(os.environ, PYTHONWARNINGS="error")
    greedy = fastrnn_raw("sample", f"{name}.npz", "--argmax", "--length", 80, "--seed", 3, cwd=runs, env=env)
    cold = fastrnn_raw("sample", f"{name}.npz", "--temperature", temperature, "--length", 80, "--seed", 3, cwd=runs,
                       env=env)
    assert greedy.returncode == 0 and cold.returncode == 0, cold.stderr
    assert cold.stderr == b""
    assert cold.stdout == greedy.stdout


def test_a_bytes_model_takes_raw_bytes_as_its_prime(tmp_path):
    data = bytes(range(256)) * 8
    (tmp_path / "all.bin").write_bytes(data)
    r = run_cli("train", "all.bin", "--bytes", *SMALL, "--steps", 5, "--val-fraction", 0, "--checkpoint", "b.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = fastrnn_raw("sample", "b.npz", "--prime", b"\xff\xfe", "--length", 10, "--seed", 1, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(b"\xff\xfe") and len(r.stdout) == 2 + 10 + 1
