"""Crafted checkpoints: what a file claims (config sizes, .npy headers) is checked before anything is allocated.

A small file whose config claims a huge model, or whose member's header claims
more elements than it stores, is refused in one short line (exit 2 from every
command that reads a checkpoint) without allocating what it claims; members a
checkpoint does not hold are never read, so a damaged or huge unknown member
does not matter; compressed checkpoints and every earlier format still load.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from numpy.lib import format as npy_format

import fastrnn.limits
from fastrnn.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fastrnn.corpus import Corpus
from fastrnn.config import TrainConfig
from fastrnn.trainer import Trainer

from conftest import rewrite_npz
from test_export import _need

TEXT = "It was the best of times, it was the worst of times, it was the age of wisdom.\n" * 4
MESSAGE_LIMIT = 400  # characters of a one-line error, file name included


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    (folder / "text.txt").write_text(TEXT)
    trainer = Trainer(Corpus.from_text(TEXT), TrainConfig(hidden_size=8, seq_length=7, seed=5, val_fraction=0.1))
    trainer.train(2)
    return save_checkpoint(folder / "good.npz", trainer)


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def _with_config(good, dst, **changes):
    config = json.loads(str(_arrays(good)["config"]))
    return rewrite_npz(good, dst, config=np.str_(json.dumps({**config, **changes})))


def _npy_bytes(header_shape, dtype, data: bytes) -> bytes:
    """A .npy member whose header claims ``header_shape`` of ``dtype``, followed by ``data`` (whatever its size)."""
    import io
    f = io.BytesIO()
    npy_format.write_array_header_1_0(f, {"descr": npy_format.dtype_to_descr(np.dtype(dtype)),
                                          "fortran_order": False, "shape": tuple(header_shape)})
    return f.getvalue() + data


def _with_members(good, dst, compression=zipfile.ZIP_STORED, **members):
    """``good``'s members (each replaced by raw bytes where given), plus the new ones, in a fresh zip."""
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dst, "w", compression) as out:
        for info in src.infolist():
            name = info.filename[:-4]
            out.writestr(info.filename, members.pop(name) if name in members else src.read(info))
        for name, data in members.items():
            out.writestr(name + ".npy", data)
    return dst


# --- claims the file cannot back ---------------------------------------------------

@pytest.mark.parametrize("changes", [
    dict(num_layers=10 ** 6), dict(num_layers=10 ** 9), dict(hidden_size=10 ** 9), dict(batch_size=10 ** 9),
    dict(cell="lstm", num_layers=10 ** 6),
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_a_config_claiming_more_than_the_file_holds_is_refused_in_one_short_line(good, tmp_path, changes):
    bad = _with_config(good, tmp_path / "bad.npz", **changes)
    with pytest.raises(CheckpointError, match="its config claims .* more than the .* it holds") as e:
        load_checkpoint(bad)
    assert len(str(e.value)) < MESSAGE_LIMIT and "\n" not in str(e.value)


@pytest.mark.parametrize("name, dtype", [("Wxh", np.float64), ("vocab", np.int64), ("hprev", np.float64),
                                         ("config", "<U10")])
def test_a_header_claiming_more_than_its_member_stores_is_refused(good, tmp_path, name, dtype):
    bad = _with_members(good, tmp_path / "bad.npz", **{name: _npy_bytes((10 ** 10,), dtype, b"\0" * 64)})
    with pytest.raises(CheckpointError, match=f"{name} claims shape \\(10000000000,\\)|{name} must be"):
        load_checkpoint(bad)


def test_a_config_this_machine_cannot_load_is_refused(good, monkeypatch):
    monkeypatch.setattr(fastrnn.limits, "memory_limits", lambda: (1000, 1000))  # a machine of 1000 bytes
    with pytest.raises(CheckpointError, match="loading it needs about .* more than this machine's"):
        load_checkpoint(good)


def test_missing_arrays_are_named_a_few_at_a_time(good, tmp_path):
    arrays = _arrays(good)
    config = json.loads(str(arrays["config"]))
    # Enough bytes for the claim (a second layer of an 8-unit rnn), under names that are not its arrays.
    padding = {f"pad{i}": np.zeros(200) for i in range(4)}
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{**arrays, **padding, "config": np.str_(json.dumps({**config, "num_layers": 3}))})
    with pytest.raises(CheckpointError, match=r"missing Wxh_l1, Whh_l1, Wxh_l2, Whh_l2, bh_l1 and 7 more"):
        load_checkpoint(bad)


# --- members a checkpoint does not hold are never read -------------------------------

@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_unknown_members_are_never_read(good, tmp_path, compression):
    lying = _npy_bytes((10 ** 10,), np.float64, b"\0" * 64)  # read, it would allocate 80 GB
    bad = _with_members(good, tmp_path / "extra.npz", compression, lying=lying, garbage=b"not an npy file")
    with zipfile.ZipFile(bad, "a", compression) as z:  # and one whose data fails its checksum
        z.writestr("broken.npy", _npy_bytes((4,), np.float64, b"\1" * 32))
    data = bytearray(bad.read_bytes())
    with zipfile.ZipFile(bad) as z:
        info = z.getinfo("broken.npy")
    if compression == zipfile.ZIP_STORED:
        end = info.header_offset + 30 + len(info.filename) + info.compress_size
        data[end - 8:end] = b"\2" * 8
        bad.write_bytes(bytes(data))
    ckpt = load_checkpoint(bad)
    np.testing.assert_array_equal(ckpt.state.params["Wxh"], load_checkpoint(good).state.params["Wxh"])


def test_a_compressed_checkpoint_loads_like_the_plain_one(good, tmp_path):
    packed = tmp_path / "packed.npz"
    np.savez_compressed(packed, **_arrays(good))
    a, b = load_checkpoint(good), load_checkpoint(packed)
    for name, x in a.state.params.arrays.items():
        np.testing.assert_array_equal(x, b.state.params.arrays[name])
    assert a.config == b.config and a.vocab == b.vocab


# --- every command that reads a checkpoint: exit 2, one short line ---------------------

COMMANDS = {
    "sample": lambda ckpt: ["sample", ckpt, "--length", "5"],
    "eval": lambda ckpt: ["eval", ckpt],
    "export": lambda ckpt: ["export", ckpt, "out.safetensors"],
    "train --resume": lambda ckpt: ["train", "text.txt", "--resume", ckpt, "--steps", "1"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", ["num_layers=10**9", "header (10**10,)"])
def test_commands_refuse_a_crafted_checkpoint_with_exit_2_and_one_line(good, command, bad):
    if command == "export":
        _need("safetensors")
    folder = good.parent
    path = folder / f"{bad.split('=')[0].split()[0]}.npz"
    if bad.startswith("num_layers"):
        _with_config(good, path, num_layers=10 ** 9)
    else:
        _with_members(good, path, Whh=_npy_bytes((10 ** 10,), np.float64, b""))
    r = subprocess.run([sys.executable, "-m", "fastrnn", *COMMANDS[command](path.name)], cwd=folder,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.count("\n") == 1 and len(r.stderr) < MESSAGE_LIMIT, r.stderr[:2000]
    assert r.stderr.startswith(f"fastrnn {command.split()[0]}: error: '{path.name}' is not a usable fastrnn checkpoint")
    assert not (folder / "out.safetensors").exists()


# --- options an optimizer does not use are refused, not recorded ---------------------------

@pytest.mark.parametrize("flags, refused", [
    (["--model", "lstm", "--alpha", "0.9"], "--alpha is rmsprop's option; --optimizer adam (the --model lstm default)"),
    (["--alpha", "0.9"], "--alpha is rmsprop's option; --optimizer adagrad (the --model rnn default)"),
    (["--optimizer", "adam", "--alpha", "0.9"], "--alpha is rmsprop's option; --optimizer adam does not use it"),
    (["--optimizer", "adagrad", "--beta1", "0.8"], "--beta1 is adam's option; --optimizer adagrad does not use it"),
    (["--optimizer", "rmsprop", "--beta2", "0.9"], "--beta2 is adam's option; --optimizer rmsprop does not use it"),
    (["--model", "gru", "--optimizer", "rmsprop", "--beta1", "0.8"], "--beta1 is adam's option"),
    (["--model", "lstm", "--beta1", "0.8", "--beta2", "0.99"], None),
    (["--optimizer", "rmsprop", "--alpha", "0.9"], None),
], ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_train_refuses_an_option_its_optimizer_does_not_use(good, tmp_path, flags, refused):
    r = subprocess.run([sys.executable, "-m", "fastrnn", "train", good.parent / "text.txt", "--hidden-size", "8",
                        "--seq-length", "8", "--batch-size", "2", "--steps", "1", "--sample-every", "0", "--quiet",
                        "--checkpoint", "run.npz", *flags], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    if refused is None:
        assert r.returncode == 0, r.stderr[-2000:]
        config = load_checkpoint(tmp_path / "run.npz").config
        assert all(getattr(config, flags[i].lstrip("-")) == float(flags[i + 1])
                   for i in range(len(flags)) if flags[i] in ("--alpha", "--beta1", "--beta2"))
    else:
        assert r.returncode == 2 and r.stderr.startswith(f"fastrnn train: error: {refused}"), r.stderr
        assert r.stderr.count("\n") == 1 and not (tmp_path / "run.npz").exists()


@pytest.mark.parametrize("optimizer, option", [("adam", "alpha"), ("adagrad", "beta1"), ("rmsprop", "beta2"),
                                               ("adagrad", "alpha")])
def test_train_config_refuses_an_option_its_optimizer_does_not_use(optimizer, option):
    from fastrnn.config import ConfigError
    with pytest.raises(ConfigError, match=f"{option} is .*'s option; optimizer {optimizer} does not use it"):
        TrainConfig(optimizer=optimizer, **{option: 0.5}).validate()
    TrainConfig(optimizer=optimizer).validate()  # the defaults of the others are fine


def test_a_checkpoint_that_recorded_an_unused_option_still_loads(good, tmp_path):
    """An older fastrnn recorded e.g. --alpha with adagrad though it had no effect: it loads, as the default."""
    old = _with_config(good, tmp_path / "old.npz", alpha=0.5, beta1=0.7)
    assert (load_checkpoint(old).config.alpha, load_checkpoint(old).config.beta1) == (0.95, 0.9)


def test_a_huge_thread_count_is_blamed_on_threads(good, tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastrnn", "train", good.parent / "text.txt", "--model", "lstm",
                        "--hidden-size", "16", "--seq-length", "8", "--batch-size", "2", "--threads", str(10 ** 9),
                        "--steps", "1", "--quiet"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.startswith("fastrnn train: error: --threads 1,000,000,000 needs about"), r.stderr
    assert "use fewer --threads" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_clip_0_on_the_command_line_is_off_for_every_cell(good, tmp_path, cell):
    """``--clip 0`` is the command line's "off" for every cell (from Python: ``clip=None``; 0 is refused there)."""
    r = subprocess.run([sys.executable, "-m", "fastrnn", "train", good.parent / "text.txt", "--model", cell,
                        "--hidden-size", "8", "--seq-length", "8", "--batch-size", "2", "--steps", "1", "--clip", "0",
                        "--sample-every", "0", "--quiet", "--checkpoint", "run.npz"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    config = load_checkpoint(tmp_path / "run.npz").config
    assert (config.cell, config.clip, config.clip_norm) == (cell, None, None)
