"""Export a model for runtimes without fastrnn: an ONNX graph, or PyTorch's names in a safetensors file.

ONNX (:func:`onnx_model`, the ``onnx`` package): input ``ids`` int64
(batch, time), output ``logits`` (batch, time, vocab) in the model's dtype,
from a zero state; with ``state=True`` also the inputs ``h0`` (and ``c0`` for
an LSTM) and the outputs ``hn`` (``cn``), (layers, batch, hidden), PyTorch's
layout, to carry the state from one call to the next. Layer 0 reads a one-hot
of the ids. The recurrence is either ONNX's own ``RNN``/``LSTM``/``GRU``
operators (gates reordered: LSTM i,f,g,o -> i,o,f,c; GRU r,z,n -> z,r,h with
``linear_before_reset=1``, which is PyTorch's placement of ``b_hn``), or a
``Scan`` over time whose body spells the cell's equations out with
MatMul/Sigmoid/Tanh; the default is the operators in float32 and the Scan in
float64, which onnxruntime's operators do not implement.

safetensors (:func:`save_safetensors`): the arrays of :func:`fastrnn.to_torch`
(``rnn.weight_ih_l0``, ..., ``decoder.bias``), for ``load_state_dict(strict=True)``
into the module :mod:`fastrnn.interop` describes.

Both carry the same metadata (:func:`metadata`): strings ``format``
("fastrnn-export"), ``cell``, ``num_layers``, ``vocab_size``, ``hidden_size``,
``dtype``, ``fastrnn_version`` (absent in older files) and ``vocab``, the JSON
``{"codes": [...], "bytes_mode": bool}``
(id i is ``chr(codes[i])``, or the byte ``codes[i]``). Files are written
atomically (a temporary file beside the target, then a rename); a model whose
weights exceed :data:`EXTERNAL_DATA_BYTES` is written as ``OUT.onnx`` plus its
weights in ``OUT.onnx.data`` (ONNX's external-data format).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ._files import OutputWriteError, atomic_write, folder_of, new_file_mode
from .extras import require
from .interop import to_torch
from .model import ModelParams
from .vocab import Vocab

FORMAT = "fastrnn-export"
OPSET = 17
IR_VERSION = 8  # the IR version that introduced opset 17 (newer runtimes read older IRs)
RECURRENCES = ("ops", "scan")
ONNX_GATES = {"rnn": [0], "lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}  # PyTorch's blocks in ONNX's order
EXTRAS = {".onnx": ("onnx", "onnx"), ".safetensors": ("safetensors", "safetensors")}  # suffix: (module, extra)


def _model(params) -> ModelParams:
    return params if isinstance(params, ModelParams) else ModelParams.from_seed(params)


def metadata(params, vocab: Vocab) -> dict:
    """The strings both formats carry: what the model is and its vocabulary."""
    spec = _model(params).spec
    if len(vocab) != spec.vocab_size:
        raise ValueError(f"the vocabulary has {len(vocab)} symbols, the model {spec.vocab_size}")
    return {"format": FORMAT, "cell": spec.cell, "num_layers": str(spec.num_layers),
            "vocab_size": str(spec.vocab_size), "hidden_size": str(spec.hidden_size),
            "dtype": str(_model(params).dtype),
            "vocab": json.dumps({"codes": vocab.codes.tolist(), "bytes_mode": vocab.bytes_mode}),
            "fastrnn_version": _version()}


def vocab_from_metadata(meta: dict) -> Vocab:
    """The :class:`~fastrnn.Vocab` stored by :func:`metadata`."""
    v = json.loads(meta["vocab"])
    return Vocab(np.array(v["codes"], np.int64), v["bytes_mode"])


# --- safetensors ----------------------------------------------------------------------

def save_safetensors(path, params, vocab: Vocab) -> Path:
    """Write :func:`fastrnn.to_torch` of ``params`` with :func:`metadata` to ``path`` (safetensors format)."""
    st = require("safetensors.numpy", "safetensors", "writing .safetensors")
    tensors = {k: np.ascontiguousarray(v) for k, v in to_torch(_model(params)).items()}
    data = st.save(tensors, metadata=metadata(params, vocab))  # bytes: the write below is ours, its errors OSErrors
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


# --- ONNX -------------------------------------------------------------------------------

class _Graph:
    """Nodes and initializers of an ONNX graph under construction, with unique names."""

    def __init__(self, helper, numpy_helper, dtype):
        self.helper, self.numpy_helper, self.dtype = helper, numpy_helper, np.dtype(dtype)
        self.nodes, self.initializers, self._names = [], [], set()

    def const(self, name, array, dtype=None):
        """An initializer named ``name`` (added once: a second call with the name returns it)."""
        if name not in self._names:
            array = np.ascontiguousarray(array, dtype=self.dtype if dtype is None else dtype)
            self.initializers.append(self.numpy_helper.from_array(array, name))
            self._names.add(name)
        return name

    def ints(self, name, values):
        return self.const(name, values, np.int64)

    def node(self, op, inputs, outputs, **attrs):
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        self.nodes.append(self.helper.make_node(op, list(inputs), outputs, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def _onnx_layer_ops(g: _Graph, cell, layer, x, arrays, H, h_init, c_init):
    """One layer through ONNX's RNN/LSTM/GRU operator: x (T, B, I) -> (T, B, H), h_n (1, B, H), c_n."""
    Wxh, Whh, bh, *bhn = arrays
    blocks = ONNX_GATES[cell]

    def reorder(a):
        return np.concatenate([a[b * H:(b + 1) * H] for b in blocks])

    rb = np.zeros_like(bh)
    if cell == "gru":
        rb[2 * H:] = bhn[0]  # ONNX's Rbh: inside r * (...), with linear_before_reset=1
    p = f"l{layer}_"
    W = g.const(p + "W", reorder(Wxh)[None])
    R = g.const(p + "R", reorder(Whh)[None])
    B = g.const(p + "B", np.concatenate([reorder(bh), reorder(rb)])[None])
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[cell]
    attrs = {"hidden_size": H}
    if cell == "gru":
        attrs["linear_before_reset"] = 1
    inputs = [x, W, R, B, "", h_init] + ([c_init] if cell == "lstm" else [])
    outputs = [p + "Y", p + "Y_h"] + ([p + "Y_c"] if cell == "lstm" else [])
    g.node(op, inputs, outputs, **attrs)
    y = g.node("Squeeze", [p + "Y", g.ints("axis_1", [1])], p + "out")  # (T, 1, B, H) -> (T, B, H)
    return y, p + "Y_h", (p + "Y_c" if cell == "lstm" else None)


def _scan_body(g: _Graph, cell, layer, H, tensor_type):
    """The Scan body of one layer: state (B, H) (and c), input projection x_t (B, G*H) -> new state, y_t."""
    helper, p = g.helper, f"l{layer}_"
    nodes = []

    def node(op, inputs, output, **attrs):
        nodes.append(helper.make_node(op, inputs, [output], **attrs))
        return output

    states = ["h"] + (["c"] if cell == "lstm" else [])
    ins = [helper.make_tensor_value_info(p + s + "_in", tensor_type, ["batch", H]) for s in states]
    ins.append(helper.make_tensor_value_info(p + "x_t", tensor_type, ["batch", None]))
    h, x = p + "h_in", p + "x_t"
    hh = node("MatMul", [h, p + "WhhT"], p + "hh")
    if cell == "rnn":
        h_new = node("Tanh", [node("Add", [x, hh], p + "pre")], p + "h_out")
        outs = [h_new]
    elif cell == "lstm":
        pre = node("Add", [x, hh], p + "pre")
        names = [p + n for n in ("i_pre", "f_pre", "g_pre", "o_pre")]
        nodes.append(helper.make_node("Split", [pre, g.ints("split4", [H] * 4)], names, axis=1))
        i = node("Sigmoid", [names[0]], p + "i")
        f = node("Sigmoid", [names[1]], p + "f")
        gg = node("Tanh", [names[2]], p + "g")
        o = node("Sigmoid", [names[3]], p + "o")
        c_new = node("Add", [node("Mul", [f, p + "c_in"], p + "fc"), node("Mul", [i, gg], p + "ig")], p + "c_out")
        h_new = node("Mul", [o, node("Tanh", [c_new], p + "tc")], p + "h_out")
        outs = [h_new, c_new]
    else:
        xs = [p + n for n in ("xr", "xz", "xn")]
        hs = [p + n for n in ("hr", "hz", "hn")]
        nodes.append(helper.make_node("Split", [x, g.ints("split3", [H] * 3)], xs, axis=1))
        nodes.append(helper.make_node("Split", [hh, g.ints("split3", [H] * 3)], hs, axis=1))
        r = node("Sigmoid", [node("Add", [xs[0], hs[0]], p + "r_pre")], p + "r")
        z = node("Sigmoid", [node("Add", [xs[1], hs[1]], p + "z_pre")], p + "z")
        a = node("Add", [hs[2], p + "bhn"], p + "a")
        n = node("Tanh", [node("Add", [xs[2], node("Mul", [r, a], p + "ra")], p + "n_pre")], p + "n")
        keep = node("Mul", [node("Sub", [g.const("one", 1), z], p + "one_minus_z"), n], p + "zn")
        h_new = node("Add", [keep, node("Mul", [z, h], p + "zh")], p + "h_out")
        outs = [h_new]
    y = node("Identity", [outs[0]], p + "y_t")
    out_info = [helper.make_tensor_value_info(name, tensor_type, ["batch", H]) for name in outs + [y]]
    return helper.make_graph(nodes, p + "step", ins, out_info)


def _onnx_layer_scan(g: _Graph, cell, layer, proj, arrays, H, h_init, c_init, tensor_type):
    """One layer as a Scan over time of the cell's equations: proj (T, B, G*H) -> (T, B, H), h_n, c_n (B, H)."""
    _, Whh, _, *bhn = arrays
    p = f"l{layer}_"
    g.const(p + "WhhT", Whh.T)
    if cell == "gru":
        g.const(p + "bhn", bhn[0])
    body = _scan_body(g, cell, layer, H, tensor_type)
    states = [h_init] + ([c_init] if cell == "lstm" else [])
    outputs = [p + "h_n"] + ([p + "c_n"] if cell == "lstm" else []) + [p + "out"]
    g.node("Scan", states + [proj], outputs, body=body, num_scan_inputs=1)
    return p + "out", p + "h_n", (p + "c_n" if cell == "lstm" else None)


def onnx_model(params, vocab: Vocab, recurrence=None, state=False, check=True):
    """The ONNX ``ModelProto`` of a model (see the module's docstring); checked by ``onnx.checker`` (``check``:
    the in-memory check, which refuses a model over 2 GiB; :func:`save_onnx` checks such a one from its files).

    ``recurrence``: "ops" (ONNX's RNN/LSTM/GRU operators), "scan" (a Scan of
    the equations), or None: "ops" in float32, "scan" in float64. ``state``:
    add the state inputs ``h0`` (``c0``) and outputs ``hn`` (``cn``).
    """
    onnx = require("onnx", "onnx", "writing .onnx")
    from onnx import helper, numpy_helper

    model = _model(params)
    spec, dtype = model.spec, model.dtype
    if recurrence is None:
        recurrence = "ops" if dtype == np.float32 else "scan"
    if recurrence not in RECURRENCES:
        raise ValueError(f"recurrence must be one of {', '.join(RECURRENCES)}, got {recurrence!r}")
    V, H, L = spec.vocab_size, spec.hidden_size, spec.num_layers
    tensor_type = helper.np_dtype_to_tensor_dtype(dtype)
    g = _Graph(helper, numpy_helper, dtype)
    state_names = ["h0"] + (["c0"] if spec.cell == "lstm" else [])
    ids_t = g.node("Transpose", ["ids"], "ids_t", perm=[1, 0])  # (T, B)
    if state:
        full = {name: name for name in state_names}
    else:  # zeros of (L, B, H), B the ids' batch
        batch = g.node("Gather", [g.node("Shape", ["ids"], "ids_shape"), g.ints("first", [0])], "batch", axis=0)
        shape = g.node("Concat", [g.ints("num_layers", [L]), batch, g.ints("hidden", [H])], "state_shape", axis=0)
        zero = numpy_helper.from_array(np.zeros(1, dtype))
        full = {"h0": g.node("ConstantOfShape", [shape], "zero_state", value=zero)}
        full["c0"] = full["h0"]

    def layer_state(name, layer):
        s = g.node("Gather", [full[name], g.ints(f"layer_{layer}", [layer])], f"l{layer}_{name}", axis=0)
        if recurrence == "scan":  # (1, B, H) -> (B, H)
            s = g.node("Squeeze", [s, g.ints("axis_0", [0])], f"l{layer}_{name}_bh")
        return s

    if recurrence == "ops":
        ids_t3 = g.node("Unsqueeze", [ids_t, g.ints("axis_2", [2])], "ids_t3")
        hot = g.node("Equal", [ids_t3, g.ints("vocab_ids", np.arange(V))], "one_hot_bool")
        x = g.node("Cast", [hot], "one_hot", to=tensor_type)  # (T, B, V)
    h_last, c_last = [], []
    for layer in range(L):
        arrays = model.layer(layer)
        h_init = layer_state("h0", layer)
        c_init = layer_state("c0", layer) if spec.cell == "lstm" else None
        if recurrence == "ops":
            x, h_n, c_n = _onnx_layer_ops(g, spec.cell, layer, x, arrays, H, h_init, c_init)
        else:
            Wxh, _, bh, *_ = arrays
            p = f"l{layer}_"
            if layer == 0:  # the ids' columns of Wxh: a row lookup of its transpose
                rows = g.node("Gather", [g.const(p + "WxhT", Wxh.T), ids_t], p + "x_rows", axis=0)
            else:
                rows = g.node("MatMul", [x, g.const(p + "WxhT", Wxh.T)], p + "x_rows")
            proj = g.node("Add", [rows, g.const(p + "bh", bh)], p + "proj")  # (T, B, G*H)
            x, h_n, c_n = _onnx_layer_scan(g, spec.cell, layer, proj, arrays, H, h_init, c_init, tensor_type)
        h_last.append(h_n)
        c_last.append(c_n)
    top = g.node("Transpose", [x], "top", perm=[1, 0, 2])  # (B, T, H)
    g.node("Add", [g.node("MatMul", [top, g.const("WhyT", model["Why"].T)], "top_why"), g.const("by", model["by"])],
           "logits")
    outputs = [helper.make_tensor_value_info("logits", tensor_type, ["batch", "time", V])]
    inputs = [helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["batch", "time"])]
    if state:
        inputs += [helper.make_tensor_value_info(name, tensor_type, [L, "batch", H]) for name in state_names]
        for name, parts in (("hn", h_last), ("cn", c_last))[:len(state_names)]:
            if recurrence == "scan":  # (B, H) -> (1, B, H)
                parts = [g.node("Unsqueeze", [part, g.ints("axis_0", [0])], part + "_1bh") for part in parts]
            g.node("Concat", parts, name, axis=0)
            outputs.append(helper.make_tensor_value_info(name, tensor_type, [L, "batch", H]))
    graph = helper.make_graph(g.nodes, f"fastrnn_{spec.cell}", inputs, outputs, initializer=g.initializers,
                              doc_string=f"fastrnn {L}-layer {spec.cell}: ids (batch, time) -> logits "
                                         f"(batch, time, {V})" + (f", state {', '.join(state_names)}" if state
                                                                  else ", from a zero state"))
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="fastrnn", producer_version=_version())
    helper.set_model_props(proto, metadata(model, vocab))
    if check:
        onnx.checker.check_model(proto, full_check=True)
    return proto


def _version():
    from . import __version__
    return __version__


EXTERNAL_DATA_BYTES = 1 << 30  # weights above this go to a file beside the graph (a protobuf holds < 2 GiB)
EXTERNAL_DATA_SUFFIX = ".data"  # OUT.onnx -> OUT.onnx.data
_INLINE_TENSOR_BYTES = 1024  # with external data, initializers smaller than this stay in the graph


def _weight_bytes(params) -> int:
    return _model(params).flat.nbytes


def onnx_files(path, params, external_data_above=None) -> list[Path]:
    """The files :func:`save_onnx` writes for ``params``: ``[path]``, or ``[path, PATH.data]`` for large weights."""
    limit = EXTERNAL_DATA_BYTES if external_data_above is None else external_data_above
    path = Path(path)
    if _weight_bytes(params) <= limit:
        return [path]
    return [path, path.with_name(path.name + EXTERNAL_DATA_SUFFIX)]


def save_onnx(path, params, vocab: Vocab, recurrence=None, state=False, external_data_above=None) -> Path:
    """Write :func:`onnx_model` to ``path``; returns the path.

    Weights over ``external_data_above`` bytes (default :data:`EXTERNAL_DATA_BYTES`,
    1 GiB) go to ``PATH.data`` beside the graph, ONNX's external-data format (one
    protobuf cannot exceed 2 GiB): the graph names that file by its name alone,
    so the two must stay in one folder (``onnx.load`` and onnxruntime, given the
    graph's path, find it). Each file is written whole to a temporary name, then
    renamed; an ``OSError`` is an :class:`~fastrnn._files.OutputWriteError`.
    """
    files = onnx_files(path, params, external_data_above)
    if len(files) == 1:
        data = onnx_model(params, vocab, recurrence, state).SerializeToString()
        return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    proto = onnx_model(params, vocab, recurrence, state, check=False)  # checked below, from the files
    return _save_external(proto, *files)


def _save_external(proto, path: Path, data_path: Path) -> Path:
    """Save ``proto`` with its large initializers in ``data_path``: both written in a temporary folder beside
    ``path``, checked by ``onnx.checker`` from there, then renamed into place (the data first)."""
    onnx = require("onnx", "onnx", "writing .onnx")
    try:
        scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder_of(path)))
    except OSError as e:
        raise OutputWriteError(path, e) from None
    try:
        graph, data = scratch / path.name, scratch / data_path.name
        onnx.save_model(proto, str(graph), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_path.name, size_threshold=_INLINE_TENSOR_BYTES)
        onnx.checker.check_model(str(graph), full_check=True)
        for written in (graph, data):
            os.chmod(written, new_file_mode())
        os.replace(data, data_path)
        os.replace(graph, path)
    except OSError as e:
        raise OutputWriteError(data_path if e.filename and Path(e.filename).name == data_path.name else path,
                               e) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return path


WRITERS = {".onnx": save_onnx, ".safetensors": save_safetensors}
