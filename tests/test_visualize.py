"""``fastrnn visualize``: the engine's per-position states and predictions (against the numpy twin), the text's
features and the units that track them, the page's data (against ``eval --per-char`` and the engine), the
page rendered in headless Chromium, and bad input."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from fastrnn import inference, reference
from fastrnn.checkpoint import load_checkpoint
from fastrnn.features import FEATURES, rank_units, text_features
from fastrnn.model import init_params
from fastrnn._validate import check_model
from fastrnn.visualize import dequantized, quantized

from test_cli import fastrnn

TEXT = 'He said "stop (now)", then\n  left; 42 days.\nShe said "go".\n'
CASES = [("rnn", 1), ("rnn", 2), ("lstm", 2), ("gru", 1)]


def big_model(cell, layers, dtype="float64", V=12, H=7, seed=0):
    """Weights large enough that gates saturate (as the numerical checks need)."""
    params = check_model(init_params(V, H, cell, layers, seed=seed, dtype=np.dtype(dtype)))
    rng = np.random.default_rng(seed + 1)
    params.flat[:] = rng.normal(0, 1.5, params.flat.size).astype(dtype) * (params.flat != 0)
    return params


@pytest.mark.parametrize("cell, layers", CASES)
@pytest.mark.parametrize("chunk", [1000, 4])
def test_trace_gives_the_twins_state_after_each_id_and_the_likeliest_next_ids(cell, layers, chunk):
    params = big_model(cell, layers)
    ids = np.random.default_rng(2).integers(0, 12, 15)
    states, top_ids, top_probs = inference.trace(params, ids, top_k=5, chunk=chunk)
    spec = params.spec
    assert sorted(states) == sorted(f"{s}_l{i}" for i in range(layers) for s in spec.state_names)
    for t in range(ids.size):
        _, last = reference.stack_sequence_loss(params, ids[None, :t + 1], ids[None, :t + 1])  # (L, 1, H) each
        for s, arr in zip(spec.state_names, last):
            for layer in range(layers):
                np.testing.assert_allclose(states[f"{s}_l{layer}"][t], arr[layer, 0], rtol=1e-10, atol=1e-12)
    logits, _ = inference.logits(params, ids)
    p = np.exp(logits[0] - logits[0].max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    want_ids = np.argsort(-p, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(top_ids, want_ids)
    np.testing.assert_allclose(top_probs, np.take_along_axis(p, want_ids, axis=1), rtol=1e-10)
    assert np.all(np.diff(top_probs, axis=1) <= 0)


def test_features_of_a_text():
    text = '  a "b (c)" d\n x\n'
    f = text_features(text)
    assert set(f) == set(FEATURES)
    as_bits = {k: "".join(str(int(v)) for v in f[k]) for k in f}
    assert as_bits["inside double quotes"] == "00001111111000000"
    assert as_bits["inside brackets"] == "00000001110000000"
    assert f["position in the line"].tolist() == list(range(14)) + [0, 1, 2]
    assert as_bits["start of a word"] == "00100100100010010"
    assert as_bits["after a newline"] == "10000000000000100"
    assert as_bits["indentation"] == "11000000000000100"
    assert all(v.size == 0 for v in text_features("").values())


def test_rank_units_puts_a_unit_that_tracks_a_feature_first():
    f = text_features(TEXT)
    rng = np.random.default_rng(0)
    h = rng.normal(0, 0.3, (len(TEXT), 6))
    h[:, 4] = -0.9 * f["inside double quotes"] + rng.normal(0, 0.01, len(TEXT))
    h[:, 2] = 0.5  # a constant unit is left out
    ranking = rank_units({"h_l0": h, "h_l1": rng.normal(0, 0.3, (len(TEXT), 3))}, f)
    assert ranking[0]["state"] == "h_l0" and ranking[0]["unit"] == 4
    assert ranking[0]["feature"] == "inside double quotes" and ranking[0]["score"] < -0.99
    assert all(not (r["state"] == "h_l0" and r["unit"] == 2) for r in ranking)
    assert [abs(r["score"]) for r in ranking] == sorted((abs(r["score"]) for r in ranking), reverse=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_quantized_activations_are_within_half_a_step(dtype):
    a = np.random.default_rng(0).normal(0, 3, (50, 9)).astype(dtype)
    entry = quantized(a)
    assert entry["shape"] == [50, 9]
    assert np.abs(dequantized(entry) - a).max() <= entry["scale"] / 2 + 1e-12
    assert np.array_equal(dequantized(quantized(np.zeros((3, 2)))), np.zeros((3, 2)))


def page_json(path):
    html = path.read_text(encoding="utf-8")
    found = re.search(r'<script type="application/json" id="fastrnn-data">(.*?)</script>', html, re.S)
    assert found, "no data element"
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-layer LSTM and the seed's rnn, trained briefly on a text with quotes and brackets."""
    folder = tmp_path_factory.mktemp("visualize")
    (folder / "t.txt").write_text(TEXT * 60, encoding="utf-8")
    for name, flags in (("lstm", ["--model", "lstm", "--hidden-size", "16", "--batch-size", "4",
                                  "--seq-length", "16"]),
                        ("rnn", ["--hidden-size", "16"])):
        r = fastrnn("train", "t.txt", *flags, "--steps", 40, "--seed", 1, "--sample-every", 0,
                    "--checkpoint", f"{name}.npz", cwd=folder)
        assert r.returncode == 0, r.stderr
    (folder / "show.txt").write_text(TEXT * 3, encoding="utf-8")
    return folder


@pytest.mark.parametrize("model", ["lstm", "rnn"])
def test_the_pages_data_are_eval_per_chars_figures_and_the_engines_states(trained, model):
    r = fastrnn("visualize", f"{model}.npz", "show.txt", "-o", f"{model}.html", cwd=trained)
    assert r.returncode == 0 and r.stdout == "", r.stderr
    data = page_json(trained / f"{model}.html")
    assert data["text"] == TEXT * 3
    ev = fastrnn("eval", f"{model}.npz", "show.txt", "--per-char", cwd=trained)
    rows = [line.split("\t") for line in ev.stdout.splitlines()[1:-1]]
    assert len(rows) == len(data["log_probs"]) == len(TEXT) * 3 - 1
    assert [f"{math.exp(lp):.6f}" for lp in data["log_probs"]] == [row[2] for row in rows]
    assert [f"{-lp / math.log(2):.3f}" for lp in data["log_probs"]] == [row[3] for row in rows]
    ckpt = load_checkpoint(trained / f"{model}.npz")
    ids = ckpt.vocab.encode(TEXT * 3)
    states, top_ids, top_probs = inference.trace(ckpt.state.params, ids)
    top = f"h_l{ckpt.config.num_layers - 1}"
    entry = data["activations"][top]
    assert entry["shape"] == [ids.size, ckpt.config.hidden_size]
    assert np.abs(dequantized(entry) - states[top]).max() <= entry["scale"] / 2 * (1 + 1e-6)
    assert set(data["activations"]) == set(states)
    assert data["top_ids"] == top_ids.tolist()
    np.testing.assert_allclose(data["top_probs"], top_probs, atol=5e-5)
    assert data["ranking"] and {"state", "unit", "feature", "score"} == set(data["ranking"][0])
    m = data["model"]
    assert (m["cell"], m["num_layers"], m["hidden_size"]) == (ckpt.config.cell, ckpt.config.num_layers, 16)
    assert abs(data["nats_per_char"] - float(re.search(r"([0-9.]+) nats/char", ev.stdout).group(1))) < 1e-4


def test_the_held_out_split_is_the_default_text(trained):
    r = fastrnn("visualize", "lstm.npz", "-o", "held.html", "--length", 50, cwd=trained)
    assert r.returncode == 0, r.stderr
    data = page_json(trained / "held.html")
    corpus = (TEXT * 60)
    held = corpus[len(corpus) - int(len(corpus) * 0.05):]
    assert data["text"] == held[:50] and "held-out split" in data["source"]


@pytest.mark.parametrize("args, message", [
    (["lstm.npz", "show.txt", "-o", "page.txt"], "the page is an .html file"),
    (["lstm.npz", "show.txt", "-o", "p.html", "--length", "1"], "at least 2"),
    (["missing.npz", "show.txt", "-o", "p.html"], "does not exist"),
    (["lstm.npz", "unknown.txt", "-o", "p.html"], "not in the model's vocabulary"),
    (["lstm.npz", "show.txt", "-o", "show.html", "--length", "0"], "at least 2"),
    (["lstm.npz", "-", "-o", "p.html"], "standard input is empty"),
    (["lstm.npz", "show.txt", "-o", "lstm.npz"], "the page is an .html file"),
    (["lstm.npz", "show.txt", "-o", "nofolder/p.html"], "does not exist"),
], ids=["suffix", "short", "missing", "unknown-symbols", "zero-length", "empty-stdin", "over-checkpoint",
        "no-folder"])
def test_bad_input_is_one_line_and_exit_2(trained, args, message):
    (trained / "unknown.txt").write_text("日本語", encoding="utf-8")
    r = fastrnn("visualize", *args, cwd=trained, input="")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
    assert not (trained / "p.html").exists()


# --- the page in a real browser ------------------------------------------------------------------

def chromium():
    """Headless Chromium's command (Debian's ``chromium``): skip without it, fail under CI."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("no chromium on PATH (apt-get install chromium): the page tests need a browser")
    pytest.skip("no chromium on PATH (apt-get install chromium)")


def browse(page, *flags, timeout=120):
    return subprocess.run([chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-dev-shm-usage", "--virtual-time-budget=20000", *flags,
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=timeout)


def test_the_page_renders_in_headless_chromium(trained):
    assert fastrnn("visualize", "lstm.npz", "show.txt", "-o", "lstm.html", cwd=trained).returncode == 0
    page = trained / "lstm.html"
    r = browse(page, "--dump-dom")
    assert r.returncode == 0, r.stderr[-2000:]
    dom = r.stdout
    assert 'data-ready="1"' in dom, dom[-2000:]  # the script ran to its end
    spans = re.findall(r'<span data-i="(\d+)"[^>]*>', dom)
    assert [int(i) for i in spans] == list(range(len(TEXT) * 3))  # one element per character
    assert 'style="background' in dom and "nats/char" in dom
    assert dom.count("<tr") >= 2  # the ranking's rows
    shot = trained / "shot.png"
    r = browse(page, f"--screenshot={shot}", "--window-size=1000,700")
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (700, 1000)
    assert np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0).shape[0] > 20  # not blank: text and colours


def test_a_text_with_markup_stays_inside_the_pages_data():
    from fastrnn.charmodel import CharModel
    from fastrnn.visualize import page_data, page_html
    from fastrnn.vocab import Vocab

    text = 'a</script><script>alert(1)</script><!-- "/*FASTRNN-DATA*/"'
    model = CharModel(big_model("lstm", 1, V=len(set(text))), Vocab.from_text(text))
    html = page_html(page_data(model, text, title="<b>t</b> & co", source="test"))
    assert html.count("</script>") == 2  # the data's element and the script's: the text closes nothing
    data = json.loads(re.search(r'id="fastrnn-data">(.*?)</script>', html, re.S).group(1))
    assert data["text"] == text and "&lt;b&gt;t&lt;/b&gt; &amp; co" in html
