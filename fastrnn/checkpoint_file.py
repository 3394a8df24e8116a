"""Reading a checkpoint's ``.npz`` without trusting it: members by name, each header checked against the
bytes the file holds before any array is read or allocated, the optional members (a run's plan, a best
file's ``best_of``, a fine-tuned model's ``parent``) checked field by field, and one-line errors that never
echo a file whole (:class:`CheckpointError`)."""
from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from .limits import gib


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged, not ours, or does not fit what it is used with."""


MAX_ECHO = 300  # characters of a message about a file's contents: what a file says is never echoed whole
MAX_STRING_CHARS = 1 << 20  # a string member longer than this (config, rng_state, ...) is damaged
MAX_PATH_CHARS = 4096  # the recorded corpus_path
MAX_VOCAB = 0x110000  # every Unicode code point
MAX_NAMED = 5  # missing arrays named in one message
# The most a member's data can grow by in its zip entry (deflate's limit is about 1032:1); other methods: unbounded.
MAX_INFLATION = {zipfile.ZIP_STORED: 1, zipfile.ZIP_DEFLATED: 1032}
READ_ERRORS = (OSError, EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def unusable(path, why):
    why = str(why).replace("\n", " ")
    if len(why) > MAX_ECHO:
        why = why[:MAX_ECHO - 1] + "\u2026"
    return CheckpointError(f"{str(path)!r} is not a usable fastrnn checkpoint: {why}")


def size_text(n) -> str:
    return gib(n) if n >= 2 ** 20 else f"{n:,} bytes"


@dataclass(frozen=True)
class Header:
    """What a member's ``.npy`` header claims: the shape and dtype of its array."""

    shape: tuple
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize  # Python ints: no overflow


class Members:
    """The arrays of an open ``.npz``, by name: a member's header on demand (a few bytes decompressed),
    its data only when :meth:`read` asks for it; members nobody asks for are never read.

    Every header is checked against the member's size in the zip's directory, and that size against
    the bytes the file holds, so that no claim leads to an allocation the file cannot back.
    """

    def __init__(self, zf: zipfile.ZipFile, path: str, file_size: int):
        self.zf, self.path, self.file_size = zf, path, file_size
        self.infos = {}
        for info in zf.infolist():
            if info.filename.endswith(".npy"):
                self.infos.setdefault(info.filename[:-4], info)
        self._headers = {}

    def __contains__(self, name) -> bool:
        return name in self.infos

    @property
    def stored_bytes(self) -> int:
        """Bytes the .npy members hold uncompressed, by the zip's directory (headers included: an upper bound on their data)."""
        return sum(info.file_size for info in self.infos.values())

    def header(self, name) -> Header:
        if name not in self._headers:
            self._headers[name] = self._read_header(name)
        return self._headers[name]

    def _read_header(self, name) -> Header:
        info = self.infos[name]
        inflation = MAX_INFLATION.get(info.compress_type)
        if info.compress_size > self.file_size or (inflation and info.file_size > inflation * info.compress_size):
            raise unusable(self.path, f"{name} claims {info.file_size:,} bytes, more than the file holds")
        try:
            with self.zf.open(info) as f:
                version = npy_format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = npy_format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = npy_format.read_array_header_2_0(f)
                else:
                    raise ValueError(f".npy format version {version} is not read")
                header_bytes = f.tell()
        except READ_ERRORS as e:
            raise unusable(self.path, f"cannot read {name} ({e})") from None
        if dtype.hasobject:
            raise unusable(self.path, f"{name} holds Python objects")
        header = Header(tuple(shape), dtype)
        if header_bytes + header.nbytes != info.file_size:
            raise unusable(self.path, f"{name} claims shape {header.shape} {dtype} ({header.nbytes:,} bytes) but holds "
                                  f"{info.file_size - header_bytes:,} bytes")
        return header

    def read(self, name) -> np.ndarray:
        """The array ``name``: its header is checked first; the caller checks the header against what it expects."""
        self.header(name)
        try:
            with self.zf.open(self.infos[name]) as f:
                return npy_format.read_array(f, allow_pickle=False)
        except READ_ERRORS as e:
            raise unusable(self.path, f"cannot read {name} ({e})") from None


def open_npz(path) -> zipfile.ZipFile:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a directory, not a file")
    if not zipfile.is_zipfile(path):
        raise unusable(path, "not an .npz file (truncated, or some other kind of file)")
    try:
        return zipfile.ZipFile(path)
    except READ_ERRORS as e:
        raise unusable(path, f"cannot read it ({e})") from None


def scalar_member(members, name, kind):
    header = members.header(name)
    if header.shape != () or header.dtype.kind not in kind:
        raise unusable(members.path, f"{name} must be a scalar")
    return members.read(name).item()


def string_member(members, name) -> str:
    header = members.header(name)
    if header.shape != () or header.dtype.kind != "U":
        raise unusable(members.path, f"{name} must be a string")
    chars = header.dtype.itemsize // 4
    if chars > MAX_STRING_CHARS:
        raise unusable(members.path, f"{name} is a string of {chars:,} characters, more than {MAX_STRING_CHARS:,}")
    return str(members.read(name))


def plan_member(members) -> dict | None:
    """The run's plan (optional string member ``plan``, JSON), checked field by field; None when absent."""
    from .plan import Plan  # at call time: plan.py is the trainer's, which this module's users import

    if "plan" not in members:
        return None
    try:
        return Plan.checked(json.loads(string_member(members, "plan"))).to_dict()
    except (ValueError, TypeError, AttributeError) as e:
        raise unusable(members.path, f"bad run plan ({str(e)[:200]})") from None


def best_of_member(members) -> str | None:
    """A best file's ``best_of`` (the path of its run's checkpoint), checked; None when absent."""
    if "best_of" not in members:
        return None
    best_of = string_member(members, "best_of")
    if not best_of or len(best_of) > MAX_PATH_CHARS:
        raise unusable(members.path, "bad best_of (the path of its run's checkpoint)")
    return best_of


def parent_member(members) -> dict | None:
    """A fine-tuned model's parent (optional string member ``parent``, JSON), checked; None when absent."""
    if "parent" not in members:
        return None
    try:
        parent = json.loads(string_member(members, "parent"))
        fields_ok = (isinstance(parent, dict) and set(parent) == {"path", "length", "sha256", "step", "corpus"}
                     and all(isinstance(parent[k], str) and len(parent[k]) <= MAX_PATH_CHARS
                             for k in ("path", "sha256", "corpus"))
                     and all(type(parent[k]) is int and parent[k] >= 0 for k in ("length", "step")))
    except json.JSONDecodeError:
        fields_ok = False
    if not fields_ok:
        raise unusable(members.path, "bad parent (the checkpoint it was fine-tuned from)")
    return parent
