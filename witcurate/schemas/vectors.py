"""How embeddings are stored in a table: each vector as one binary value holding its float16
values little-endian, back to back (`np.frombuffer(value, "<f2")` reads one).

Why bytes and not a list of float16: parquet stores a list with a repetition and a definition
level per value, and decoding those levels is most of the cost of reading a list column. For
50,000 512-d vectors, measured with pyarrow: a list of float16 (or float32, or a fixed-size list)
0.26 to 0.30 s, the same values as one binary value per vector 0.03 to 0.06 s. The embedding
steps read every vector of the pool, twice at 1M pairs (the k-means sample, then the
assignment). The layout is the one DataComp and clip-retrieval use for their float16 `.npy`/
`.npz` arrays, one row per vector, kept beside the uid in the same parquet row.

Readers here also take list columns (list, large_list or fixed_size_list of floats): target
sets that users write with pandas or pyarrow, and score stage directories written before the
change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

VECTOR_TYPE = pa.binary()
DTYPE = np.dtype("<f2")
ENCODING = b"float16 little-endian, L2-normalised; np.frombuffer(value, '<f2')"


def vector_field(name: str) -> pa.Field:
    """A table field holding one stored vector per row, saying how to read it."""
    return pa.field(name, VECTOR_TYPE, metadata={b"encoding": ENCODING})


def vector_column(vectors: np.ndarray) -> pa.Array:
    """An (n, d) array as n binary values of d float16 each, without a copy per row."""
    flat = np.ascontiguousarray(vectors, dtype=DTYPE)
    n = flat.shape[0]
    width = flat.shape[1] * DTYPE.itemsize if flat.ndim == 2 else 0
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.Array.from_buffers(VECTOR_TYPE, n, [None, pa.py_buffer(offsets), pa.py_buffer(flat)])


def is_bytes(t: pa.DataType) -> bool:
    """Whether a vector column of type `t` holds float16 bytes (else: lists of numbers)."""
    return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)


def _combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column


def vector_sizes(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """The number of values of each row's vector (-1 for a null, and for a binary value whose
    length is not a whole number of float16 values)."""
    column = _combined(column)
    if is_bytes(column.type):
        nbytes = pc.binary_length(column).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
        return np.where((nbytes >= 0) & (nbytes % DTYPE.itemsize == 0), nbytes // DTYPE.itemsize, -1)
    return pc.list_value_length(column).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def cell_vector(value: Any) -> np.ndarray | None:
    """One stored vector (a binary value or a list of numbers, as `as_py()` gives it) as floats;
    None when it is null. Bytes of an odd length read as the float16 values they hold."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return np.frombuffer(data[:len(data) - len(data) % DTYPE.itemsize], dtype=DTYPE)
    return np.asarray(value, dtype=np.float32)


def vector_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float16 matrix of a vector column, and a mask of the rows that had `dim` values
    (other rows are zeros in the matrix). In the usual case, every row of `dim` values back to
    back, the matrix is a read-only view of the column's buffer, not a copy."""
    column = _combined(column)
    n = len(column)
    fits = vector_sizes(column) == dim
    if not fits.any():
        return np.zeros((n, dim), dtype=np.float16), fits
    if is_bytes(column.type):
        data, starts = _byte_values(column)
        values, width = data, dim * DTYPE.itemsize
    else:
        values, starts = _list_values(column)
        width = dim
    if fits.all() and np.array_equal(starts, starts[0] + np.arange(n) * width) and len(values) >= starts[0] + n * width:
        block = values[starts[0]:starts[0] + n * width]         # the usual case: one block, no gather
        return _floats(block).reshape(n, dim), fits
    out = np.zeros((n, dim), dtype=np.float16)
    for row in np.flatnonzero(fits):
        out[row] = _floats(values[starts[row]:starts[row] + width])
    return out, fits


def _floats(values: np.ndarray) -> np.ndarray:
    """float16 values: bytes (uint8) reinterpreted, numbers converted (a view where they are
    float16 already)."""
    return values.view(DTYPE).astype(np.float16, copy=False) if values.dtype == np.uint8 else values


def _byte_values(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(the bytes behind a binary column as uint8, where each row's bytes start in them)."""
    n = len(column)
    if pa.types.is_fixed_size_binary(column.type):
        width = column.type.byte_width
        return np.frombuffer(column.buffers()[1], dtype=np.uint8), (column.offset + np.arange(n, dtype=np.int64)) * width
    kind = np.int64 if pa.types.is_large_binary(column.type) else np.int32
    offsets = np.frombuffer(column.buffers()[1], dtype=kind)[column.offset:column.offset + n + 1]
    data = column.buffers()[2]
    return (np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)), offsets[:-1].astype(np.int64)


def _list_values(column: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(the values behind a list column as float16, where each row's values start in them)."""
    values = column.values.to_numpy(zero_copy_only=False).astype(np.float16, copy=False)
    if pa.types.is_fixed_size_list(column.type):
        size = column.type.list_size
        return values, (column.offset + np.arange(len(column), dtype=np.int64)) * size
    return values, column.offsets.to_numpy()[:-1].astype(np.int64)
