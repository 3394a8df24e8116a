"""Print the ``cells`` group of a benchmark JSON: chars/s per row and fastrnn over PyTorch at each point.

    python -m benchmarks.cells_summary bench_results/cells.json
"""
from __future__ import annotations

import json
import sys


def main(path):
    with open(path) as f:
        run = json.load(f)
    rows = {}
    for b in run["benchmarks"]:
        if b.get("group") != "cells":
            continue
        i = b["extra_info"]
        key = (i["cell"], i["num_layers"], i["hidden_size"], i["batch_size"], i["seq_length"], i["threads"])
        rows.setdefault(key, {})[i["implementation"]] = i["chars_per_call"] / b["stats"]["median"]
    cpu = run.get("machine_info", {}).get("cpu", {}).get("brand_raw", "?")
    print(f"{cpu}; float32, medians")
    print("model | B | T | threads | fastrnn chars/s | PyTorch chars/s | x PyTorch")
    for (cell, layers, H, B, T, threads), r in sorted(rows.items()):
        f, t = r.get("fastrnn"), r.get("pytorch")
        ratio = f"{f / t:.2f}x" if f and t else "-"
        print(f"{cell} {layers} x {H} | {B} | {T} | {threads} | {f or 0:,.0f} | {t or 0:,.0f} | {ratio}")


if __name__ == "__main__":
    main(sys.argv[1])
