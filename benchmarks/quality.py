"""Time to quality: held-out loss against wall-clock seconds, fastrnn's recipe beside the same LSTM in PyTorch.

For each budget S and system, one whole process trains for S seconds of wall
time counted from its own start (imports and the kernel-cache load included),
then scores the held-out split (the last ``--val-fraction`` of the text) from
a zero state, one stream, and reports nats/char; the process's wall time
(training and that validation) is recorded beside the budget.

- fastrnn: ``fastrnn train CORPUS --model lstm --time-budget S`` (the recipe:
  no other model flag), after one untimed ``--steps 1`` run of the same command
  that fills the kernel cache.
- PyTorch: this module's :func:`torch_run` in its own process, the recipe's
  model and update in PyTorch (``benchmarks.torch_models.CharModel``, one-hot or
  embedding input, whichever the first probe finds faster; ``torch.optim.Adam``,
  ``clip_grad_norm_``, the recipe's warmup and cosine decay sized to the budget
  by the same probe as fastrnn's; B contiguous shards of the training split
  walked in lockstep, state carried and reset as fastrnn does; the recipe of the
  budget (``fastrnn.config.recipes_for``: from ``MEDIUM_BUDGET_SECONDS`` a larger
  model, from ``LONG_BUDGET_SECONDS`` the long recipe's size, rate and dropout, on
  the same outputs as fastrnn's with PyTorch's own masks)), ``torch`` held to the
  same threads.

``python -m benchmarks.quality --budgets 25 100`` writes ``bench_results/quality.json``
(with the CPU, its ISA flags and the BLAS kernel that ran), a table
(``quality.md``), a plot of val nats/char against seconds, one line per
system and corpus (``quality.png``), and the README's time-to-quality section
(one section per ``--out-dir``: :func:`readme_markers`).
``--corpora code`` trains on a megabyte of this Python's own standard library
sources instead of tiny shakespeare. The default test suite runs a 10-second
version of both systems on a small model and text (``benchmarks/test_quality.py``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from .report.readme import replace_between

ROOT = Path(__file__).resolve().parent.parent
BENCH_RESULTS = ROOT / "bench_results"
CODE_BYTES = 1 << 20
VALIDATION = re.compile(r"validation ([0-9.]+) nats/char")


# --- corpora ----------------------------------------------------------------------

def code_corpus(folder: Path) -> Path:
    """A megabyte of Python source: this interpreter's standard library, files in sorted order (ASCII only)."""
    path = folder / "python-stdlib.txt"
    if path.exists():
        return path
    lib = Path(sysconfig.get_paths()["stdlib"])
    out, size = [], 0
    for f in sorted(lib.glob("*.py")):
        text = f.read_text(encoding="utf-8", errors="replace")
        if not text.isascii():
            continue
        out.append(text)
        size += len(text)
        if size >= CODE_BYTES:
            break
    path.write_text("".join(out)[:CODE_BYTES], encoding="utf-8")
    return path


def corpus_path(name: str) -> Path | None:
    """None: the embedded tiny shakespeare; "code": :func:`code_corpus` (made in the temp folder); else a file."""
    if name in ("shakespeare", "tinyshakespeare"):
        return None
    if name == "code":
        folder = Path(tempfile.gettempdir()) / "fastrnn-bench"
        folder.mkdir(exist_ok=True)
        return code_corpus(folder)
    return Path(name)


# --- machine ---------------------------------------------------------------------------

def machine() -> dict:
    """CPU model, its SIMD flags, the BLAS that numpy loaded (kernel, threads), library versions."""
    import numba
    import numpy as np
    from threadpoolctl import threadpool_info

    model, flags = platform.processor(), []
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:  # CPU 0's
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == platform.processor():
            model = value.strip()
        elif key.strip() == "flags":
            flags = sorted(f for f in value.split() if f.startswith(("avx", "fma", "sse4")))
            break
    import scipy.linalg  # noqa: F401  (its OpenBLAS is the one Numba's np.dot calls)
    blas = [{**{k: lib.get(k) for k in ("internal_api", "version", "architecture", "num_threads")},
             "library": Path(lib.get("filepath") or "").name}  # the file's name, not where it is installed
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return dict(cpu=model, isa=flags, cores=os.cpu_count(), blas=blas, python=platform.python_version(),
                numpy=np.__version__, numba=numba.__version__,
                openblas_env={k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
                              if k in os.environ})


def machine_text(m: dict) -> str:
    """:func:`machine`'s facts in one line: the CPU, its cores, the BLAS kernels, the OpenBLAS variables."""
    blas = ", ".join(f"{b['internal_api']} {b['architecture']}" for b in m["blas"]) or "none found"
    env = "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset" if not m["openblas_env"] else f"with {m['openblas_env']}"
    return f"{m['cpu']}, {m['cores']} cores, BLAS {blas}, {env}"


# --- one fastrnn run ---------------------------------------------------------------------

SIZES = ("hidden_size", "batch_size", "seq_length")  # the recipe's, unless overridden (for the smoke test)


def fastrnn_run(corpus, budget, val_fraction, threads, seed=0, sizes=None) -> dict:
    """One ``fastrnn train --model lstm --time-budget budget`` process; its loss, steps and wall seconds."""
    extra = [x for k, v in (sizes or {}).items() for x in ("--" + k.replace("_", "-"), str(v))]
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "fastrnn", "train", *([str(corpus)] if corpus else []), "--model", "lstm",
                "--val-fraction", str(val_fraction), "--threads", str(threads), "--seed", str(seed),
                "--eval-every", "0", "--sample-every", "0", "--checkpoint-every", "0", *extra]
        warm = subprocess.run([*base, "--steps", "1", "--checkpoint", f"{tmp}/warm.npz"], capture_output=True,
                              text=True)
        if warm.returncode:
            raise RuntimeError(f"fastrnn warm-up failed: {warm.stderr.strip()}")
        start = time.perf_counter()
        r = subprocess.run([*base, "--steps", str(10**9), "--time-budget", str(budget), "--log-every", "1000000",
                            "--checkpoint", f"{tmp}/run.npz"], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if r.returncode:
            raise RuntimeError(f"fastrnn run failed: {r.stderr.strip()}")
        found = VALIDATION.findall(r.stdout)
        steps = re.search(r"reached at step ([\d,]+)", r.stdout)
        decay = re.search(r"cosine decay to [0-9.]+x by step ([\d,]+)", r.stdout)
        header = next((line for line in r.stdout.splitlines() if line.startswith("new model")), "")
    return dict(system="fastrnn", budget_s=budget, wall_s=wall, val_nats=float(found[-1]),
                steps=int(steps.group(1).replace(",", "")) if steps else None,
                decay_steps=int(decay.group(1).replace(",", "")) if decay else None, config=header)


# --- one PyTorch run (in its own process) ---------------------------------------------------

def torch_recipe(budget, sizes=None) -> dict:
    """The recipe ``fastrnn train --model lstm --time-budget budget`` trains (that of
    ``fastrnn.config.recipes_for(budget)``), with ``sizes`` overriding its sizes: what the PyTorch side trains."""
    from fastrnn.config import recipe_config

    config = recipe_config(time_budget=budget, cell="lstm", **(sizes or {}))
    names = ("hidden_size", "num_layers", "batch_size", "seq_length", "learning_rate", "warmup_steps",
             "min_lr_fraction", "clip_norm", "dropout")
    return {name: getattr(config, name) for name in names}


def torch_run(corpus, budget, val_fraction, threads, seed=0, sizes=None) -> dict:
    """:func:`_torch_main` in a fresh process (so its imports count, as fastrnn's do)."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "benchmarks.quality", "--torch-child", json.dumps(dict(
        corpus=str(corpus) if corpus else None, budget=budget, val_fraction=val_fraction, threads=threads,
        seed=seed, recipe=torch_recipe(budget, sizes)))], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if r.returncode:
        raise RuntimeError(f"PyTorch run failed: {r.stderr.strip()[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out.update(system="pytorch", budget_s=budget, wall_s=wall)
    return out


def _torch_main(args: dict) -> dict:
    started = time.perf_counter()
    import numpy as np
    import torch

    import fastrnn
    from fastrnn.corpus import held_out_count
    from fastrnn.optim import scheduled_rate

    from .torch_models import CharModel, detach, zero_state

    recipe = args["recipe"]
    torch.set_num_threads(args["threads"])
    torch.manual_seed(args["seed"])
    corpus = fastrnn.load_corpus(args["corpus"])
    ids = np.asarray(corpus.ids, np.int64)
    n_val = held_out_count(ids.size, args["val_fraction"])
    train, val = torch.from_numpy(ids[:ids.size - n_val].copy()), torch.from_numpy(ids[ids.size - n_val:].copy())
    V, H, L = len(corpus.vocab), recipe["hidden_size"], recipe["num_layers"]
    B, T = recipe["batch_size"], recipe["seq_length"]
    lr, warmup, floor = recipe["learning_rate"], recipe["warmup_steps"], recipe["min_lr_fraction"]
    shard = train.numel() // B
    offsets = torch.arange(T + 1)

    def make(input_kind):
        torch.manual_seed(args["seed"])
        model = CharModel("lstm", V, H, L, input=input_kind, batch_first=True, dropout=recipe["dropout"])
        params = model.trained_parameters()
        return model, params, torch.optim.Adam(params, lr=lr)

    def step(model, params, opt, p, state, rate):
        windows = train[(torch.arange(B) * shard + p)[:, None] + offsets]
        logits, state = model(windows[:, :-1], state)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), windows[:, 1:].reshape(-1),
                                                 reduction="sum") / B
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, recipe["clip_norm"])
        for group in opt.param_groups:
            group["lr"] = rate
        opt.step()
        return detach(state), loss.item() / T

    # Input form: the faster of one-hot and embedding on a few untimed steps (both start from the seed).
    speeds = {}
    for kind in ("onehot", "embedding"):
        model, params, opt = make(kind)
        state = zero_state("lstm", L, B, H)
        t0 = time.perf_counter()
        for s in range(3):
            state, _ = step(model, params, opt, s * T, state, lr)
        speeds[kind] = time.perf_counter() - t0
    kind = min(speeds, key=speeds.get)
    model, params, opt = make(kind)
    deadline = started + args["budget"]
    state, p, n = zero_state("lstm", L, B, H), 0, 0
    probe_start, decay_steps = time.perf_counter(), None
    probe = max(2.0, 0.03 * args["budget"])
    while n == 0 or time.perf_counter() < deadline:  # one step at least, however slow the start
        n += 1
        rate = scheduled_rate(lr, n, "cosine", warmup, decay_steps, floor)  # fastrnn's schedule, the same formula
        state, loss = step(model, params, opt, p, state, rate)
        p += T
        if p + T + 1 >= shard:
            p, state = 0, zero_state("lstm", L, B, H)
        now = time.perf_counter()
        if decay_steps is None and now - probe_start >= probe:
            decay_steps = n + int(n / (now - probe_start) * max(deadline - now, 0.0))
    model.eval()  # no dropout
    with torch.no_grad():  # the held-out split from a zero state, one stream, in pieces with the state carried
        h, total = None, 0.0
        for s in range(0, val.numel() - 1, 4096):
            piece = val[s:s + 4097]
            logits, h = model(piece[None, :-1], h)
            total += float(torch.nn.functional.cross_entropy(logits[0], piece[1:], reduction="sum"))
    return dict(val_nats=total / (val.numel() - 1), steps=n, decay_steps=decay_steps, input=kind,
                torch=torch.__version__, config=f"lstm {L}x{H}, B={B}, T={T}, adam {lr}, clip-norm "
                                                f"{recipe['clip_norm']}, warmup {warmup}, cosine to {floor}x, "
                                                f"dropout {recipe['dropout']}")


# --- writing -----------------------------------------------------------------------------

def table(run: dict) -> str:
    lines = ["| corpus | system | budget s | process wall s | steps | val nats/char | val bits/char |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for r in run["results"]:
        lines.append(f"| {r['corpus']} | {r['system']} | {r['budget_s']:g} | {r['wall_s']:.1f} | "
                     f"{r['steps'] if r['steps'] is not None else '-'} | {r['val_nats']:.4f} | "
                     f"{r['val_nats'] / math.log(2):.4f} |")
    return "\n".join(lines)


def readme_markers(out_dir: Path) -> tuple:
    """The README's start and end markers of the summary of a run written to ``out_dir``: one section per folder
    (``quality-summary`` for bench_results itself, ``quality-summary-NAME`` for bench_results/NAME)."""
    key = "quality-summary" if out_dir.resolve() == BENCH_RESULTS.resolve() else f"quality-summary-{out_dir.name}"
    return (f"<!-- {key}:start (written by python -m benchmarks.quality; do not edit) -->", f"<!-- {key}:end -->")


def plot_link(out_dir: Path) -> str:
    """The plot's path as the README and quality.md link it: from the repository's root when under it."""
    path = out_dir.resolve() / "quality.png"
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def summary(run: dict, out_dir: Path = BENCH_RESULTS) -> str:
    m = run["machine"]
    kernels = ", ".join(sorted({str(b.get("architecture")) for b in m["blas"]})) or "unknown"
    env = ("OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset" if not m["openblas_env"]
           else f"with {m['openblas_env']}")
    return (f"Held-out loss after a wall-clock budget, whole process (imports, warm kernel cache, the final "
            f"validation), val-fraction {run['val_fraction']}, {run['threads']} threads; {m['cpu']} "
            f"({m['cores']} cores), BLAS kernel {kernels}, {env}; run on {run['date']}.\n\n"
            + table(run) + f"\n\n![val nats/char against seconds]({plot_link(out_dir)})")


def plot(run: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    series = {}
    for r in run["results"]:
        series.setdefault((r["system"], r["corpus"]), []).append((r["wall_s"], r["val_nats"]))
    for (system, corpus), points in sorted(series.items()):
        points.sort()
        ax.plot(*zip(*points), marker="o", label=f"{system} ({corpus})")
    ax.set_xlabel("process wall time, s")
    ax.set_ylabel("held-out nats/char")
    ax.set_title("time to quality: LSTM recipe, fastrnn vs PyTorch")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def update_readme(run: dict, out_dir: Path = BENCH_RESULTS, path=ROOT / "README.md") -> bool:
    """The README's section for ``out_dir`` (:func:`readme_markers`) from ``run``; False if its markers are
    not there."""
    return replace_between(path, *readme_markers(out_dir), summary(run, out_dir))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n")[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[25, 100], metavar="S")
    parser.add_argument("--systems", nargs="+", choices=("fastrnn", "pytorch"), default=["fastrnn", "pytorch"])
    parser.add_argument("--corpora", nargs="+", default=["shakespeare"],
                        help="shakespeare (embedded), code (a megabyte of Python stdlib source) or a file")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out-dir", type=Path, default=BENCH_RESULTS)
    parser.add_argument("--no-readme", action="store_true")
    for name in SIZES:
        parser.add_argument("--" + name.replace("_", "-"), type=int, help="override the recipe's (both systems)")
    parser.add_argument("--torch-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.torch_child:
        print(json.dumps(_torch_main(json.loads(args.torch_child))))
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {k: getattr(args, k) for k in SIZES if getattr(args, k) is not None}
    results = []
    for name in args.corpora:
        path = corpus_path(name)
        for budget in args.budgets:
            for system in args.systems:
                run = (fastrnn_run if system == "fastrnn" else torch_run)(path, budget, args.val_fraction,
                                                                           args.threads, sizes=sizes)
                run["corpus"] = "tinyshakespeare" if path is None else path.name
                results.append(run)
                print(f"{run['corpus']} {system} budget {budget:g} s: {run['val_nats']:.4f} nats/char, "
                      f"wall {run['wall_s']:.1f} s, {run['steps']} steps", flush=True)
    run = dict(date=time.strftime("%Y-%m-%d"), machine=machine(), val_fraction=args.val_fraction,
               threads=args.threads, sizes=sizes, results=results)
    (args.out_dir / "quality.json").write_text(json.dumps(run, indent=1) + "\n")
    (args.out_dir / "quality.md").write_text("# Time to quality\n\n" + summary(run, args.out_dir) + "\n")
    plot(run, args.out_dir / "quality.png")
    if not args.no_readme and not update_readme(run, args.out_dir):
        print(f"README.md has no {readme_markers(args.out_dir)[0]} section: not updated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
