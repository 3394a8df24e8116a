"""Simple features of a text, position by position, and the units whose activations track them best.

numpy only. A feature is a number per character (1 inside double quotes, the position in the line, ...);
a unit tracks it as well as the absolute Pearson correlation of the unit's activation after each character
with the feature's value at that character says (:func:`rank_units`). The char-rnn blog's quote, line-length
and indentation neurons are found this way.
"""
from __future__ import annotations

import numpy as np

FEATURES = {
    "inside double quotes": "between an opening and a closing \" (the quotes included)",
    "inside brackets": "inside (), [] or {} (any depth)",
    "position in the line": "characters since the last newline",
    "start of a word": "a letter after a non-letter",
    "after a newline": "the first character of a line",
    "space": "a space",
    "uppercase": "an uppercase letter",
    "digit": "a digit 0-9",
    "punctuation": "one of .,;:!?",
    "indentation": "a space or tab before the first other character of its line",
}


def text_features(text: str) -> dict:
    """``{name: (N,) float64}`` for each of :data:`FEATURES`, over the N characters of ``text``."""
    n = len(text)
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), np.uint32) if n else np.zeros(0, np.uint32)
    chars = np.array(list(text)) if n else np.zeros(0, "<U1")
    letter = np.char.isalpha(chars) if n else np.zeros(0, bool)
    newline = codes == 10
    # quotes: a running count of '"'; inside while it is odd, the closing quote included
    quote = codes == ord('"')
    count = np.cumsum(quote)
    inside_quotes = ((count % 2) == 1) | quote
    depth = np.cumsum(np.isin(codes, [40, 91, 123]).astype(np.int64) - np.isin(codes, [41, 93, 125]))
    inside_brackets = (depth > 0) | np.isin(codes, [41, 93, 125])
    index = np.arange(n)
    after_newline = np.concatenate([[0], np.where(newline, index + 1, 0)[:-1]]) if n else index
    line_start = np.maximum.accumulate(after_newline)  # where each character's line starts
    position = index - line_start  # 0 at a line's first character; a newline ends its line
    previous = np.concatenate([[10], codes[:-1]]) if n else codes
    previous_letter = np.concatenate([[False], letter[:-1]]) if n else letter
    blank = np.isin(codes, [32, 9])
    last_other = np.maximum.accumulate(np.where(~blank & ~newline, index, -1)) if n else index
    indentation = blank & (last_other < line_start)  # nothing but blanks before it on its line
    values = {
        "inside double quotes": inside_quotes,
        "inside brackets": inside_brackets,
        "position in the line": position,
        "start of a word": letter & ~previous_letter,
        "after a newline": previous == 10,
        "space": codes == 32,
        "uppercase": np.char.isupper(chars) if n else np.zeros(0, bool),
        "digit": (codes >= 48) & (codes <= 57),
        "punctuation": np.isin(codes, [ord(c) for c in ".,;:!?"]),
        "indentation": indentation,
    }
    return {name: np.asarray(v, np.float64) for name, v in values.items()}


def rank_units(states: dict, features: dict, per_feature=4) -> list:
    """The (state, unit, feature) triples whose activations track a feature best, best first.

    ``states``: ``{name: (N, H) array}`` (:func:`fastrnn.inference.trace`); ``features``: ``{name: (N,)}``.
    Returns dicts ``{"state", "unit", "feature", "score"}``, ``score`` the Pearson correlation (its sign
    kept) of the unit's activations with the feature, ranked by its absolute value: each unit with the
    feature it tracks best, at most ``per_feature`` units per feature (so that one common feature does not
    fill the list). Constant features and units are left out.
    """
    names = list(features)
    f = np.stack([features[k] for k in names], axis=1)  # (N, K)
    f = f - f.mean(axis=0)
    f_norm = np.sqrt((f * f).sum(axis=0))
    rows = []
    for state, a in states.items():
        a = np.asarray(a, np.float64)
        a = a - a.mean(axis=0)
        a_norm = np.sqrt((a * a).sum(axis=0))
        denominator = np.outer(a_norm, f_norm)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = np.where(denominator > 1e-12, (a.T @ f) / np.where(denominator > 1e-12, denominator, 1), 0.0)
        best = np.argmax(np.abs(r), axis=1)  # each unit's best feature
        score = r[np.arange(r.shape[0]), best]
        for unit in np.flatnonzero(np.abs(score) > 0):
            rows.append({"state": state, "unit": int(unit), "feature": names[best[unit]],
                         "score": float(score[unit])})
    rows.sort(key=lambda row: -abs(row["score"]))
    kept = {name: 0 for name in names}
    ranked = []
    for row in rows:
        if kept[row["feature"]] < per_feature:
            kept[row["feature"]] += 1
            ranked.append(row)
    return ranked
