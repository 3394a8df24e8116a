"""What the machine can hold, and what a model's outputs can reach: checks made before the work starts.

numpy only. :func:`memory_limits` reads the machine's memory (physical pages,
``MemAvailable`` and a cgroup v2 ``memory.max`` where there is one);
:func:`training_bytes` estimates what a run allocates, so that the command line
can refuse a ``--hidden-size`` or ``--seq-length`` the machine cannot hold with
one line instead of a ``MemoryError`` (or the OOM killer) later.
:func:`outputs_bounded` says whether a model's logits are finite for every
input: a bound from the parameters alone, as cheap as checking them for NaN.
"""
from __future__ import annotations

import os

import numpy as np

INT64_MAX = 2 ** 63 - 1
SAMPLE_BYTES_PER_CHAR = 40  # a sample drawn in memory: uniforms, ids, code points, the str, its printed copy


def _meminfo(key):
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_limit():
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            rel = next((line.strip().split(":", 2)[2] for line in f if line.startswith("0::")), None)
        if rel is None:
            return None
        with open(os.path.join("/sys/fs/cgroup", rel.lstrip("/"), "memory.max"), encoding="ascii") as f:
            text = f.read().strip()
        return None if text == "max" else int(text)
    except (OSError, ValueError, StopIteration):
        return None


def memory_limits() -> tuple[int | None, int | None]:
    """``(total, available)`` bytes this process can use (None where unknown).

    ``total``: physical memory, or the cgroup's limit if lower; ``available``:
    ``MemAvailable``, at most ``total``.
    """
    total = None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        pass
    cgroup = _cgroup_limit()
    if cgroup is not None:
        total = cgroup if total is None else min(total, cgroup)
    available = _meminfo("MemAvailable")
    if available is not None and total is not None:
        available = min(available, total)
    return total, available


def gib(n) -> str:
    return f"{n / 2 ** 30:,.1f} GiB" if n >= 2 ** 30 else f"{n / 2 ** 20:,.0f} MiB"


GATES = {"rnn": 1, "lstm": 4, "gru": 3}  # gate blocks of each cell's weights (fastrnn.model's, without importing it)


def parameter_count(cell, num_layers, vocab_size, hidden_size) -> int:
    """Parameters of a ``num_layers`` stack of ``cell`` with its output head, in O(1) (Python ints: no overflow).

    Equal to :attr:`fastrnn.model.ModelSpec.size`, without listing the arrays, so that a claimed
    size (a checkpoint's config) can be checked before anything of that size exists.
    """
    G, L, V, H = GATES[cell], int(num_layers), int(vocab_size), int(hidden_size)
    return G * H * (V + H + 1) + (L - 1) * G * H * (2 * H + 1) + V * H + V + (L * H if cell == "gru" else 0)


def training_bytes(vocab_size, hidden_size, seq_length, batch_size=1, threads=1, dtype=np.float64,
                   block_steps=256, cell="rnn", num_layers=1, optimizer_buffers=1) -> tuple[int, int]:
    """Rough bytes a training run allocates: ``(model, sequences)``.

    ``model`` grows with the hidden size: parameters, optimizer buffers,
    gradients and the product buffers (per thread chunk when batched), plus the
    float64 draws of the initialisation. ``sequences`` grows with seq-length x
    batch-size: states, gate activations, softmax outputs and their gradients
    for every step of a sequence, per layer, and the int64 windows gathered per
    block of steps.
    """
    V, H, T, B, L = int(vocab_size), int(hidden_size), int(seq_length), int(batch_size), int(num_layers)
    item = np.dtype(dtype).itemsize
    windows = 8 * 2 * block_steps * B * (T + 1)
    G = GATES[cell]
    P = parameter_count(cell, L, V, H)
    model = item * ((3 + optimizer_buffers) * P + 2 * V * G * H + 2 * L * G * H * H) + 8 * P  # + Whh packed twice
    threads = max(int(threads or 1), 1)
    if threads > 1:  # a step split by units: the parts' shares of a weight gradient
        model += item * threads * max(G * H, V) * H
    sequences = item * (L * (2 * (T + 1) * B * H + 3 * T * B * G * H + 3 * T * B * H) + T * B * V) + windows
    return model, sequences


def fits(need: int) -> tuple[bool, str]:
    """``(ok, note)``: ``ok`` is False when ``need`` bytes exceed the machine's memory; ``note`` says by how
    much, or, when it fits only in what is not free now, that it may not (``""`` when it plainly fits)."""
    total, available = memory_limits()
    if total is not None and need > total:
        return False, f"needs about {gib(need)} of memory, more than this machine's {gib(total)}"
    if available is not None and need > available:
        return True, f"needs about {gib(need)} of memory, more than the {gib(available)} free now"
    return True, ""


def outputs_bounded(params) -> bool:
    """True if the logits of ``params`` are finite for every input and hidden state, with room to subtract.

    Every cell's output is at most 1 in size (``tanh``, ``o * tanh(c)``, a GRU's
    blend of such values), so a layer's pre-activation is at most ``max|Wxh[i]|``
    (layer 0) or ``sum|Wxh[i]|`` (above it) ``+ sum|Whh[i]| + |bh[i]|`` (+ ``|bhn|``)
    in size, and a logit at most ``L = max over v of sum|Why[v]| + |by[v]|``
    (every partial sum too, in any order); the softmax subtracts logits from each
    other, so ``2 L`` must be finite in the parameters' dtype. Computed in
    float64; O(parameters). Takes a ModelParams or the seed's Params.
    """
    from .model import ModelParams

    if not isinstance(params, ModelParams):
        params = ModelParams.from_seed(params)
    limit = float(np.finfo(params.dtype).max)
    worst = 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        for layer in range(params.num_layers):
            Wxh, Whh, bh, *bhn = params.layer(layer)
            x = np.abs(Wxh).max(axis=1, initial=0.0) if layer == 0 else np.abs(Wxh).sum(axis=1, dtype=np.float64)
            pre = x.astype(np.float64) + np.abs(Whh).sum(axis=1, dtype=np.float64) + np.abs(bh).astype(np.float64)
            worst = max(worst, float(pre.max(initial=0.0)))
            for b in bhn:
                worst = max(worst, float(np.abs(b).astype(np.float64).max(initial=0.0)))
        logit = np.abs(params["Why"]).sum(axis=1, dtype=np.float64) + np.abs(params["by"]).astype(np.float64)
        worst_logit = float(logit.max(initial=0.0))
    return bool(np.isfinite(worst) and worst < limit and np.isfinite(worst_logit) and 2 * worst_logit < limit)
