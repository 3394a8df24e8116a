"""``fastrnn export``: ONNX graphs run by onnxruntime and safetensors files loaded by PyTorch give fastrnn's logits.

Every cell at 1 and 2 layers in float32 and float64: onnxruntime's logits (and
final states, for a graph with state inputs) against :func:`fastrnn.inference.logits`
at 1e-4 relative in float32 and 1e-9 in float64; a wrong gate order is caught.
The safetensors file loads with ``load_state_dict(strict=True)`` into the
module of :mod:`fastrnn.interop`, whose forward gives the same logits. onnx,
onnxruntime, safetensors and torch are test-only here: their tests skip when
one is missing, except under CI (``CI`` set), where they fail.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastrnn import inference
from fastrnn import export as fx
from fastrnn.model import CELLS
from fastrnn.vocab import Vocab

from conftest import YORK_TEXT, allclose_report
from test_cells import case_seed, make_data, make_model, torch_model
from test_cli import fastrnn as run_cli

V, H, B, T = 7, 5, 3, 6
VOCAB = Vocab(np.array([10, 32, 97, 98, 99, 1000, 1001]))
CASES = [(cell, layers, dtype) for cell in CELLS for layers in (1, 2) for dtype in (np.float32, np.float64)]
TOL = {np.float32: dict(rtol=1e-4, atol_scale=1e-5), np.float64: dict(rtol=1e-9, atol_scale=1e-11)}
README = Path(__file__).resolve().parent.parent / "README.md"


def _need(module):
    """A test-only package: skip without it, fail without it under CI."""
    if os.environ.get("CI"):
        import importlib
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def ort():
    _need("onnx")
    return _need("onnxruntime")


@pytest.fixture(scope="module")
def torch():
    _need("safetensors")
    return _need("torch")


def model_and_data(cell, layers, dtype, salt=0):
    seed = case_seed(cell, layers, B, salt=40 + salt)
    params = make_model(cell, layers, "init", seed=seed, dtype=dtype)
    params["Why"][...] *= 4  # logits of a few units, not all near 0
    ids, _, state = make_data(params.spec, B, seq_length=T, seed=seed, dtype=dtype)
    return params, ids, state


def run_onnx(ort, proto, feeds):
    runtime = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return runtime.run(None, feeds)


def close(actual, expected, dtype):
    ok, worst = allclose_report(actual, expected, **TOL[dtype])
    return ok and actual.dtype == np.dtype(dtype), worst


@pytest.mark.parametrize("cell,layers,dtype", CASES)
def test_onnxruntime_logits_equal_fastrnns(ort, cell, layers, dtype):
    params, ids, state = model_and_data(cell, layers, dtype)
    recurrences = ["ops", "scan"] if dtype == np.float32 else ["scan"]  # onnxruntime has no float64 RNN ops
    expected, _ = inference.logits(params, ids)
    expected_s, last = inference.logits(params, ids, state)
    for recurrence in recurrences:
        (logits,) = run_onnx(ort, fx.onnx_model(params, VOCAB, recurrence), {"ids": ids})
        assert logits.shape == (B, T, V)
        ok, worst = close(logits, expected, dtype)
        assert ok, f"{recurrence}: logits worst/tol {worst:.3g}"
        feeds = {"ids": ids, **dict(zip(("h0", "c0"), state))}
        logits_s, *state_s = run_onnx(ort, fx.onnx_model(params, VOCAB, recurrence, state=True), feeds)
        ok, worst = close(logits_s, expected_s, dtype)
        assert ok, f"{recurrence} with a state: logits worst/tol {worst:.3g}"
        assert len(state_s) == len(last)
        for name, a, e in zip(("hn", "cn"), state_s, last):
            ok, worst = close(a, e, dtype)
            assert ok and a.shape == (layers, B, H), f"{recurrence}: {name} worst/tol {worst:.3g}"
    assert not allclose_report(expected_s, expected, **TOL[dtype])[0]  # the state matters


@pytest.mark.parametrize("cell,recurrence", [("lstm", "ops"), ("gru", "ops"), ("lstm", "scan")])
def test_a_wrong_gate_order_is_caught(ort, monkeypatch, cell, recurrence):
    params, ids, _ = model_and_data(cell, 1, np.float32, salt=1)
    expected, _ = inference.logits(params, ids)
    if recurrence == "ops":  # PyTorch's order given to ONNX's operator as it is
        monkeypatch.setitem(fx.ONNX_GATES, cell, list(range(params.spec.gates)))
    else:  # the f and g blocks of the input weights swapped
        Wxh = params["Wxh"]
        Wxh[H:2 * H], Wxh[2 * H:3 * H] = Wxh[2 * H:3 * H].copy(), Wxh[H:2 * H].copy()
    (logits,) = run_onnx(ort, fx.onnx_model(params, VOCAB, recurrence), {"ids": ids})
    assert not close(logits, expected, np.float32)[0]


def test_onnx_graph_metadata_and_operators(ort):
    import onnx

    params, _, _ = model_and_data("lstm", 2, np.float32)
    proto = fx.onnx_model(params, VOCAB)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cell"] == "lstm" and meta["num_layers"] == "2" and meta["dtype"] == "float32"
    assert (meta["vocab_size"], meta["hidden_size"]) == (str(V), str(H))
    assert fx.vocab_from_metadata(meta) == VOCAB
    assert [n.op_type for n in proto.graph.node].count("LSTM") == 2
    assert [i.name for i in proto.graph.input] == ["ids"] and [o.name for o in proto.graph.output] == ["logits"]
    onnx.checker.check_model(proto, full_check=True)
    scan = fx.onnx_model(params.astype(np.float64), VOCAB)
    assert "Scan" in [n.op_type for n in scan.graph.node] and "LSTM" not in [n.op_type for n in scan.graph.node]


@pytest.mark.parametrize("cell,layers,dtype", CASES)
def test_safetensors_loads_strictly_into_torch(torch, tmp_path, cell, layers, dtype):
    from safetensors import safe_open
    from safetensors.torch import load_file

    params, ids, state = model_and_data(cell, layers, dtype, salt=2)
    path = fx.save_safetensors(tmp_path / "m.safetensors", params, VOCAB)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert (meta["cell"], meta["num_layers"], meta["dtype"]) == (cell, str(layers), np.dtype(dtype).name)
    assert fx.vocab_from_metadata(meta) == VOCAB
    tdtype = getattr(torch, np.dtype(dtype).name)
    module = torch_model(torch, cell, V, H, layers, dtype=tdtype)
    module.load_state_dict(load_file(str(path)), strict=True)
    x = torch.nn.functional.one_hot(torch.from_numpy(ids), V).to(tdtype)
    s0 = tuple(torch.from_numpy(s) for s in state)
    with torch.no_grad():
        out, last = module.rnn(x, s0 if cell == "lstm" else s0[0])
        logits = module.decoder(out).numpy()
    expected, expected_last = inference.logits(params, ids, state)
    ok, worst = close(logits, expected, dtype)
    assert ok, f"logits worst/tol {worst:.3g}"
    last = last if isinstance(last, tuple) else (last,)
    assert all(close(a.numpy(), e, dtype)[0] for a, e in zip(last, expected_last))


# --- the command line ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two checkpoints: the seed's rnn (float64) and a 2-layer lstm in float32."""
    folder = tmp_path_factory.mktemp("export")
    (folder / "york.txt").write_text(YORK_TEXT, encoding="utf-8")
    for name, flags in (("rnn", []), ("lstm", ["--model", "lstm", "--num-layers", 2, "--dtype", "float32"])):
        r = run_cli("train", "york.txt", "--hidden-size", 12, "--seq-length", 8, "--seed", 2, *flags, "--steps", 20,
                    "--sample-every", 0, "--log-every", 0, "--checkpoint", f"{name}.npz", cwd=folder)
        assert r.returncode == 0, r.stderr
    return folder


@pytest.mark.parametrize("name", ["rnn", "lstm"])
def test_cli_export_onnx_and_safetensors(ort, torch, trained, name):
    from fastrnn.checkpoint import load_checkpoint

    ckpt = load_checkpoint(trained / f"{name}.npz")
    ids = ckpt.vocab.encode("Now is the winter")[None, :]
    expected, _ = inference.logits(ckpt.model.params, ids)
    dtype = np.dtype(ckpt.config.dtype).type
    r = run_cli("export", f"{name}.npz", f"{name}.onnx", "--state", cwd=trained)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {name}.onnx: ")
    state = [np.zeros((ckpt.config.num_layers, 1, 12), dtype)] * (2 if name == "lstm" else 1)
    import onnx

    logits, *_ = run_onnx(ort, onnx.load(str(trained / f"{name}.onnx")), {"ids": ids, **dict(zip(("h0", "c0"), state))})
    assert close(logits, expected, dtype)[0]
    r = run_cli("export", f"{name}.npz", f"{name}.safetensors", cwd=trained)
    assert r.returncode == 0, r.stderr
    import fastrnn
    from safetensors.numpy import load_file

    arrays = load_file(str(trained / f"{name}.safetensors"))
    assert set(arrays) == set(fastrnn.to_torch(ckpt.model.params))
    if name == "rnn":  # an existing file is replaced only with --overwrite (refusals: see below)
        (trained / "rnn.safetensors").write_bytes(b"old")
        assert run_cli("export", "rnn.npz", "rnn.safetensors", "--overwrite", cwd=trained).returncode == 0
        assert set(load_file(str(trained / "rnn.safetensors"))) == set(arrays)


def test_readme_pytorch_lines_load_and_sample(torch, trained):
    """The README's PyTorch lines, run as they are on an exported file."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- pytorch-load:start -->\n```python\n(.*?)```\n<!-- pytorch-load:end -->", text, re.S)
    assert block, "README has no marked PyTorch block"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 16
    r = run_cli("export", "lstm.npz", "model.safetensors", "--overwrite", cwd=trained)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-c", code], cwd=trained, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) >= 200 and set(r.stdout) <= set(YORK_TEXT)


def _without(tmp_path, module):
    """An environment in which ``import module`` fails, as when the package is not installed."""
    fake = tmp_path / f"no_{module}"
    fake.mkdir(exist_ok=True)
    (fake / f"{module}.py").write_text(f"raise ImportError({('No module named ' + module)!r})\n")
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


@pytest.mark.parametrize("args,env_without,message", [
    (["rnn.npz", "x.onnx"], "onnx", "writing .onnx needs the onnx package: pip install 'fastrnn[onnx]'"),
    (["rnn.npz", "x.safetensors"], "safetensors",
     "writing .safetensors needs the safetensors package: pip install 'fastrnn[safetensors]'"),
    (["rnn.npz", "x.pt"], None, "use .onnx or .safetensors"),
    (["rnn.npz", "x"], None, "use .onnx or .safetensors"),
    (["rnn.npz", "x.safetensors", "--state"], None, "--state adds state inputs"),
    (["missing.npz", "x.onnx"], None, "missing.npz"),
    (["missing.npz", "x.onnx"], "onnx", "checkpoint 'missing.npz' does not exist"),  # the input before the extra
    (["rnn.npz", "old.onnx"], None, "'old.onnx' already exists; pass --overwrite to replace it"),
])
def test_cli_export_errors_exit_2(trained, tmp_path, args, env_without, message):
    env = _without(tmp_path, env_without) if env_without else None
    (trained / "old.onnx").write_bytes(b"old")
    r = run_cli("export", *args, cwd=trained, env=env)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (trained / "old.onnx").read_bytes() == b"old"
    assert args[1] == "old.onnx" or not (trained / args[1]).exists()
