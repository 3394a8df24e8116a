"""Where a training step's time goes: every engine kernel call timed, grouped by what it does.

    python -m benchmarks.step_split [--points NAME ...] [--threads 1 2] [--steps 5] [--out-dir DIR]

For each point of :data:`benchmarks.side_by_side.POINTS` and thread count, a
``cells``-group trainer (:func:`benchmarks.test_cells._trainer`) is warmed, then
every function of the engine's kernel modules is wrapped with a timer and
``--steps`` steps are trained. Each kernel's seconds per step fall into one
phase of :data:`PHASES` (the recurrence forward and backward with their gate
arithmetic, the packing of Whh, the products over all T * B rows, the head, the
optimizer); what no kernel accounts for is "Python and the rest" (the
orchestration between calls). Writes ``step_split.json`` (per kernel and per
phase, with the machine: CPU model, ISA, BLAS kernel) and ``step_split.md``.
The timers add a little to each call: compare phases within one run.
"""
from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

from ._support import pinned_threads
from .quality import machine
from .side_by_side import BENCH_RESULTS, POINTS, write_run

#: phase: the kernels (``module.function``) it is made of; a kernel named nowhere is "other kernels"
PHASES = {
    "recurrence forward (product + gates)": ("rnn_forward", "lstm_forward", "gru_forward", "rnn_forward_parts",
                                             "lstm_forward_parts", "gru_forward_parts"),
    "recurrence backward (product + gates)": ("rnn_backward", "lstm_backward", "gru_backward",
                                              "rnn_backward_parts", "lstm_backward_parts", "gru_backward_parts"),
    "packing Whh": ("pack_forward", "pack_backward", "pack_parts"),
    "products over T*B rows": ("project_inputs", "project_inputs_parts", "recurrent_grads", "gram_parts",
                               "input_grads", "input_grads_parts", "sum_parts", "embed_ids", "embedding_grads",
                               "sum_rows", "transpose_into"),
    "head (softmax, loss, grads)": ("head_forward", "head_forward_parts", "head_backward", "head_backward_parts"),
    "chunks of streams at once (their whole forward and backward)": ("chunk_steps",),
}
MODULES = ("cell_kernels", "cell_parts_kernels", "stack_kernels", "optim_kernels", "chunk_kernels")


def _phase(kernel: str) -> str:
    name = kernel.split(".")[-1]
    for phase, names in PHASES.items():
        if name in names:
            return phase
    return "optimizer" if kernel.startswith("optim_kernels.") else "other kernels"


def split(name: str, threads: int, steps: int, sizes=None) -> dict:
    """Seconds per step of each kernel and phase for one point at ``threads``."""
    import importlib

    from .test_cells import _trainer

    cell, layers, H, B, T, _, dtype = POINTS[name]
    if sizes:
        H, B, T = sizes
    seconds = collections.Counter()
    patched = []
    with pinned_threads(threads):
        trainer = _trainer(cell, layers, H, B, T, threads, dtype)
        trainer.train(2)
        try:
            for module_name in MODULES:
                module = importlib.import_module(f"fastrnn.{module_name}")
                for attr in dir(module):
                    fn = getattr(module, attr)
                    if hasattr(fn, "py_func"):  # a compiled kernel
                        patched.append((module, attr, fn))
                        setattr(module, attr, _timed(fn, f"{module_name}.{attr}", seconds))
            start = time.perf_counter()
            trainer.train(steps)
            total = time.perf_counter() - start
        finally:
            for module, attr, fn in patched:
                setattr(module, attr, fn)
    kernels = {k: v / steps for k, v in seconds.most_common()}
    phases = collections.Counter()
    for kernel, s in kernels.items():
        phases[_phase(kernel)] += s
    chunks = trainer.workspace.n_chunks
    phases["Python and the rest"] = total / steps - sum(kernels.values())  # one thread of Python calls them all
    return dict(point=name, cell=cell, num_layers=layers, hidden_size=H, batch_size=B, seq_length=T, dtype=dtype,
                threads=threads, split=trainer.workspace.split, chunks=chunks, seconds_per_step=total / steps,
                kernels=kernels, phases=dict(phases))


def _timed(fn, key, seconds):
    def call(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - start
    return call


def table(run: dict) -> str:
    m = run["machine"]
    lines = [f"CPU: {m['cpu']}; ISA: {' '.join(m['isa'])}; BLAS: "
             + ", ".join(f"{b['library']} {b['architecture']}" for b in m["blas"])
             + f"; OPENBLAS env: {m['openblas_env'] or 'unset'}; {run['steps']} steps timed.", ""]
    phases = list(PHASES) + ["optimizer", "other kernels", "Python and the rest"]
    lines.append("| point | threads | ms/step | " + " | ".join(phases) + " |")
    lines.append("|---|---|---|" + "---|" * len(phases))
    for row in run["results"]:
        total = row["seconds_per_step"]
        cells = [f"{100 * row['phases'].get(p, 0.0) / total:.0f} %" for p in phases]
        threads = f"{row['threads']}" + (f" ({row['chunks']} chunks)" if row["chunks"] > 1 else "")
        lines.append(f"| {row['point']} B{row['batch_size']} T{row['seq_length']} {row['dtype']} | {threads} "
                     f"| {1e3 * total:.1f} | " + " | ".join(cells) + " |")
    lines += ["", "A step whose streams run as chunks (2 threads below 256 units) runs their whole forward and "
              "backward in one compiled call, which the timers cannot split."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.step_split", description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", nargs="+", choices=sorted(POINTS), default=list(POINTS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs=3, metavar=("H", "B", "T"), help="override (a smoke run)")
    parser.add_argument("--out-dir", default=str(BENCH_RESULTS))
    args = parser.parse_args(argv)
    run = dict(machine=machine(), steps=args.steps, results=[])
    for name in args.points:
        for threads in args.threads:
            run["results"].append(split(name, threads, args.steps, args.sizes))
    write_run(Path(args.out_dir), "step_split", run, table(run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
