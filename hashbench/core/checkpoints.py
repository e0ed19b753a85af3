"""Training checkpoints: one file per cell, written atomically, read back only by the same
configuration (its fingerprint), and never able to run code when read.

`save_checkpoint(path, state)` and `load_checkpoint(path, fingerprint)` are the only two ways
the training driver touches a checkpoint file, so how a state is serialised lives here alone.

Why not torch.save/torch.load: that is pickle, and results/checkpoints/ may sit on a shared
filesystem that others can write to; unpickling a planted file runs its code on every node
that resumes the cell. `torch.load(weights_only=True)` narrows pickle to an allow-list, but
it is still an unpickler (torch < 2.6 had a code-execution hole in it, CVE-2025-32434). So a
checkpoint here is data only, parsed by json and by byte slicing:

    b"HBCKPT\\n" | format version, u32 LE | header length, u64 LE | header (UTF-8 JSON) | data

The header holds the state as JSON, each tensor (or numpy array) replaced by a reference
{"__hb__": "tensor", "dtype", "shape", "offset", "nbytes"} into the data section, plus the
data section's length and sha256. Dicts with non-string keys (an optimizer's per-parameter
state), tuples and a state_dict's `_metadata` are tagged so they come back as they were;
Python ints are exact at any size (numpy's bit_generator state), floats round-trip exactly.

A file that is not such a checkpoint (corrupt, truncated, an older pickle checkpoint, a
crafted one, another byte order) is refused with a one-line warning naming it, and the
caller starts the cell from scratch, overwriting it at its next checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hashbench.errors import HashbenchWarning
from hashbench.files import atomic_write

MAGIC = b"HBCKPT\n"
FORMAT_VERSION = 1
_PREAMBLE = struct.Struct("<IQ")  # format version, header length
TAG = "__hb__"

# the dtypes a training state holds; anything else in a file is refused, never interpreted
TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64, torch.complex128,
    torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)}
NUMPY_KINDS = "biufc"  # bool, signed, unsigned, float, complex: no objects, strings or voids


class CheckpointRefused(ValueError):
    """The file is not a checkpoint this version of hashbench wrote (or it is damaged)."""


# --- writing -------------------------------------------------------------------------------

class _Encoder:
    def __init__(self):
        self.chunks: list[memoryview] = []
        self.offset = 0

    def _blob(self, kind: str, raw: np.ndarray, dtype: str, shape) -> dict[str, Any]:
        view = memoryview(np.ascontiguousarray(raw)).cast("B")
        ref = {TAG: kind, "dtype": dtype, "shape": list(shape), "offset": self.offset, "nbytes": view.nbytes}
        self.chunks.append(view)
        self.offset += view.nbytes
        return ref

    def encode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, str)):
            return value
        if isinstance(value, (int, float)):
            return value if type(value) in (int, float) else (int(value) if isinstance(value, int) else float(value))
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype not in TORCH_DTYPES:
                raise TypeError(f"checkpoint: tensors of {t.dtype} are not supported")
            return self._blob("tensor", t.reshape(-1).view(torch.uint8).numpy(), dtype, t.shape)
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in NUMPY_KINDS:
                raise TypeError(f"checkpoint: numpy arrays of {value.dtype} are not supported")
            return self._blob("ndarray", value.reshape(-1).view(np.uint8), value.dtype.str, value.shape)
        if isinstance(value, np.generic):  # a numpy scalar: as the Python number it equals
            return self.encode(value.item())
        if isinstance(value, tuple):
            return {TAG: "tuple", "items": [self.encode(v) for v in value]}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, dict):
            items = [[self.encode(k), self.encode(v)] for k, v in value.items()]
            metadata = getattr(value, "_metadata", None)  # a state_dict's per-module versions
            if isinstance(value, OrderedDict) or metadata is not None:
                out = {TAG: "odict", "items": items}
                if metadata is not None:
                    out["metadata"] = self.encode(dict(metadata))
                return out
            if all(isinstance(k, str) for k in value) and TAG not in value:
                return {k: v for (k, _), (_, v) in zip(value.items(), items)}
            return {TAG: "dict", "items": items}
        raise TypeError(f"checkpoint: cannot store a {type(value).__name__}")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (which carries its "fingerprint") to `path` atomically; a full disk is a
    one-line HashbenchError and leaves the previous checkpoint in place."""
    encoder = _Encoder()
    tree = encoder.encode(state)
    digest = hashlib.sha256()
    for chunk in encoder.chunks:
        digest.update(chunk)
    header = json.dumps({"byteorder": sys.byteorder, "data_bytes": encoder.offset,
                         "data_sha256": digest.hexdigest(), "state": tree},
                        separators=(",", ":")).encode()
    atomic_write(path, [MAGIC + _PREAMBLE.pack(FORMAT_VERSION, len(header)), header, *encoder.chunks])


# --- reading -------------------------------------------------------------------------------

def _refuse(why: str) -> None:
    raise CheckpointRefused(why)


class _Decoder:
    def __init__(self, data: memoryview):
        self.data = data

    def _bytes(self, ref: dict) -> memoryview:
        offset, nbytes = ref.get("offset"), ref.get("nbytes")
        if not (type(offset) is int and type(nbytes) is int and 0 <= offset and 0 <= nbytes
                and offset + nbytes <= len(self.data)):
            _refuse("a tensor points outside the data")
        return self.data[offset:offset + nbytes]

    @staticmethod
    def _shape(ref: dict, itemsize: int, nbytes: int) -> tuple[int, ...]:
        shape = ref.get("shape")
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)):
            _refuse("a tensor has a malformed shape")
        if int(np.prod(shape, dtype=object)) * itemsize != nbytes:
            _refuse("a tensor's shape does not match its bytes")
        return tuple(shape)

    def decode(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict):
            return value
        kind = value.get(TAG)
        if kind is None:
            return {k: self.decode(v) for k, v in value.items()}
        if kind == "tensor":
            dtype = TORCH_DTYPES.get(value.get("dtype")) if isinstance(value.get("dtype"), str) else None
            if dtype is None:
                _refuse(f"unsupported tensor dtype {value.get('dtype')!r}")
            raw = self._bytes(value)
            shape = self._shape(value, torch.empty((), dtype=dtype).element_size(), len(raw))
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
            return flat.view(dtype).reshape(shape)
        if kind == "ndarray":
            dtype = self._numpy_dtype(value.get("dtype"))
            raw = self._bytes(value)
            shape = self._shape(value, dtype.itemsize, len(raw))
            return np.frombuffer(bytes(raw), dtype=dtype).reshape(shape)
        items = value.get("items")
        if not isinstance(items, list):
            _refuse(f"a {kind!r} without items")
        if kind == "tuple":
            return tuple(self.decode(v) for v in items)
        if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
            _refuse(f"a {kind!r} with malformed items")
        pairs = [(self._key(k), self.decode(v)) for k, v in items]
        if kind == "dict":
            return dict(pairs)
        if kind == "odict":
            out = OrderedDict(pairs)
            if "metadata" in value:
                out._metadata = self.decode(value["metadata"])
            return out
        _refuse(f"unknown entry kind {kind!r}")

    @staticmethod
    def _numpy_dtype(name: Any) -> np.dtype:
        """Only plain numeric dtypes named by a short string ('<f8', '|u1'): never objects."""
        try:
            dtype = np.dtype(name) if isinstance(name, str) and len(name) <= 4 else None
        except TypeError:
            dtype = None
        if dtype is None or dtype.kind not in NUMPY_KINDS or dtype.fields is not None or dtype.shape:
            _refuse(f"unsupported array dtype {name!r}")
        return dtype

    def _key(self, key: Any) -> Any:
        key = self.decode(key)
        try:
            hash(key)
        except TypeError:
            _refuse("a dict key that cannot be a key")
        return key


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state stored at `path`; CheckpointRefused if the file is not one we wrote, whole."""
    blob = memoryview(Path(path).read_bytes())
    if bytes(blob[:len(MAGIC)]) != MAGIC:
        _refuse("not a hashbench checkpoint (an older pickle checkpoint, or some other file)")
    start = len(MAGIC) + _PREAMBLE.size
    if len(blob) < start:
        _refuse("truncated")
    version, header_len = _PREAMBLE.unpack(blob[len(MAGIC):start])
    if version != FORMAT_VERSION:
        _refuse(f"checkpoint format {version}, this hashbench reads format {FORMAT_VERSION}")
    if len(blob) < start + header_len:
        _refuse("truncated")
    try:
        header = json.loads(bytes(blob[start:start + header_len]))
    except (UnicodeDecodeError, ValueError):
        _refuse("corrupt header")
    if not isinstance(header, dict) or not isinstance(header.get("state"), dict):
        _refuse("corrupt header")
    if header.get("byteorder") != sys.byteorder:
        _refuse(f"written on a {header.get('byteorder')}-endian machine")
    data = blob[start + header_len:]
    if len(data) != header.get("data_bytes"):
        _refuse(f"truncated or padded: {len(data)} data bytes, expected {header.get('data_bytes')}")
    if hashlib.sha256(data).hexdigest() != header.get("data_sha256"):
        _refuse("corrupt: the data does not match its sha256")
    state = _Decoder(data).decode(header["state"])
    if not isinstance(state, dict):
        _refuse("corrupt header")
    return state


def checkpoint_epoch(path: Path) -> int | None:
    """The last epoch a checkpoint holds, read from its header alone (no data read or checked:
    an estimate of the work left, never a resume); None if the file is not a checkpoint."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + _PREAMBLE.size)
            if len(head) < len(MAGIC) + _PREAMBLE.size or head[:len(MAGIC)] != MAGIC:
                return None
            version, header_len = _PREAMBLE.unpack(head[len(MAGIC):])
            if version != FORMAT_VERSION or header_len > 1 << 26:
                return None
            header = json.loads(f.read(header_len))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    epoch = (header.get("state") or {}).get("epoch") if isinstance(header, dict) else None
    return epoch if type(epoch) is int else None


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The state saved at `path` by the configuration `fingerprint`, or None (start afresh).

    A file that cannot be read as a checkpoint is refused with a one-line warning naming it;
    its content is only ever parsed as data, never executed.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = read_checkpoint(path)
    except Exception as exc:  # whatever is wrong with the file, the cell can still be computed
        why = str(exc) if isinstance(exc, CheckpointRefused) else f"unreadable ({type(exc).__name__}: {exc})"
        warnings.warn(f"ignoring checkpoint {path}: {why}; the cell starts from scratch", HashbenchWarning,
                      stacklevel=2)
        return None
    if state.get("fingerprint") != fingerprint:
        return None  # a different configuration ran here before: start afresh (and overwrite)
    return state
