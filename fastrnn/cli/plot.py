"""``fastrnn plot``: the losses of metrics logs in a PNG."""
from __future__ import annotations

from .exits import UsageError
from .outputs import output_path, refuse_existing, refuse_input


def run_plot(args) -> int:
    from ..extras import MissingExtra
    from ..plot import plot_runs

    out = output_path("-o ", args.output, (".png",), "fastrnn plot writes PNG files; name it NAME.png")
    for metrics in args.metrics:
        refuse_input([out], metrics, "metrics log")
    refuse_existing([out], args.overwrite)
    try:
        plot_runs(args.metrics, out, x=args.x, title=args.title)  # an OSError: OutputWriteError, one line in _run
    except MissingExtra as e:
        raise UsageError(str(e)) from None
    print(f"wrote {args.output}: {len(args.metrics)} run{'s' if len(args.metrics) > 1 else ''} against {args.x}")
    return 0
