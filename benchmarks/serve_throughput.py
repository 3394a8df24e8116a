"""``fastrnn serve``'s batched decoding: characters per second at 1, 4, 16 and 64 concurrent requests, 16
requests at once against the same 16 one after another, and the latency of the first streamed character.

The model: a 2x256 LSTM in float32 (the recipe's other settings; 3 training steps, since the speed does not
depend on the weights), served with ``--max-batch 64`` on this machine's cores. Each request asks for 2,000
characters (``POST /v1/sample``, a seed each, no prime). A client thread per request, all started together,
through one httpx client whose pool keeps the connections open (the client shares the machine's cores).
Sides compared are alternated, ``ROUNDS`` rounds; medians are quoted.

``python -m benchmarks.serve_throughput`` writes ``bench_results/serve.json`` and ``serve.md`` (with the CPU,
its ISA flags and the BLAS kernel) and the README's table between its markers.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .quality import BENCH_RESULTS, ROOT, machine, machine_text
from .report.readme import publish

README_START = "<!-- serve-summary:start (written by python -m benchmarks.serve_throughput; do not edit) -->"
README_END = "<!-- serve-summary:end -->"
ROUNDS = 3
LENGTH = 2000
SHAKESPEARE = ROOT / "fastrnn" / "data" / "tinyshakespeare.txt"


_client = None


def post(url, body):
    """One request through a shared client (its pool keeps up to 64 connections open, as a real client would)."""
    global _client
    if _client is None:
        import httpx
        _client = httpx.Client(timeout=600, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
    return _client.post(url + "/v1/sample", content=json.dumps(body))


def together(url, n, seed0=0) -> float:
    """Seconds for ``n`` requests of LENGTH characters sent at once."""
    errors = []

    def call(i):
        r = post(url, {"length": LENGTH, "seed": seed0 + i})
        if r.status_code != 200 or len(r.json()["text"]) != LENGTH:
            errors.append(r.text[:200])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return time.perf_counter() - start


def one_after_another(url, n, seed0=0) -> float:
    start = time.perf_counter()
    for i in range(n):
        r = post(url, {"length": LENGTH, "seed": seed0 + i})
        if r.status_code != 200:
            raise RuntimeError(r.text[:200])
    return time.perf_counter() - start


def first_character_s(url, n) -> list:
    """Seconds to the first drawn character of each of ``n`` streamed requests sent at once."""
    post(url, {"length": 1})  # the shared client made
    out = [None] * n

    def call(i):
        start = time.perf_counter()
        with _client.stream("POST", url + "/v1/sample",
                            content=json.dumps({"length": LENGTH, "seed": i, "stream": True})) as r:
            for line in r.iter_lines():
                if line.startswith("data:") and out[i] is None and json.loads(line[5:]).get("text"):
                    out[i] = time.perf_counter() - start

    threads = [threading.Thread(target=call, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=BENCH_RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        r = subprocess.run([sys.executable, "-m", "fastrnn", "train", str(SHAKESPEARE), "--model", "lstm",
                            "--hidden-size", "256", "--steps", "3", "--sample-every", "0", "--checkpoint",
                            "m.npz", "-q"], cwd=tmp, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(r.stderr)
        proc = subprocess.Popen([sys.executable, "-m", "fastrnn", "serve", "m.npz", "--port", "0", "--max-batch", "64"],
                                cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            url = re.search(r"on (http://\S+)/", proc.stdout.readline()).group(1)
            together(url, 4)  # kernels loaded, workspaces made
            sequential, concurrent = [], []
            rates = {n: [] for n in (1, 4, 16, 64)}
            for r_ in range(ROUNDS):
                sequential.append(one_after_another(url, 16, seed0=100 * r_))
                concurrent.append(together(url, 16, seed0=100 * r_))
                for n in rates:
                    rates[n].append(n * LENGTH / together(url, n, seed0=1000 * r_))
            latency = {n: [x for _ in range(ROUNDS) for x in first_character_s(url, n)] for n in (1, 16)}
        finally:
            proc.terminate()
            proc.wait(30)
    run = dict(date=time.strftime("%Y-%m-%d"), machine=machine(), model="2x256 lstm float32", length=LENGTH,
               sequential_16_s=sequential, concurrent_16_s=concurrent,
               chars_per_s={str(n): v for n, v in rates.items()},
               first_character_s={str(n): v for n, v in latency.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(run, indent=1) + "\n")
    m = run["machine"]
    seq, con = statistics.median(sequential), statistics.median(concurrent)
    lines = ["| concurrent requests | characters/s (median) | runs |", "|---:|---:|---|"]
    for n, v in rates.items():
        lines.append(f"| {n} | {statistics.median(v):,.0f} | {', '.join(f'{x:,.0f}' for x in v)} |")
    md = ("\n".join(lines) + "\n\n"
          f"16 requests of {LENGTH:,} characters: {con:.2f} s at once against {seq:.2f} s one after another "
          f"(medians of {ROUNDS}, alternated): **{con / seq:.2f}x** the time. "
          f"First streamed character: {statistics.median(latency[1]) * 1000:.0f} ms alone, "
          f"{statistics.median(latency[16]) * 1000:.0f} ms with 16 at once (medians). "
          f"A 2x256 LSTM, float32; {machine_text(m)}; {run['date']}.\n")
    publish(args.out, "serve", "fastrnn serve: batched decoding", md, README_START, README_END, BENCH_RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
