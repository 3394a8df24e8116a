"""A page that shows what a model does on a text: each character coloured by the probability the model gave
it, the top predictions at each point, any unit's activations, and the units that track simple features.

numpy only; the page is one self-contained HTML file (``web/visualize.html`` with the view's style and
script, ``web/visualize.css`` and ``web/visualize.js``, inline: no network access) whose data is the JSON
of :func:`page_data` in ``<script type="application/json" id="fastrnn-data">``:

- ``text`` (str, N characters; in bytes mode each byte as the character of the same number), ``symbols``
  (each id's symbol, as text shows it);
- ``log_probs`` (N - 1,) the natural-log probability of each character after the first, from a zero
  state: the figures ``fastrnn eval --per-char`` gives; ``nats_per_char``, ``bits_per_char``;
- ``top_ids``, ``top_probs`` (N, k): after each character, the k likeliest next ids and their
  probabilities (rounded to 4 decimals);
- ``activations``: for each state (``h_l0``, ``c_l0`` for an LSTM, ``h_l1``, ...) the (N, H) array of that
  state after each character, as ``{"shape": [N, H], "scale": s, "int8": BASE64}``: row-major int8 values
  ``q`` with ``value = q * s`` (``s`` = the state's largest magnitude / 127, so within ``s / 2`` of the
  engine's values): a byte per value where JSON numbers take several;
- ``ranking``: the units whose activations track a feature of the text best (:func:`fastrnn.features
  .rank_units`), ``features``: each feature's description; ``model``: the model's summary.
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

from . import inference
from .charmodel import LN2, CharModel
from .features import FEATURES, rank_units, text_features

WEB = Path(__file__).resolve().parent / "web"  # the page (visualize.html) and its view (visualize.css, .js)
DATA_MARK, STYLE_MARK, SCRIPT_MARK = "/*FASTRNN-DATA*/", "/*FASTRNN-STYLE*/", "/*FASTRNN-SCRIPT*/"
TITLE_MARK = "FASTRNN-TITLE"
TOP_K = 5


def quantized(a: np.ndarray) -> dict:
    """``a`` (N, H) as int8 steps of its largest magnitude / 127, base64-encoded row-major."""
    a = np.asarray(a, np.float64)
    peak = float(np.abs(a).max()) if a.size else 0.0
    scale = peak / 127 if peak > 0 else 1.0
    q = np.clip(np.rint(a / scale), -127, 127).astype(np.int8)
    return {"shape": list(a.shape), "scale": scale, "int8": base64.b64encode(q.tobytes()).decode("ascii")}


def dequantized(entry: dict) -> np.ndarray:
    """The (N, H) float64 array of a :func:`quantized` entry."""
    q = np.frombuffer(base64.b64decode(entry["int8"]), np.int8).reshape(entry["shape"])
    return q.astype(np.float64) * entry["scale"]


def page_data(model: CharModel, text, title: str, source: str) -> dict:
    """The page's data for ``text`` (str, or bytes for a bytes model; at least 2 symbols) under ``model``."""
    ids = model.encode(text)
    if ids.size < 2:
        raise ValueError("the text needs at least 2 characters")
    # Two forward passes: the scoring one is eval --per-char's own (the seed's rnn scores on its one-stream
    # kernels), so the page's figures are its figures; the trace keeps every state.
    score = model.score_ids(ids[:-1], ids[1:], per_char=True)
    states, top_ids, top_probs = inference.trace(model.params, ids, top_k=TOP_K)
    bytes_mode = model.vocab.bytes_mode
    shown = text.decode("latin-1") if bytes_mode else text
    symbols = [chr(int(c)) for c in model.vocab.codes]
    features = text_features(shown)
    spec = model.params.spec
    return {
        "format": "fastrnn-visualize", "version": 1, "title": title, "source": source,
        "model": {"cell": spec.cell, "num_layers": spec.num_layers, "hidden_size": spec.hidden_size,
                  "vocab_size": spec.vocab_size, "dtype": str(model.params.dtype),
                  "parameters": spec.size,
                  "unit": "bytes" if bytes_mode else "characters"},
        "text": shown, "symbols": symbols,
        "log_probs": np.maximum(score.log_probs, -1e300).tolist(),  # a probability 0 (float32): JSON has no -inf
        "nats_per_char": score.nats_per_char,
        "bits_per_char": score.nats_per_char / LN2,
        "top_ids": top_ids.tolist(), "top_probs": np.round(top_probs, 4).tolist(),
        "activations": {name: quantized(a) for name, a in states.items()},
        "ranking": [dict(row, score=round(row["score"], 4)) for row in rank_units(states, features)],
        "features": FEATURES,
    }


def inline_assets(html: str) -> str:
    """``html`` with the view's style and script (``web/visualize.css``, ``web/visualize.js``) in place of its
    ``/*FASTRNN-STYLE*/`` and ``/*FASTRNN-SCRIPT*/`` marks."""
    return (html.replace(STYLE_MARK, (WEB / "visualize.css").read_text(encoding="utf-8"), 1)
            .replace(SCRIPT_MARK, (WEB / "visualize.js").read_text(encoding="utf-8"), 1))


def page_html(data: dict) -> str:
    """The self-contained page of :func:`page_data`'s ``data``."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("<", "\\u003c")  # no "</script>" nor "<!--" in it: it stays inside its element
    head, tail = (WEB / "visualize.html").read_text(encoding="utf-8").split(DATA_MARK)
    title = data["title"].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    head = inline_assets(head.replace(TITLE_MARK, title))
    return head + payload + inline_assets(tail)
