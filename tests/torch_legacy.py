"""Write PyTorch's legacy state-dict format by hand, opcode by opcode (no torch), for reader tests.

``legacy_file`` writes what ``torch.save`` wrote before its zip format: a
magic number, a protocol version, system facts, the state-dict pickle, the
storage keys, then each storage's element count and raw data. Each tensor
can be given a hostile size, stride or offset, and extra raw opcodes can be
spliced into the state-dict pickle.
"""

from __future__ import annotations

import pickle
import struct

import numpy as np

from indexer.models.torch_weights import LEGACY_MAGIC, LEGACY_PROTOCOL

STORAGE_NAMES = {np.dtype("float32"): "FloatStorage", np.dtype("int64"): "LongStorage"}


def op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def op_str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def op_int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def op_tuple(values) -> bytes:
    return b"(" + b"".join(op_int(v) for v in values) + b"t"


def tensor_pickle(key: str, array: np.ndarray, *, size=None, stride=None, offset: int = 0, numel=None) -> bytes:
    """The opcodes of one ``_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`` call."""
    size = tuple(array.shape) if size is None else size
    if stride is None:
        stride = tuple(s // array.itemsize for s in array.strides)
    pid = (b"(" + op_str("storage") + op_global("torch", STORAGE_NAMES[array.dtype]) + op_str(key) + op_str("cpu")
           + op_int(array.size if numel is None else numel) + b"Nt")
    return (op_global("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + op_int(offset)
            + op_tuple(size) + op_tuple(stride) + b"\x89" + op_global("collections", "OrderedDict") + b")R" + b"tR")


def legacy_header() -> bytes:
    """The three pickles before the state dict: magic number, protocol version, system facts."""
    header = [LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}]
    return b"".join(pickle.dumps(part, protocol=2) for part in header)


def legacy_file(tensors: dict, *, overrides: dict | None = None, extra_opcodes: bytes = b"") -> bytes:
    """A legacy torch file holding ``tensors`` (name -> float32/int64 array); ``overrides[name]`` tweaks one."""
    overrides = overrides or {}
    keys = [str(n) for n in range(len(tensors))]
    body = b"\x80\x02" + op_global("collections", "OrderedDict") + b")R("
    for key, (name, array) in zip(keys, tensors.items()):
        body += op_str(name) + tensor_pickle(key, np.require(array, requirements="C"), **overrides.get(name, {}))
    body += b"u" + extra_opcodes + b"."
    out = legacy_header() + body + pickle.dumps(keys, protocol=2)
    for array in tensors.values():
        data = np.require(array, requirements="C")
        out += struct.pack("<q", data.size) + data.astype(data.dtype.newbyteorder("<")).tobytes()
    return out
