"""``fastrnn info``: what a checkpoint and a safetensors export hold, checked against the files themselves."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from fastrnn.checkpoint import FORMAT_VERSION, load_checkpoint
from fastrnn.metrics import metrics_path, read_metrics
from fastrnn.model_info import file_info

from conftest import rewrite_npz
from test_cli import fastrnn
from test_export import _need

RUNS = {  # name: train flags
    "lstm2": ["--model", "lstm", "--num-layers", "2", "--hidden-size", "8", "--batch-size", "2", "--steps", "30",
              "--eval-every", "10", "--seq-length", "8", "--seed", "3"],
    "rnn": ["--hidden-size", "8", "--steps", "30", "--eval-every", "10", "--seq-length", "8", "--seed", "3"],
}


@pytest.fixture(scope="module", params=sorted(RUNS))
def run(request, tmp_path_factory):
    """(folder, checkpoint name, flags) of a finished training run with a metrics log."""
    folder = tmp_path_factory.mktemp(request.param)
    (folder / "text.txt").write_text("the quick brown fox jumps over the lazy dog\n" * 40, encoding="utf-8")
    r = fastrnn("train", "text.txt", *RUNS[request.param], "--checkpoint", "m.npz", "--quiet", cwd=folder)
    assert r.returncode == 0, r.stderr
    return folder, "m.npz", RUNS[request.param]


def test_checkpoint_facts_are_the_files(run):
    folder, name, _ = run
    info = file_info(folder / name)
    ckpt = load_checkpoint(folder / name)
    c, spec = ckpt.config, ckpt.config.spec(len(ckpt.vocab))
    assert info["kind"] == "checkpoint" and info["format_version"] == FORMAT_VERSION and info["fastrnn_version"]
    assert info["model"] == {"cell": spec.cell, "num_layers": spec.num_layers, "hidden_size": spec.hidden_size,
                             "parameters": sum(a.size for a in ckpt.state.params.arrays.values()), "dtype": c.dtype}
    assert info["vocabulary"]["size"] == len(ckpt.vocab) and info["vocabulary"]["unit"] == "characters"
    assert info["training"]["steps"] == 30 == ckpt.state.n
    assert info["training"]["characters_seen"] == 30 * c.batch_size * c.seq_length
    assert info["optimizer"]["name"] == c.optimizer and info["optimizer"]["learning_rate"] == c.learning_rate
    assert info["corpus"] == {"path": ckpt.corpus_path, "length": ckpt.corpus_fingerprint.length,
                              "sha256": ckpt.corpus_fingerprint.sha256}
    table = read_metrics(metrics_path(folder / name))
    val = table["val_loss"][~np.isnan(table["val_loss"])]
    assert val.size == 3
    assert info["validation"]["best"]["nats_per_char"] == val.min()  # the log's minimum, exactly
    assert info["validation"]["last"] == {"step": 30, "nats_per_char": val[-1],
                                          "bits_per_char": val[-1] / np.log(2.0)}
    json.dumps(info)  # JSON-ready as it is


def test_validation_counts_only_rows_up_to_the_checkpoint(run, tmp_path):
    """A log that ran past the checkpoint (a crash between saves) does not lend the checkpoint later losses."""
    folder, name, _ = run
    shutil.copy(folder / name, tmp_path / name)
    rows = metrics_path(folder / name).read_text().splitlines()
    cut = [r for r in rows[1:] if r.split(",")[4]][:2]  # the first two validation rows (steps 10 and 20)
    metrics_path(tmp_path / name).write_text("\n".join([rows[0]] + cut + [rows[-1].replace("30,", "40,", 1)]) + "\n")
    info = file_info(tmp_path / name)
    assert info["validation"]["last"]["step"] == 20


def test_without_its_metrics_log_the_plans_best(run, tmp_path):
    """No log beside the checkpoint: the best validation the run's plan recorded; without a plan, none."""
    folder, name, _ = run
    shutil.copy(folder / name, tmp_path / name)
    table = read_metrics(metrics_path(folder / name))
    val = table["val_loss"][~np.isnan(table["val_loss"])]
    best = file_info(tmp_path / name)["validation"]
    assert best["last"] is None and best["best"]["nats_per_char"] == val.min()
    r = fastrnn("info", name, cwd=tmp_path)
    assert r.returncode == 0 and f"validation  best {val.min():.4f} nats/char" in r.stdout, r.stdout + r.stderr
    rewrite_npz(tmp_path / name, tmp_path / name, plan=None)
    assert file_info(tmp_path / name)["validation"] is None
    r = fastrnn("info", name, cwd=tmp_path)
    assert r.returncode == 0 and "validation  none recorded" in r.stdout


def test_text_and_json_output(run, monkeypatch):
    folder, name, _ = run
    r = fastrnn("info", name, cwd=folder)
    assert r.returncode == 0 and r.stderr == ""
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"{name}: checkpoint, format {FORMAT_VERSION}, written by fastrnn ")
    assert [line.split()[0] for line in lines[1:]] == ["model", "vocabulary", "training", "optimizer", "validation",
                                                       "best", "corpus"]
    assert lines[5].split()[1] == "last" and lines[6].index("best") == lines[5].index("last")
    assert "30 steps" in r.stdout and "hidden 8," in r.stdout and "text.txt" in r.stdout
    r = fastrnn("info", name, "--json", cwd=folder)
    monkeypatch.chdir(folder)
    assert r.returncode == 0 and json.loads(r.stdout) == json.loads(json.dumps(file_info(name)))


def test_safetensors_export(run, tmp_path):
    _need("safetensors")
    folder, name, _ = run
    r = fastrnn("export", folder / name, tmp_path / "m.safetensors", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    info, ckpt_info = file_info(tmp_path / "m.safetensors"), file_info(folder / name)
    assert info["kind"] == "safetensors export" and info["training"] is None and info["validation"] is None
    assert info["model"] == ckpt_info["model"] and info["vocabulary"] == ckpt_info["vocabulary"]
    assert info["fastrnn_version"] == ckpt_info["fastrnn_version"]


@pytest.mark.parametrize("case", ["missing", "truncated", "text", "foreign safetensors"])
def test_bad_files_exit_2_with_one_line(run, tmp_path, case):
    folder, name, _ = run
    target = tmp_path / ("x.safetensors" if "safetensors" in case else "x.npz")
    if case == "truncated":
        data = (folder / name).read_bytes()
        target.write_bytes(data[:len(data) // 2])
    elif case == "text":
        target.write_text("not a checkpoint\n")
    elif case == "foreign safetensors":
        st = _need("safetensors.numpy")
        st.save_file({"w": np.zeros(3, np.float32)}, str(target))
    r = fastrnn("info", target.name, cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("fastrnn info: error: ") and r.stderr.count("\n") == 1, r.stderr
