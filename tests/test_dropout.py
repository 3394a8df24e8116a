"""Dropout between layers (and before the head): seeded masks, the engine against its twin and PyTorch, training.

The masks are a pure function of (seed, step, layer, time, stream in the whole
batch, unit): the kernel's equal :func:`fastrnn.reference.dropout_masks` bit for
bit; with the same masks, finite differences check the twin and the twin checks
the kernels (saturated gates, active clip, 1e-10 in float64; in
``tests/test_cells.py``, parametrized with dropout on and off), PyTorch
autograd (one ``torch.nn`` layer per layer, the masks multiplied in between)
checks the twin; a step cut into chunks draws each stream's own masks; the
trainer's runs resume bit for bit; validation never drops.
"""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

import fastrnn
from fastrnn import chunks, engine, workspaces
from fastrnn import reference as ref
from fastrnn.checkpoint import load_checkpoint, save_checkpoint
from fastrnn.corpus import Corpus
from fastrnn.config import ConfigError, TrainConfig
from fastrnn.trainer import Trainer

from conftest import rewrite_npz
from test_cells import CELL_LAYERS, H, T, V, as_parts, compare_stack, compare_with_torch, make_data, make_model
from test_cells import torch  # noqa: F401 (the fixture: skip without torch, fail without it under CI)
from test_cli import fastrnn as run_cli

P = 0.3
SEED = 12345


def masks_of(spec, B, step=7, total=None, first=0, p=P, dtype=np.float64):
    """The twin's masks (L, T, B, H) of streams first .. first + B - 1 of ``total`` (default B)."""
    total = B if total is None else total
    return ref.dropout_masks(SEED, step, p, spec.num_layers, T, total, spec.hidden_size, range(first, first + B),
                             dtype)


def kernel_masks(ws, spec, B):
    """The masks the kernels drew, from the workspace: (L, T, B, H)."""
    return np.stack([ws.layers[layer]["mask"].reshape(T, B, spec.hidden_size) for layer in range(spec.num_layers)])


# --- the masks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("step, total, first", [(1, 3, 0), (7, 8, 2), (123456789, 1000, 997)])
def test_kernel_masks_equal_the_twin_bit_for_bit(step, total, first, dtype):
    params = make_model("lstm", 2, seed=1, dtype=dtype)
    inputs, targets, state = make_data(params.spec, 3, seed=1, dtype=dtype)
    ws = workspaces.StackWorkspace(params.spec, T, 3, dtype)
    engine.stack_loss_and_grads(params, inputs, targets, state, workspace=ws,
                                dropout=engine.Dropout(P, SEED, step, total, first))
    expected = masks_of(params.spec, 3, step, total, first, dtype=dtype)
    assert np.array_equal(kernel_masks(ws, params.spec, 3), expected)
    assert set(np.unique(expected)) == {dtype(0), dtype(1 / (1 - P))}
    for layer in range(2):  # what the layer above reads: the outputs times the mask, one rounding
        a = ws.layers[layer]
        assert np.array_equal(a["xd"], a["hs"][3:] * a["mask"])


def test_masks_drop_p_of_the_units_and_differ_by_step_layer_stream_and_seed():
    L, T_, S, H_ = 2, 50, 16, 64
    for p in (0.1, 0.5):
        m = ref.dropout_masks(SEED, 3, p, L, T_, S, H_, range(S), np.float64)
        n = m.size
        assert abs(np.mean(m == 0) - p) < 5 * np.sqrt(p * (1 - p) / n)  # binomial, 5 sigma
    m = ref.dropout_masks(SEED, 3, 0.5, L, T_, S, H_, range(S), np.float64)
    other_step = ref.dropout_masks(SEED, 4, 0.5, L, T_, S, H_, range(S), np.float64)
    other_seed = ref.dropout_masks(SEED + 1, 3, 0.5, L, T_, S, H_, range(S), np.float64)
    for a, b in [(m, other_step), (m, other_seed), (m[0], m[1]), (m[:, :, 0], m[:, :, 1]), (m[:, 0], m[:, 1])]:
        assert 0.4 < np.mean(a != b) < 0.6  # independent halves disagree about half the time
    # a stream's mask is its own, whatever share of the batch asks for it
    assert np.array_equal(ref.dropout_masks(SEED, 3, 0.5, L, T_, S, H_, range(5, 9), np.float64), m[:, :, 5:9])
    assert not np.any(ref.dropout_masks(SEED, 3, 0.0, L, T_, S, H_, range(S), np.float64) == 0)


# --- with the same masks: PyTorch (finite differences and the kernels: test_cells, dropout "on") ----------

def torch_layers_with_masks(torch, cell, params, inputs, targets, state, masks):
    """Autograd through one ``torch.nn`` layer per layer, each layer's outputs times its mask (B, T, H)."""
    rnn_class = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    L = params.spec.num_layers
    names = fastrnn.to_torch(params)
    layers = []
    for layer in range(L):
        module = rnn_class(V if layer == 0 else H, H, 1, batch_first=True).double()
        module.load_state_dict({f"{kind}_l0": torch.tensor(names[f"rnn.{kind}_l{layer}"])
                                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}, strict=True)
        layers.append(module)
    decoder = torch.nn.Linear(H, V).double()
    decoder.load_state_dict({"weight": torch.tensor(names["decoder.weight"]),
                             "bias": torch.tensor(names["decoder.bias"])}, strict=True)
    B = inputs.shape[0]
    x = torch.nn.functional.one_hot(torch.from_numpy(inputs), V).double()
    last = []
    for layer, module in enumerate(layers):
        s0 = tuple(torch.from_numpy(np.ascontiguousarray(s[layer:layer + 1])) for s in state)
        out, s1 = module(x, s0 if cell == "lstm" else s0[0])
        last.append(s1 if cell == "lstm" else (s1,))
        x = out * torch.from_numpy(np.ascontiguousarray(masks[layer].transpose(1, 0, 2)))
    logits = decoder(x)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(targets).reshape(-1),
                                             reduction="sum") / B
    loss.backward()
    grads = {f"rnn.{k[:-3]}_l{layer}": v.grad.numpy().copy()
             for layer, module in enumerate(layers) for k, v in module.named_parameters()}
    grads.update({f"decoder.{k}": v.grad.numpy().copy() for k, v in decoder.named_parameters()})
    state_last = tuple(np.concatenate([s[i].detach().numpy() for s in last]) for i in range(len(last[0])))
    return float(loss.item()), grads, state_last


@pytest.mark.parametrize("kind", ["init", "large"])
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_torch_autograd_checks_the_twin_with_masks(torch, cell, num_layers, kind):
    params = make_model(cell, num_layers, kind, seed=51)
    inputs, targets, state = make_data(params.spec, 3, seed=51)
    masks = masks_of(params.spec, 3)
    expected = torch_layers_with_masks(torch, cell, params, inputs, targets, state, masks)
    twin = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None, masks=masks)
    assert not compare_with_torch((twin[0], twin[1], as_parts(params.spec, twin[2])), expected)


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("cell,num_layers", CELL_LAYERS)
def test_chunks_draw_each_streams_own_masks(cell, num_layers, threads):
    B = 5
    params = make_model(cell, num_layers, "large", seed=61)
    inputs, targets, state = make_data(params.spec, B, seed=61)
    ws = workspaces.ParallelWorkspace(params.spec, T, B, np.float64, threads=threads)
    loss, grads = chunks.chunked_loss_and_grads(params, ws, inputs, targets, [s.copy() for s in state],
                                                dropout=engine.Dropout(P, SEED, 7, B))
    twin = ref.stack_loss_and_grads(params, inputs, targets, state, clip=None, masks=masks_of(params.spec, B))
    assert not compare_stack((loss / B, grads, twin[2]), twin)


# --- training -------------------------------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
CONFIG = TrainConfig(hidden_size=12, seq_length=9, batch_size=4, cell="lstm", num_layers=2, optimizer="adam",
                     learning_rate=1e-2, clip=None, clip_norm=5.0, seed=5, threads=2, dropout=0.25, val_fraction=0.1)


def test_training_with_dropout_resumes_bit_for_bit(tmp_path):
    corpus = Corpus.from_text(TEXT)
    straight = Trainer(corpus, CONFIG)
    straight.train(30)
    first = Trainer(corpus, CONFIG)
    first.train(13)
    resumed = load_checkpoint(save_checkpoint(tmp_path / "d.npz", first)).trainer(corpus)
    assert resumed.config.dropout == 0.25
    resumed.train(17)
    assert np.array_equal(resumed.params.flat, straight.params.flat)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.hidden, straight.hidden))
    without = Trainer(corpus, replace(CONFIG, dropout=0.0))
    without.train(30)
    assert not np.allclose(without.params.flat, straight.params.flat)


def test_validation_never_drops():
    corpus = Corpus.from_text(TEXT)
    trainer = Trainer(corpus, CONFIG)
    trainer.train(5)
    twin = Trainer(corpus, replace(CONFIG, dropout=0.0))
    twin.params.flat[:] = trainer.params.flat
    assert trainer.validation_loss().nats_per_char == twin.validation_loss().nats_per_char


def test_dropout_leaves_the_seeds_compiled_steps():
    from fastrnn.steps import compiled_steps
    seed = TrainConfig()
    spec = seed.spec(65)
    assert compiled_steps(spec, seed.optimizer_settings, 1, seed.clip_norm, seed.dropout)
    assert not compiled_steps(spec, seed.optimizer_settings, 1, seed.clip_norm, 0.1)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, True, float("nan")])
def test_bad_dropout_is_refused(p):
    with pytest.raises(ConfigError, match="dropout must be in"):
        TrainConfig(dropout=p).validate()


def test_cli_dropout_trains_resumes_and_refuses_bad_values(tmp_path):
    corpus = tmp_path / "fox.txt"
    corpus.write_text(TEXT)
    args = ["train", corpus, "--model", "lstm", "--hidden-size", 12, "--seq-length", 9, "--batch-size", 4,
            "--dropout", 0.25, "--sample-every", 0, "--checkpoint", "d.npz", "--seed", 2]
    r = run_cli(*args, "--steps", 10, cwd=tmp_path)
    assert r.returncode == 0 and "dropout 0.25" in r.stdout, r.stderr
    assert load_checkpoint(tmp_path / "d.npz").config.dropout == 0.25
    r = run_cli("train", "--resume", "d.npz", "--steps", 12, "--dropout", 0.5, cwd=tmp_path)
    assert r.returncode == 2 and "--dropout 0.5 (checkpoint: 0.25) contradicts the checkpoint" in r.stderr, r.stderr
    for bad in ("1", "-0.5"):
        r = run_cli("train", corpus, "--dropout", bad, "--checkpoint", "e.npz", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--dropout must be in [0, 1)" in r.stderr
        assert not (tmp_path / "e.npz").exists()


def test_version_4_checkpoints_load_without_dropout(tmp_path):
    corpus = Corpus.from_text(TEXT)
    config = replace(CONFIG, dropout=0.0)
    trainer = Trainer(corpus, config)
    trainer.train(3)
    new = save_checkpoint(tmp_path / "v5.npz", trainer)
    old_config = {k: v for k, v in config.to_dict().items() if k != "dropout"}
    old = rewrite_npz(new, tmp_path / "v4.npz", format_version=np.int64(4), config=np.str_(json.dumps(old_config)))
    ckpt = load_checkpoint(old)
    assert ckpt.config.dropout == 0.0 and ckpt.config == config
