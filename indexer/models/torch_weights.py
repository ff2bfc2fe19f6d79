"""Read a PyTorch state dict saved in torch's legacy (non-zip) format, without torch.

Such a file is a run of pickles: a magic number, a protocol version, a
dict of system facts, the state dict itself, then the sorted list of
storage keys, followed by each storage as an 8-byte little-endian element
count and its raw little-endian data. Tensors inside the state dict are
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``
calls on storages named by persistent ids ``('storage', type, key,
location, numel, view)``.

A pickle can call any importable function, so the unpickler here resolves
only the few names such a file needs (``collections.OrderedDict``, the
tensor rebuild function and the storage types) to local stand-ins, and
refuses every other global. Before a pickle is unpickled its opcodes are
listed: only those a state dict uses are allowed, and memo indexes must be
small, so a tiny file cannot make the unpickler allocate gigabytes. Tensors
must be contiguous views inside their storage. Whatever goes wrong is a
``WeightsFileError``.
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import pickletools
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# storage class name -> little-endian numpy dtype of its elements
STORAGE_DTYPES = {
    "FloatStorage": "<f4",
    "DoubleStorage": "<f8",
    "HalfStorage": "<f2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


# every opcode a legacy state dict's pickles use (protocol 2); anything else is refused
ALLOWED_OPCODES = frozenset({
    "PROTO", "STOP", "MARK", "GLOBAL", "REDUCE", "BUILD", "BINPERSID", "NONE", "NEWTRUE", "NEWFALSE",
    "BININT", "BININT1", "BININT2", "LONG1", "BINUNICODE", "SHORT_BINUNICODE", "EMPTY_TUPLE", "TUPLE",
    "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS",
    "BINPUT", "LONG_BINPUT", "BINGET", "LONG_BINGET", "MEMOIZE",
})


class WeightsFileError(ValueError):
    """The file is not a legacy torch state dict this reader accepts."""


@dataclass(frozen=True, slots=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass(frozen=True, slots=True)
class _StorageRef:
    key: str
    type: _StorageType
    numel: int


@dataclass(frozen=True, slots=True)
class _TensorRef:
    """A tensor as the pickle describes it; filled in once the storages are read."""

    storage: _StorageRef
    offset: int
    size: tuple
    stride: tuple


def _ints(values, what: str) -> tuple[int, ...]:
    if not isinstance(values, tuple) or not all(type(v) is int for v in values):
        raise WeightsFileError(f"a tensor's {what} is not a tuple of integers")
    return values


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only the names a legacy state dict uses."""

    def _rebuild_tensor(self, storage, offset, size, stride, *_ignored):
        """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the call, runs nothing.

        A bound method, created per load: a pickle's BUILD cannot change it.
        """
        if not isinstance(storage, _StorageRef) or type(offset) is not int:
            raise WeightsFileError("a tensor refers to something that is not a storage")
        return _TensorRef(storage, offset, _ints(size, "size"), _ints(stride, "stride"))

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return self._rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise WeightsFileError(f"the weights file asks for {module}.{name}, which a state dict never needs")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise WeightsFileError(f"unexpected persistent id in the weights file (a {type(pid).__name__})")
        _, storage_type, key, _location, numel = pid[:5]
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or type(numel) is not int:
            raise WeightsFileError("malformed storage reference in the weights file")
        if len(pid) > 5 and pid[5] is not None:
            raise WeightsFileError("storage views are not supported")
        return _StorageRef(key, storage_type, numel)


def _check_opcodes(stream: io.BytesIO) -> None:
    """List the next pickle's opcodes without running it: refuse unknown ones and large memo indexes."""
    start = stream.tell()
    count = 0
    for opcode, argument, _position in pickletools.genops(stream):
        count += 1
        if opcode.name not in ALLOWED_OPCODES:
            raise WeightsFileError(f"the weights file uses the pickle opcode {opcode.name}; a state dict never does")
        # the C unpickler sizes its memo by the largest index: a tiny file could ask for gigabytes
        if opcode.name in ("BINPUT", "LONG_BINPUT") and argument > count:
            raise WeightsFileError("the weights file's pickle memo is malformed")
    stream.seek(start)


def _load_one(stream: io.BytesIO):
    _check_opcodes(stream)
    return _RestrictedUnpickler(stream).load()


def read_state_dict(data: bytes) -> OrderedDict[str, np.ndarray]:
    """Parse the bytes of a legacy torch file into ``{name: float32/int64 array}``, in file order.

    Raises ``WeightsFileError`` for anything that is not exactly such a file:
    a forbidden global or opcode, a wrong magic number, a truncated storage, a
    tensor that does not fill its run of the storage exactly once, or bytes
    left over at the end.
    """
    try:
        return _read_state_dict(data)
    except WeightsFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, RecursionError, MemoryError) as exc:
        problem = type(exc).__name__
        raise WeightsFileError(f"the weights file is damaged or not a legacy torch file ({problem})") from None


def _read_state_dict(data: bytes) -> OrderedDict[str, np.ndarray]:
    stream = io.BytesIO(data)
    if _load_one(stream) != LEGACY_MAGIC:
        raise WeightsFileError("not a legacy torch file (wrong magic number)")
    if _load_one(stream) != LEGACY_PROTOCOL:
        raise WeightsFileError("unsupported legacy torch protocol version")
    sys_info = _load_one(stream)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise WeightsFileError("only little-endian weights files are supported")
    state = _load_one(stream)
    if not isinstance(state, dict):
        raise WeightsFileError("the weights file does not hold a state dict")
    keys = _load_one(stream)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise WeightsFileError("the weights file's storage list is malformed")

    refs = {ref.storage.key: ref.storage for ref in state.values() if isinstance(ref, _TensorRef)}
    if set(refs) != set(keys):
        raise WeightsFileError("the weights file's storages do not match its tensors")
    view = memoryview(data)
    position = stream.tell()
    storages: dict[str, np.ndarray] = {}
    for key in keys:
        ref = refs[key]
        if position + 8 > len(data):
            raise WeightsFileError("the weights file is truncated")
        count = int.from_bytes(view[position : position + 8], "little")
        position += 8
        end = position + count * ref.type.dtype.itemsize
        if count != ref.numel or end > len(data):
            raise WeightsFileError(f"storage {key} is truncated or of the wrong size")
        storages[key] = np.frombuffer(view[position:end], dtype=ref.type.dtype)
        position = end
    if position != len(data):
        raise WeightsFileError("the weights file has unexpected bytes after its last storage")

    tensors: OrderedDict[str, np.ndarray] = OrderedDict()
    for name, ref in state.items():
        if not isinstance(ref, _TensorRef):
            raise WeightsFileError(f"state dict entry {name!r} is not a tensor")
        tensors[name] = _materialise(ref, storages[ref.storage.key], name)
    return tensors


def _materialise(ref: _TensorRef, storage: np.ndarray, name: str) -> np.ndarray:
    """Copy a tensor out of its storage, where it must fill a run of elements exactly once.

    Its dimensions may be stored in any order (weights converted from
    TensorFlow are often channels-last), but sorted by stride they must be
    dense: no element read twice (a zero stride would turn a one-float
    storage into gigabytes) and none outside the run.
    """
    if len(ref.size) != len(ref.stride) or any(n < 0 for n in ref.size) or ref.offset < 0:
        raise WeightsFileError(f"tensor {name!r} has a malformed shape")
    count = math.prod(ref.size)
    if ref.offset + count > storage.size:
        raise WeightsFileError(f"tensor {name!r} reaches outside its storage")
    step = 1
    for stride, n in sorted((s, n) for n, s in zip(ref.size, ref.stride) if n > 1):
        if stride != step:
            raise WeightsFileError(f"tensor {name!r} is not a dense view of its storage")
        step *= n
    run = storage[ref.offset : ref.offset + count]
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        run, shape=ref.size, strides=tuple(s * item for s in ref.stride), writeable=False
    )
    return view.astype(storage.dtype.newbyteorder("="), copy=True)


def load_state_dict(path: Path, expected_sha256: str | None = None) -> OrderedDict[str, np.ndarray]:
    """Read a legacy torch state dict from ``path``; refuse it when its SHA-256 is not ``expected_sha256``."""
    data = Path(path).read_bytes()
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != expected_sha256:
            raise WeightsFileError(
                f"{path} has SHA-256 {actual[:16]}..., not the pinned {expected_sha256[:16]}...: "
                "the file is damaged or not the expected release; reinstall the package"
            )
    return read_state_dict(data)
