"""The visualisation page: how long ``fastrnn visualize`` takes, how large the page is and how fast headless
Chromium renders it, for 20,000 characters of a 2x512 LSTM; and the README's screenshots.

- Size and speed: a 2x512 LSTM (the recipe's other settings, 3 training steps: the page's size and speed do
  not depend on how well it is trained), ``fastrnn visualize CKPT tinyshakespeare.txt --length 20000``
  timed as a whole process, ``ROUNDS`` times; then the page opened ``ROUNDS`` times in headless Chromium
  (``--screenshot``, the whole process timed) and the page's own figure of when its script finished,
  counted from the start of the navigation (``data-loaded-ms``, from ``--dump-dom``).
- Screenshots: a 2x128 LSTM trained ``--time-budget 60`` on tiny shakespeare, its page of the held-out
  split's first 1,500 characters, shot in the probability view and in the neuron view of the unit the
  ranking puts first.

``python -m benchmarks.pages`` writes ``bench_results/pages.json`` and ``pages.md`` (with the CPU, its ISA
flags and the BLAS kernel), the README's table between its markers, and
``bench_results/visualize-probabilities.png``, ``visualize-neuron.png`` and ``serve-page.png`` (``fastrnn
serve``'s page of that model, a sample drawn and a text shown).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .quality import BENCH_RESULTS, ROOT, machine, machine_text
from .report.readme import publish

ROUNDS = 3
README_START = "<!-- pages-summary:start (written by python -m benchmarks.pages; do not edit) -->"
README_END = "<!-- pages-summary:end -->"
SHAKESPEARE = ROOT / "fastrnn" / "data" / "tinyshakespeare.txt"


def fastrnn(*args, cwd) -> float:
    """Run ``fastrnn ARGS``; its wall seconds."""
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "fastrnn", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"fastrnn {' '.join(map(str, args))} failed: {r.stderr.strip()}")
    return time.perf_counter() - start


def chromium_command() -> list:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return [shutil.which(name), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-dev-shm-usage", "--virtual-time-budget=20000"]
    raise SystemExit("no chromium on PATH (apt-get install chromium)")


def screenshot(page: Path, out: Path, size=(1200, 800), fragment="") -> float:
    start = time.perf_counter()
    r = subprocess.run([*chromium_command(), f"--screenshot={out}", f"--window-size={size[0]},{size[1]}",
                        page.resolve().as_uri() + fragment], capture_output=True, text=True)
    if r.returncode or not out.exists():
        raise RuntimeError(f"chromium failed: {r.stderr[-500:]}")
    return time.perf_counter() - start


def loaded_ms(page: Path) -> int:
    r = subprocess.run([*chromium_command(), "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True)
    found = re.search(r'data-loaded-ms="(\d+)"', r.stdout)
    if not found:
        raise RuntimeError(f"the page's script did not finish: {r.stderr[-500:]}")
    return int(found.group(1))


def serve_screenshot(folder: Path, checkpoint: str, text: str, out: Path):
    """``fastrnn serve``'s page with a sample drawn (prime ROMEO:, seed 1) and ``text`` shown."""
    from urllib.parse import quote

    proc = subprocess.Popen([sys.executable, "-m", "fastrnn", "serve", checkpoint, "--port", "0"], cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"on (http://\S+/)", proc.stdout.readline()).group(1)
        r = subprocess.run([*chromium_command(), f"--screenshot={out}", "--window-size=1200,1100",
                            f"{url}#prime=ROMEO:&length=400&seed=1&temperature=0.8&stream=0&sample&text={quote(text)}"],
                           capture_output=True, text=True)
        if r.returncode or not out.exists():
            raise RuntimeError(f"chromium failed: {r.stderr[-500:]}")
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BENCH_RESULTS)
    parser.add_argument("--budget", type=float, default=60, help="training seconds of the screenshots' model")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        fastrnn("train", SHAKESPEARE, "--model", "lstm", "--hidden-size", 512, "--steps", 3, "--sample-every", 0,
                "--checkpoint", "big.npz", "-q", cwd=tmp)
        visualize = [fastrnn("visualize", "big.npz", SHAKESPEARE, "-o", "big.html", "--length", 20_000, cwd=tmp)
                     for _ in range(ROUNDS)]
        size = (tmp / "big.html").stat().st_size
        shots = [screenshot(tmp / "big.html", tmp / "big.png") for _ in range(ROUNDS)]
        loads = [loaded_ms(tmp / "big.html") for _ in range(ROUNDS)]
        (tmp / "empty.html").write_text("<!doctype html><title>empty</title><p>empty</p>")
        empty = [screenshot(tmp / "empty.html", tmp / "empty.png") for _ in range(ROUNDS)]  # Chromium's own start
        fastrnn("train", SHAKESPEARE, "--model", "lstm", "--time-budget", args.budget, "--steps", 10**9,
                "--seed", 1, "--sample-every", 0, "--checkpoint", "small.npz", "-q", cwd=tmp)
        fastrnn("visualize", "small.npz", "-o", "small.html", "--length", 1500, cwd=tmp)
        html = (tmp / "small.html").read_text(encoding="utf-8")
        data = json.loads(re.search(r'id="fastrnn-data">(.*?)</script>', html, re.S).group(1))
        first = data["ranking"][0]
        screenshot(tmp / "small.html", args.out / "visualize-probabilities.png")
        screenshot(tmp / "small.html", args.out / "visualize-neuron.png",
                   fragment=f"#state={first['state']}&unit={first['unit']}")
        serve_screenshot(tmp, "small.npz", data["text"][:300], args.out / "serve-page.png")
    run = dict(date=time.strftime("%Y-%m-%d"), machine=machine(), characters=20_000, model="2x512 lstm",
               visualize_s=visualize, page_bytes=size, chromium_screenshot_s=shots, page_loaded_ms=loads,
               chromium_empty_page_s=empty, neuron_shown=first)
    (args.out / "pages.json").write_text(json.dumps(run, indent=1) + "\n")
    m = run["machine"]
    md = (f"| 20,000 characters, 2x512 LSTM | median of {ROUNDS} | runs |\n|---|---:|---|\n"
          f"| `fastrnn visualize` (whole process) | {statistics.median(visualize):.2f} s | "
          f"{', '.join(f'{x:.2f}' for x in visualize)} |\n"
          f"| page size | {size / 1e6:.1f} MB | |\n"
          f"| page ready after navigation start (its script's own figure) | {statistics.median(loads)} ms | "
          f"{', '.join(map(str, loads))} |\n"
          f"| headless Chromium, start to screenshot (whole process) | "
          f"{statistics.median(shots):.2f} s | {', '.join(f'{x:.2f}' for x in shots)} |\n"
          f"| the same for an empty page (Chromium's own start) | {statistics.median(empty):.2f} s | "
          f"{', '.join(f'{x:.2f}' for x in empty)} |\n\n"
          f"{machine_text(m)}; {run['date']}. "
          f"Written by `python -m benchmarks.pages`.\n")
    publish(args.out, "pages", "The visualisation page", md, README_START, README_END, BENCH_RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
