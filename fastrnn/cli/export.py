"""``fastrnn export``: a checkpoint's model as ONNX or safetensors."""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import load_checkpoint
from .exits import UsageError
from .outputs import output_path, refuse_existing, refuse_input


def run_export(args) -> int:
    from ..export import EXTRAS, WRITERS, onnx_files
    from ..extras import MissingExtra, require

    suffix = Path(args.out).suffix.lower()
    out = output_path("", args.out, WRITERS, f"cannot tell the format from its suffix ({suffix or 'none'}): "
                                              f"use .onnx or .safetensors")
    if args.state and suffix != ".onnx":
        raise UsageError("--state adds state inputs and outputs to an ONNX graph; a .safetensors file holds "
                         "weights only")
    refuse_input([out], args.checkpoint, "checkpoint")
    refuse_existing([out], args.overwrite)
    ckpt = load_checkpoint(args.checkpoint)  # the input first: a missing file is the first thing to fix
    module, extra = EXTRAS[suffix]
    try:
        require(module, extra, f"writing {suffix}")
    except MissingExtra as e:
        raise UsageError(str(e)) from None
    params = ckpt.model.params
    files = onnx_files(out, params) if suffix == ".onnx" else [out]
    refuse_input(files, args.checkpoint, "checkpoint")
    refuse_existing(files, args.overwrite)
    extra_args = {"state": True} if args.state else {}
    WRITERS[suffix](out, params, ckpt.vocab, **extra_args)  # an OSError: OutputWriteError, one line in _run
    spec = ckpt.config.spec(len(ckpt.vocab))
    beside = f" (weights in {files[1].name} beside it)" if len(files) > 1 else ""
    print(f"wrote {args.out}{beside}: {spec.num_layers}-layer {spec.cell}, hidden {spec.hidden_size}, vocab "
          f"{spec.vocab_size}, {ckpt.config.dtype}" + (", with state inputs and outputs" if args.state else ""))
    return 0
