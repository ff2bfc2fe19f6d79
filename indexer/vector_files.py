"""Float matrices on disk, read and written a block of rows at a time.

A generation's vectors and colour descriptors are 2-D ``.npy`` files, and
``embeddings.pkl`` holds the same float32 rows raw inside a pickle. Nothing
here holds a whole matrix: rows are streamed in blocks of ``CHUNK_ROWS``,
and ``ArrayFile`` maps a file only while a block of its rows is copied.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checksums import atomic_write, atomic_write_pickle
from .generation import VECTOR_DTYPES, ArtifactError

CHUNK_ROWS = 4096  # rows per read or write while streaming vectors (32 MB at 2048 dims)


def _npy_header(handle, shape: tuple[int, int], dtype=np.float32) -> None:
    np.lib.format.write_array_header_1_0(
        handle, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )


def write_vectors_npy(path: Path, embeddings, shape: tuple[int, int], dtype=np.float32) -> str:
    """Stream ``embeddings`` (anything sliceable by row ranges) into a ``.npy`` of ``dtype``; returns its SHA-256."""
    count, dim = shape

    def write(handle):
        _npy_header(handle, shape, dtype)
        for start in range(0, count, CHUNK_ROWS):
            chunk = np.ascontiguousarray(embeddings[start : start + CHUNK_ROWS], dtype=dtype)
            if chunk.shape != (min(CHUNK_ROWS, count - start), dim):
                raise ValueError(f"embedding rows {start}.. have shape {chunk.shape}, expected {dim} columns")
            handle.write(memoryview(chunk).cast("B"))

    return atomic_write(path, write)


def iter_npy_rows(path: Path, chunk_rows: int = CHUNK_ROWS):
    """Yield ``(first_row, float32 chunk)`` from a 2-D float32 or float16 ``.npy`` with plain reads.

    Reads rather than memory-maps so that a pass over gigabytes of vectors
    does not leave them all mapped (and counted) in this process.
    """
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(handle)
        if fortran or dtype.name not in VECTOR_DTYPES or len(shape) != 2:
            raise ArtifactError(f"{path.name} is not a C-ordered float32 or float16 matrix")
        count, dim = shape
        row_bytes = dim * dtype.itemsize
        for start in range(0, count, chunk_rows):
            rows = min(chunk_rows, count - start)
            data = handle.read(rows * row_bytes)
            if len(data) != rows * row_bytes:
                raise ArtifactError(f"{path.name} is shorter than its header says")
            yield start, np.frombuffer(data, dtype=dtype).reshape(rows, dim).astype(np.float32, copy=False)


def convert_npy(path: Path, dtype: str) -> str:
    """Rewrite a float32 ``.npy`` as ``dtype`` in place (atomically, streamed); returns its SHA-256."""
    shape = np.load(path, mmap_mode="r", allow_pickle=False).shape

    def write(handle):
        _npy_header(handle, shape, dtype)
        # the open handle keeps reading the float32 file until os.replace swaps it
        for _start, chunk in iter_npy_rows(path):
            handle.write(memoryview(np.ascontiguousarray(chunk, dtype=dtype)).cast("B"))

    return atomic_write(path, write)


# ---------------------------------------------------------------- raw rows inside embeddings.pkl


def write_array_pickle(path: Path, npy_path: Path, shape: tuple[int, int]) -> tuple[str, int | None]:
    """Write ``embeddings.pkl`` (a pickled float32 array) from the float32 ``.npy`` without loading it.

    The pickle is what ``pickle.dump(array, protocol=5)`` writes, except that
    the data is streamed from the ``.npy`` in chunks: the opcodes around the
    data come from pickling the array with its buffer out of band (which
    reads no data), and the single out-of-band buffer is replaced by an
    in-band ``BYTEARRAY8`` holding the bytes. Frames are optional for
    unpicklers and are left out. Returns the SHA-256 and the byte offset of
    the raw float32 rows inside the pickle (``None`` when empty), which lets
    a later build reuse the exact float32 vectors without unpickling them.
    """
    if shape[0] == 0:
        return atomic_write_pickle(path, np.zeros(shape, np.float32)), None
    mapped = np.load(npy_path, mmap_mode="r").view(np.ndarray)  # no page is read by pickling it out of band
    skeleton = pickle.dumps(mapped, protocol=5, buffer_callback=lambda buffer: None)  # None: out of band
    del mapped
    parts, data_at = [], None
    ops = list(pickletools.genops(skeleton))
    for index, (op, _arg, pos) in enumerate(ops):
        end = ops[index + 1][2] if index + 1 < len(ops) else len(skeleton)
        if op.name == "FRAME" or op.name == "READONLY_BUFFER":
            continue
        if op.name == "NEXT_BUFFER":
            data_at = len(parts)
            parts.append(None)
            continue
        parts.append(skeleton[pos:end])
    if data_at is None or parts.count(None) != 1:
        raise RuntimeError("unexpected pickle layout for a numpy array")
    nbytes = shape[0] * shape[1] * 4
    data_offset = sum(len(part) for part in parts[:data_at]) + 1 + 8  # after the opcode and its length

    def write(handle):
        for part in parts:
            if part is not None:
                handle.write(part)
                continue
            handle.write(pickle.BYTEARRAY8 + struct.pack("<Q", nbytes))
            for _start, chunk in iter_npy_rows(npy_path):
                handle.write(memoryview(chunk).cast("B"))

    return atomic_write(path, write), data_offset


def raw_rows_at(path: Path, offset, shape: tuple[int, int]) -> bool:
    """True when ``path`` holds ``shape`` raw float32 rows at ``offset``, announced by the pickle opcode before them."""
    nbytes = shape[0] * shape[1] * 4
    if type(offset) is not int or offset < 9:
        return False
    try:
        with open(path, "rb") as handle:
            handle.seek(offset - 9)
            announced = handle.read(9)
            size = os.fstat(handle.fileno()).st_size
    except OSError:
        return False
    return announced == pickle.BYTEARRAY8 + struct.pack("<Q", nbytes) and offset + nbytes <= size


@dataclass(frozen=True)
class ArrayFile:
    """A 2-D float array in a file, memory-mapped only while a block of its rows is read.

    Builds refer to stored rows through these instead of holding the rows,
    so a publish reads each row once, a block at a time, and keeps nothing
    mapped for long.
    """

    path: Path
    offset: int | None = None  # raw float32 rows start here (inside embeddings.pkl); None: a .npy file
    shape: tuple[int, int] | None = None

    def open(self) -> np.ndarray:
        """The array, memory-mapped read-only (unmapped when the caller drops it)."""
        if self.offset is None:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        return np.memmap(self.path, dtype=np.float32, mode="r", offset=self.offset, shape=self.shape)
