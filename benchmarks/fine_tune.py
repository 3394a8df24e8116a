"""Does fine-tuning pay? A 2x128 LSTM trained on tiny shakespeare, then fine-tuned on a second English text,
against the same recipe trained from scratch on that text for the same time.

- The second text: the Python language reference's topics as this CPython ships them
  (``pydoc_data.topics``, topics in sorted order): English prose with code, and characters tiny
  shakespeare lacks (digits, brackets, quotes, typographic dashes).
- The parent: ``fastrnn train tinyshakespeare.txt --model lstm --time-budget PARENT_S`` (the recipe: 2x128
  below 90 s).
- Then, alternated round by round with the same seed per round, two runs of ``--time-budget CHILD_S`` on
  the second text: ``--init-from parent`` and ``--model lstm`` (from scratch), at the recipe's learning
  rate and at each ``--learning-rates`` given (the recipe's rate, tuned on tiny shakespeare, need not suit
  the second text). Each reports the held-out loss of the text's last 5 % at its end (the same split for
  both).

``python -m benchmarks.fine_tune`` writes ``bench_results/fine_tune.json`` (with the CPU, its ISA flags
and the BLAS kernel) and ``fine_tune.md``, and the README's fine-tuning table between its markers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .quality import BENCH_RESULTS, ROOT, machine, machine_text
from .report.readme import publish

README_START = "<!-- fine-tune-summary:start (written by python -m benchmarks.fine_tune; do not edit) -->"
README_END = "<!-- fine-tune-summary:end -->"
VALIDATION = re.compile(r"validation ([0-9.]+) bits/char, ([0-9.]+) nats/char")


def second_text(folder: Path) -> Path:
    """The Python language reference's topics (``pydoc_data.topics``) as one UTF-8 file."""
    from pydoc_data.topics import topics

    path = folder / "python-reference.txt"
    path.write_text("\n".join(topics[k] for k in sorted(topics)), encoding="utf-8")
    return path


def train(*flags, cwd) -> dict:
    """One ``fastrnn train`` process: its final held-out loss, steps and wall seconds."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fastrnn", "train", *map(str, flags), "--sample-every", "0",
                        "--checkpoint-every", "0", "--log-every", "1000000", "--overwrite"],
                       cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode:
        raise RuntimeError(f"fastrnn train {' '.join(map(str, flags))} failed: {r.stderr.strip()}")
    steps = re.search(r"(?:reached at step|done:) ([\d,]+)", r.stdout)
    return dict(val_nats=float(VALIDATION.findall(r.stdout)[-1][1]), wall_s=round(wall, 1),
                steps=int(steps.group(1).replace(",", "")) if steps else None)


def table(run: dict) -> str:
    rows = ["| learning rate | seed | fine-tuned: val nats/char | steps | from scratch: val nats/char | steps |",
            "|---|---:|---:|---:|---:|---:|"]
    for rate in run["learning_rates"]:
        pairs = [(a, b) for a, b in zip(run["fine_tuned"], run["scratch"]) if a["learning_rate"] == rate]
        for a, b in pairs:
            rows.append(f"| {rate} | {a['seed']} | {a['val_nats']:.4f} | {a['steps']:,} | {b['val_nats']:.4f} "
                        f"| {b['steps']:,} |")
        med_a = statistics.median(a["val_nats"] for a, _ in pairs)
        med_b = statistics.median(b["val_nats"] for _, b in pairs)
        rows.append(f"| {rate}: median | | **{med_a:.4f}** | | **{med_b:.4f}** | |")
    m = run["machine"]
    return ("\n".join(rows) + f"\n\nParent: tiny shakespeare, `--model lstm --time-budget {run['parent_s']}` "
            f"({run['parent']['steps']:,} steps, val {run['parent']['val_nats']:.4f} nats/char on its own text); "
            f"each child `--time-budget {run['child_s']}` on {run['text_chars']:,} characters of the Python "
            f"language reference ({run['new_symbols']} symbols tiny shakespeare lacks), held-out last 5 %. "
            f"{machine_text(m)}; {run['date']}.\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent-seconds", type=float, default=60)
    parser.add_argument("--child-seconds", type=float, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--learning-rates", type=float, nargs="*", default=[0.003],
                        help="learning rates to run both sides at, besides the recipe's")
    parser.add_argument("--out", type=Path, default=BENCH_RESULTS)
    args = parser.parse_args(argv)
    shakespeare = ROOT / "fastrnn" / "data" / "tinyshakespeare.txt"
    with tempfile.TemporaryDirectory() as tmp:
        text = second_text(Path(tmp))
        chars = text.read_text(encoding="utf-8")
        new = len(set(chars) - set(shakespeare.read_text(encoding="utf-8")))
        train(shakespeare, "--model", "lstm", "--steps", 1, "--checkpoint", "warm.npz", cwd=tmp)  # the kernel cache
        parent = train(shakespeare, "--model", "lstm", "--time-budget", args.parent_seconds, "--steps", 10**9,
                       "--seed", 1, "--checkpoint", "parent.npz", cwd=tmp)
        print(f"parent: {parent}", file=sys.stderr)
        seeds = list(range(11, 11 + args.rounds))
        rates = ["recipe", *args.learning_rates]
        tuned, scratch = [], []
        for seed in seeds:
            for rate in rates:
                common = [text, "--time-budget", args.child_seconds, "--steps", 10**9, "--seed", seed,
                          *(["--learning-rate", rate] if rate != "recipe" else [])]
                tuned.append(dict(train(*common, "--init-from", "parent.npz", "--checkpoint", "tuned.npz", cwd=tmp),
                                  seed=seed, learning_rate=rate))
                scratch.append(dict(train(*common, "--model", "lstm", "--checkpoint", "scratch.npz", cwd=tmp),
                                    seed=seed, learning_rate=rate))
                print(f"seed {seed}, rate {rate}: fine-tuned {tuned[-1]}, from scratch {scratch[-1]}",
                      file=sys.stderr)
    run = dict(date=time.strftime("%Y-%m-%d"), machine=machine(), parent_s=args.parent_seconds,
               child_s=args.child_seconds, seeds=seeds, learning_rates=rates, parent=parent, fine_tuned=tuned,
               scratch=scratch, text_chars=len(chars), new_symbols=new)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fine_tune.json").write_text(json.dumps(run, indent=1) + "\n")
    md = table(run)
    publish(args.out, "fine_tune", "Fine-tuning against training from scratch", md, README_START, README_END,
            BENCH_RESULTS)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
