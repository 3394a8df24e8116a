"""What a model file holds, without training or sampling: :func:`file_info` for ``fastrnn info``.

A checkpoint (a ``.npz`` of :mod:`fastrnn.checkpoint`, a best file included) gives the model, its
vocabulary, how far it trained and with what, the corpus (and a fine-tuned model's parent) and the
fastrnn that wrote it; the validation losses come from its run's metrics log (:mod:`fastrnn.metrics`),
up to the checkpoint's step, or where there is none the best the run's plan recorded. An
exported ``.safetensors`` file (:mod:`fastrnn.export`) gives the model and its vocabulary only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .charmodel import LN2
from .limits import parameter_count
from .vocab import Vocab


def file_info(path) -> dict:
    """The facts of ``path`` as a JSON-ready dict (keys in :func:`format_info`'s order; None: not recorded).

    :class:`~fastrnn.checkpoint.CheckpointError` for a file that is neither a checkpoint nor a fastrnn
    safetensors export, naming what is wrong.
    """
    if Path(path).suffix.lower() == ".safetensors":
        return _export_info(path)
    return _checkpoint_info(path)


def _model(cell, num_layers, vocab_size, hidden_size, dtype) -> dict:
    return {"cell": cell, "num_layers": num_layers, "hidden_size": hidden_size,
            "parameters": parameter_count(cell, num_layers, vocab_size, hidden_size), "dtype": dtype}


def _vocabulary(vocab: Vocab) -> dict:
    return {"size": len(vocab), "unit": "bytes" if vocab.bytes_mode else "characters", "preview": vocab.preview()}


def _checkpoint_info(path) -> dict:
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    c, state = ckpt.config, ckpt.state
    spec = c.spec(len(ckpt.vocab))
    schedule = {"name": c.lr_schedule, "warmup_steps": c.warmup_steps}
    if c.lr_schedule == "cosine":
        schedule.update(decay_steps=c.decay_steps, min_lr_fraction=c.min_lr_fraction)
    run = Path(path) if ckpt.best_of is None else Path(path).with_name(Path(ckpt.best_of).name)  # beside it
    validation = _validation(run, state.n, c.val_fraction)
    plan = ckpt.plan or {}
    if validation is None and plan.get("best_step") is not None:
        validation = {"metrics": None, "last": None, "best": _row(plan["best_step"], plan["best_loss"])}
    return {
        "file": str(path), "kind": "checkpoint" if ckpt.best_of is None else "best file",
        "best_of": ckpt.best_of, "format_version": ckpt.format_version,
        "fastrnn_version": ckpt.written_by,
        "model": _model(spec.cell, spec.num_layers, spec.vocab_size, spec.hidden_size, c.dtype),
        "vocabulary": _vocabulary(ckpt.vocab),
        "training": {"steps": state.n, "characters_seen": state.n * c.batch_size * c.seq_length,
                     "batch_size": c.batch_size, "seq_length": c.seq_length, "dropout": c.dropout,
                     "seed": c.seed},
        "optimizer": {"name": c.optimizer, "learning_rate": c.learning_rate, "schedule": schedule,
                      "clip": c.clip, "clip_norm": c.clip_norm},
        "validation": validation,
        "corpus": {"path": ckpt.corpus_path, "length": ckpt.corpus_fingerprint.length,
                   "sha256": ckpt.corpus_fingerprint.sha256},
        "parent": ckpt.parent,
    }


def _validation(path, step, val_fraction) -> dict | None:
    """The last and the best validation loss (nats and bits per character) of the metrics log beside the
    checkpoint, over its rows up to ``step``; None when there is no log or no validation in it."""
    from .metrics import MetricsError, read_metrics, run_metrics_path

    if val_fraction == 0:
        return None
    log_path = run_metrics_path(path, resuming=True)
    try:
        table = read_metrics(log_path, warn=lambda note: None)
    except MetricsError:
        return None
    steps, losses = table["step"], table["val_loss"]
    rows = np.flatnonzero((steps <= step) & ~np.isnan(losses))
    if rows.size == 0:
        return None
    best = rows[np.argmin(losses[rows])]  # the first of equal minima
    return {"metrics": str(log_path), "last": _row(steps[rows[-1]], losses[rows[-1]]),
            "best": _row(steps[best], losses[best])}


def _row(step, loss) -> dict:
    return {"step": int(step), "nats_per_char": float(loss), "bits_per_char": float(loss) / LN2}


def _export_info(path) -> dict:
    from .checkpoint_file import CheckpointError
    from .export import FORMAT, vocab_from_metadata
    from .extras import require

    st = require("safetensors", "safetensors", "reading .safetensors")
    try:
        with st.safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"{str(path)!r} does not exist") from None
    except Exception as e:  # the library's own error types for a damaged header
        raise CheckpointError(f"{str(path)!r} is not a readable safetensors file ({str(e)[:200]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is a safetensors file without fastrnn's metadata (format "
                              f"{meta.get('format')!r})")
    try:
        vocab = vocab_from_metadata(meta)
        model = _model(meta["cell"], int(meta["num_layers"]), int(meta["vocab_size"]), int(meta["hidden_size"]),
                       meta["dtype"])
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{str(path)!r} has damaged fastrnn metadata ({str(e)[:200]})") from None
    return {"file": str(path), "kind": "safetensors export", "best_of": None, "format_version": None,
            "fastrnn_version": meta.get("fastrnn_version"), "model": model, "vocabulary": _vocabulary(vocab),
            "training": None, "optimizer": None, "validation": None, "corpus": None, "parent": None}


def _loss(v) -> str:
    return f"{v['nats_per_char']:.4f} nats/char ({v['bits_per_char']:.4f} bits/char) at step {v['step']:,}"


def format_info(info: dict) -> str:
    """``info`` (from :func:`file_info`) as aligned lines for a terminal."""
    m, v = info["model"], info["vocabulary"]
    written = f"written by fastrnn {info['fastrnn_version']}" if info["fastrnn_version"] else "writer not recorded"
    kind = info["kind"] + (f" (the best model of the run saved in {info['best_of']})" if info["best_of"] else "")
    kind += f", format {info['format_version']}" if info["format_version"] else ""
    lines = [f"{info['file']}: {kind}, {written}",
             ("model", f"{m['num_layers']}-layer {m['cell']}, hidden {m['hidden_size']:,}, "
                       f"{m['parameters']:,} parameters, {m['dtype']}"),
             ("vocabulary", f"{v['size']:,} {v['unit']}: {v['preview']}")]
    t, o = info["training"], info["optimizer"]
    if t is not None:
        lines.append(("training", f"{t['steps']:,} steps, {t['characters_seen']:,} characters seen "
                                  f"(batch {t['batch_size']:,} x seq-length {t['seq_length']:,})"
                                  + (f", dropout {t['dropout']:g}" if t["dropout"] else "") + f", seed {t['seed']}"))
        s = o["schedule"]
        rate = f"learning rate {o['learning_rate']:g}"
        if s["name"] == "cosine":
            decay = "not fixed yet" if s["decay_steps"] is None else f"{s['decay_steps']:,} steps"
            rate += f", cosine schedule (decay {decay}, floor {s['min_lr_fraction']:g}"
            rate += f", warmup {s['warmup_steps']:,})" if s["warmup_steps"] else ")"
        elif s["warmup_steps"]:
            rate += f", warmup {s['warmup_steps']:,} steps"
        clip = (f"clip by norm {o['clip_norm']:g}" if o["clip_norm"] is not None else
                f"clip to [-{o['clip']:g}, {o['clip']:g}]" if o["clip"] is not None else "no clipping")
        lines.append(("optimizer", f"{o['name']}, {rate}, {clip}"))
        val = info["validation"]
        if val is None:
            lines.append(("validation", "none recorded"))
        else:
            if val["last"] is not None:
                lines.append(("validation", f"last {_loss(val['last'])}"))
            lines.append(("" if val["last"] is not None else "validation", f"best {_loss(val['best'])}"))
        c = info["corpus"]
        name = c["path"] if c["path"] is not None else "the embedded corpus"
        lines.append(("corpus", f"{name} ({c['length']:,} bytes, sha256 {c['sha256'][:16]}...)"))
        p = info["parent"]
        if p is not None:
            lines.append(("parent", f"fine-tuned from {p['path']} at its step {p['step']:,} ({p['length']:,} "
                                    f"bytes, sha256 {p['sha256'][:16]}...), trained on "
                                    f"{p['corpus'] or 'the embedded corpus'}"))
    width = max(len(k) for k, _ in lines[1:]) + 2
    return "\n".join([lines[0]] + [f"  {k:<{width}}{text}" for k, text in lines[1:]])

