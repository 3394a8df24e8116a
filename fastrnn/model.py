"""Models of every cell and depth: a spec (cell, layers, sizes) and one flat parameter buffer with named views.

Ground floor beside :mod:`fastrnn.params`: numpy only.

A model is ``num_layers`` recurrent layers of one cell (``rnn``: tanh, ``lstm``,
``gru``) under one output head (Linear H -> V, softmax cross-entropy). Layer 0
reads character ids (a column lookup of its input weights), layer l > 0 reads
the outputs of layer l - 1. The weights keep PyTorch's orientation and gate
order, under the seed's names extended by layer (:func:`param_shapes`):

| name (layer 0 / layer l)  | shape           | PyTorch                                       |
|---------------------------|-----------------|-----------------------------------------------|
| ``Wxh`` / ``Wxh_l{l}``    | (G*H, V or H)   | ``rnn.weight_ih_l{l}``                        |
| ``Whh`` / ``Whh_l{l}``    | (G*H, H)        | ``rnn.weight_hh_l{l}``                        |
| ``bh``  / ``bh_l{l}``     | (G*H,)          | ``rnn.bias_ih_l{l} + rnn.bias_hh_l{l}`` (GRU: the n block is ``bias_ih`` only) |
| ``bhn`` / ``bhn_l{l}``    | (H,), GRU only  | the n block of ``rnn.bias_hh_l{l}`` (it sits inside ``r * (W_hn h + b_hn)``) |
| ``Why``                   | (V, H)          | ``decoder.weight``                            |
| ``by``                    | (V,)            | ``decoder.bias``                              |

G is the number of gate blocks: 1 for rnn, 4 for lstm (i, f, g, o), 3 for
gru (r, z, n). A 1-layer rnn's names and shapes are exactly the seed's five
arrays, so :class:`fastrnn.Params` is a view of its buffer (:meth:`ModelParams.as_seed`).

All arrays of a model live in one 64-byte-aligned flat buffer (``flat``), each
starting on a cache line; a gradient, an Adagrad memory or Adam's moments are
buffers of the same layout, so clipping and every optimizer are one loop over
flat arrays that knows no names (as llm.c's ``malloc_and_point_parameters``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._aligned import ALIGNMENT, aligned_zeros
from .params import PARAM_NAMES, Params

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELLS = tuple(GATES)
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class ModelSpec:
    """What a model is: cell, number of layers, vocabulary and hidden size (everything but the dtype)."""

    cell: str
    num_layers: int
    vocab_size: int
    hidden_size: int

    def __post_init__(self):
        if self.cell not in GATES:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {self.cell!r}")
        for name in ("num_layers", "vocab_size", "hidden_size"):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    @property
    def gates(self) -> int:
        return GATES[self.cell]

    @property
    def is_seed(self) -> bool:
        """A 1-layer tanh RNN: the seed's model (its init and its :class:`~fastrnn.params.Params` layout)."""
        return self.cell == "rnn" and self.num_layers == 1

    @property
    def state_names(self) -> tuple:
        """The recurrent state: ``("h",)``, or ``("h", "c")`` for an LSTM."""
        return ("h", "c") if self.cell == "lstm" else ("h",)

    def layer_names(self, layer: int) -> tuple:
        """Names of layer ``layer``'s arrays: (Wxh, Whh, bh) and, for a GRU, bhn."""
        suffix = "" if layer == 0 else f"_l{layer}"
        names = ("Wxh", "Whh", "bh") + (("bhn",) if self.cell == "gru" else ())
        return tuple(n + suffix for n in names)

    def param_shapes(self) -> list:
        """``[(name, shape), ...]`` in buffer order: the weights layer by layer, then ``Why``; then the biases
        layer by layer, then ``by`` (for a 1-layer rnn the seed's order: Wxh, Whh, Why, bh, by)."""
        V, H, G = self.vocab_size, self.hidden_size, self.gates
        weights, biases = [], []
        for layer in range(self.num_layers):
            names = self.layer_names(layer)
            weights += [(names[0], (G * H, V if layer == 0 else H)), (names[1], (G * H, H))]
            biases += [(names[2], (G * H,))] + ([(names[3], (H,))] if self.cell == "gru" else [])
        return weights + [("Why", (V, H))] + biases + [("by", (V,))]

    @property
    def size(self) -> int:
        """Number of parameters."""
        return int(sum(np.prod(shape) for _, shape in self.param_shapes()))

    def to_dict(self) -> dict:
        return {"cell": self.cell, "num_layers": self.num_layers, "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size}


def _layout(spec: ModelSpec, itemsize: int):
    """Offsets (in elements) of each array in the flat buffer, each on a cache line; and the total length."""
    step = ALIGNMENT // itemsize
    offsets, at = {}, 0
    for name, shape in spec.param_shapes():
        offsets[name] = (at, shape)
        at += -(-int(np.prod(shape)) // step) * step
    return offsets, at


class ModelParams:
    """A model's arrays as named views of one flat, 64-byte-aligned buffer.

    ``params["Whh_l1"]``, ``params.Whh_l1`` or ``params.arrays`` (an ordered dict) reach the views;
    iteration yields them in buffer order. ``flat`` (n,) is the whole buffer,
    padding included (padding is always zero, so flat-array loops over it, such
    as a gradient norm, are unaffected). Gradients and optimizer memories are
    :class:`ModelParams` of the same spec and dtype (:meth:`zeros_like`); a
    gradient has ``is_gradient`` set (:func:`fastrnn.to_torch` maps it to
    what autograd puts in each ``.grad``).
    """

    __slots__ = ("spec", "dtype", "flat", "arrays", "is_gradient")

    def __init__(self, spec: ModelSpec, dtype=np.float64, flat=None, is_gradient=False):
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        offsets, n = _layout(spec, dtype.itemsize)
        if flat is None:
            flat = aligned_zeros(n, dtype)
        self.spec, self.dtype, self.flat = spec, dtype, flat
        self.is_gradient = bool(is_gradient)  # a gradient (what to_torch puts in .grad) rather than weights
        self.arrays = {name: flat[o:o + int(np.prod(shape))].reshape(shape) for name, (o, shape) in offsets.items()}

    @classmethod
    def from_arrays(cls, spec: ModelSpec, arrays, dtype=None) -> "ModelParams":
        """A new buffer holding ``arrays`` (a mapping name -> array, every name of the spec), cast to ``dtype``."""
        missing = [name for name, _ in spec.param_shapes() if name not in arrays]
        if missing:
            raise ValueError(f"missing {', '.join(missing)} for a {describe(spec)}")
        if dtype is None:
            dtype = np.result_type(*(np.asarray(arrays[n]).dtype for n, _ in spec.param_shapes()))
        out = cls(spec, dtype)
        for name, shape in spec.param_shapes():
            a = np.asarray(arrays[name])
            if a.shape != shape and not (len(shape) == 1 and a.shape == (shape[0], 1)):
                raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
            if a.dtype.kind != "f":
                raise ValueError(f"{name} must be a float array, got {a.dtype}")
            out.arrays[name][...] = a.reshape(shape)
        return out

    @classmethod
    def from_seed(cls, params: Params) -> "ModelParams":
        """A 1-layer rnn holding copies of the seed's five arrays."""
        spec = ModelSpec("rnn", 1, int(params.Why.shape[0]), int(params.Whh.shape[0]))
        out = cls.from_arrays(spec, dict(zip(PARAM_NAMES, params)), params.Whh.dtype)
        out.is_gradient = bool(getattr(params, "is_gradient", False))
        return out

    # --- what it is
    @property
    def cell(self) -> str:
        return self.spec.cell

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def hidden_size(self) -> int:
        return self.spec.hidden_size

    @property
    def vocab_size(self) -> int:
        return self.spec.vocab_size

    @property
    def names(self) -> tuple:
        return tuple(self.arrays)

    def __getitem__(self, name) -> np.ndarray:
        return self.arrays[name]

    def __getattr__(self, name):  # params.Whh, params.Wxh_l1: the views by name
        try:
            return object.__getattribute__(self, "arrays")[name]
        except (KeyError, AttributeError):
            raise AttributeError(f"ModelParams has no array or attribute {name!r}") from None

    def __iter__(self):
        return iter(self.arrays.values())

    def __len__(self):
        return len(self.arrays)

    def __repr__(self):
        return f"ModelParams({describe(self.spec)}, {self.dtype})"

    def layer(self, layer: int) -> tuple:
        """Layer ``layer``'s arrays: (Wxh, Whh, bh) plus bhn for a GRU."""
        return tuple(self.arrays[n] for n in self.spec.layer_names(layer))

    # --- new buffers of the same layout
    def copy(self) -> "ModelParams":
        out = ModelParams(self.spec, self.dtype, is_gradient=self.is_gradient)
        out.flat[:] = self.flat
        return out

    def zeros_like(self) -> "ModelParams":
        return ModelParams(self.spec, self.dtype)

    def astype(self, dtype) -> "ModelParams":
        """This model in ``dtype`` (itself when it already is)."""
        dtype = np.dtype(dtype)
        if dtype == self.dtype:
            return self
        return ModelParams.from_arrays(self.spec, self.arrays, dtype)

    def as_seed(self) -> Params:
        """The seed's :class:`Params` as views of this buffer (a 1-layer rnn only): updates reach both."""
        if not self.spec.is_seed:
            raise ValueError(f"a {describe(self.spec)} has no seed layout (only a 1-layer rnn has)")
        return Params(*(self.arrays[name] for name in PARAM_NAMES))

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.flat).all())


def describe(spec: ModelSpec) -> str:
    """E.g. ``"2-layer lstm (hidden 256, vocab 65)"``."""
    return f"{spec.num_layers}-layer {spec.cell} (hidden {spec.hidden_size}, vocab {spec.vocab_size})"


def init_model(spec: ModelSpec, seed=None, dtype=np.float64) -> ModelParams:
    """PyTorch's initialisation: every weight and bias ~ U(-1/sqrt(H), 1/sqrt(H)), drawn in float64 then cast.

    Drawn in buffer order from ``numpy.random.default_rng(seed)``. A combined
    bias ``bh`` is drawn once (PyTorch's is the sum of two such draws).
    """
    rng = np.random.default_rng(seed)
    bound = 1.0 / np.sqrt(spec.hidden_size)
    arrays = {name: rng.uniform(-bound, bound, shape) for name, shape in spec.param_shapes()}
    return ModelParams.from_arrays(spec, arrays, dtype)


def init_params(vocab_size: int, hidden_size: int, cell: str = "rnn", num_layers: int = 1, seed=None,
                dtype=np.float64):
    """A new model: the seed's :class:`~fastrnn.Params` for a 1-layer rnn, else a :class:`ModelParams`.

    The 1-layer rnn keeps the seed's initialisation (``randn * 0.01`` weights,
    zero biases: :func:`fastrnn.params.init_params`); every other model
    PyTorch's (:func:`init_model`). Both draw from ``numpy.random.default_rng(seed)``.
    """
    from .params import init_params as init_seed_params

    if int(vocab_size) < 1 or int(hidden_size) < 1:
        raise ValueError(f"vocab_size and hidden_size must be positive, got {vocab_size} and {hidden_size}")
    spec = ModelSpec(cell, num_layers, vocab_size, hidden_size)
    if np.dtype(dtype) not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64, got {np.dtype(dtype)}")
    if spec.is_seed:
        return init_seed_params(vocab_size, hidden_size, seed=seed, dtype=dtype)
    return init_model(spec, seed=seed, dtype=dtype)
