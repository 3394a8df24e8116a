"""``fastrnn info``: what a checkpoint, a best file or an exported ``.safetensors`` file holds."""
from __future__ import annotations

import json

from ..extras import MissingExtra
from ..model_info import file_info, format_info
from .exits import UsageError
from .sample import utf8_stdout


def run_info(args) -> int:
    try:
        info = file_info(args.file)
    except MissingExtra as e:
        raise UsageError(str(e)) from None
    utf8_stdout()
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else format_info(info))
    return 0
