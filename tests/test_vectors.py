"""Stored vectors (witcurate/schemas/vectors.py): the score stage writes each embedding as float16
bytes; every reader gets the same float16 matrix from those bytes and from list columns (target
sets users write, score directories written before), sliced, chunked or with bad rows."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from witcurate.schemas.vectors import VECTOR_TYPE, cell_vector, vector_column, vector_matrix, vector_sizes

RNG = np.random.default_rng(0)
VECTORS = RNG.normal(size=(7, 5)).astype(np.float16)


def _round_trip(array: pa.Array) -> pa.ChunkedArray:
    buffer = io.BytesIO()
    pq.write_table(pa.table({"v": array}), buffer, row_group_size=3)
    return pq.read_table(io.BytesIO(buffer.getvalue())).column("v")


def layouts(vectors: np.ndarray) -> dict[str, pa.Array]:
    flat = vectors.reshape(-1)
    offsets = pa.array(np.arange(len(vectors) + 1, dtype=np.int32) * vectors.shape[1])
    return {
        "bytes": vector_column(vectors),
        "large bytes": vector_column(vectors).cast(pa.large_binary()),
        "fixed bytes": vector_column(vectors).cast(pa.binary(2 * vectors.shape[1])),
        "list<float16>": pa.ListArray.from_arrays(offsets, pa.array(flat)),
        "list<float32>": pa.ListArray.from_arrays(offsets, pa.array(flat.astype(np.float32))),
        "fixed list": pa.FixedSizeListArray.from_arrays(pa.array(flat), vectors.shape[1]),
    }


@pytest.mark.parametrize("name", list(layouts(VECTORS)))
def test_every_layout_reads_back_the_same_matrix(name):
    array = layouts(VECTORS)[name]
    for column in (array, _round_trip(array)):                      # in memory, and through parquet
        matrix, fits = vector_matrix(column, 5)
        assert matrix.dtype == np.float16 and fits.all()
        assert np.array_equal(matrix, VECTORS)
    # a slice starts where it says (Arrow slices keep the whole buffer and an offset)
    matrix, fits = vector_matrix(array.slice(2, 4), 5)
    assert np.array_equal(matrix, VECTORS[2:6]) and fits.all()
    assert vector_sizes(array.slice(2, 4)).tolist() == [5] * 4


def test_the_bytes_are_the_float16_values_a_user_reads_with_numpy():
    column = vector_column(VECTORS)
    assert column.type == VECTOR_TYPE
    assert np.array_equal(np.frombuffer(column[3].as_py(), "<f2"), VECTORS[3])
    assert np.array_equal(cell_vector(column[3].as_py()), VECTORS[3])
    assert np.array_equal(cell_vector([1.0, 2.0]), [1.0, 2.0]) and cell_vector(None) is None


def test_rows_of_another_size_or_null_do_not_fit_and_read_as_zeros():
    good = [VECTORS[0].tobytes(), None, VECTORS[1][:4].tobytes(), b"\x00\x3c\x00", VECTORS[2].tobytes()]
    column = pa.chunked_array([pa.array(good[:2], pa.binary()), pa.array(good[2:], pa.binary())])
    assert vector_sizes(column).tolist() == [5, -1, 4, -1, 5]       # 3 bytes: not float16 values
    matrix, fits = vector_matrix(column, 5)
    assert fits.tolist() == [True, False, False, False, True]
    assert np.array_equal(matrix[[0, 4]], VECTORS[[0, 2]]) and not matrix[[1, 2, 3]].any()
    lists = pa.array([VECTORS[0].tolist(), None, VECTORS[1][:4].tolist()], pa.list_(pa.float16()))
    matrix, fits = vector_matrix(lists, 5)
    assert fits.tolist() == [True, False, False] and np.array_equal(matrix[0], VECTORS[0])
    assert vector_matrix(pa.array([], pa.binary()), 5)[0].shape == (0, 5)


def test_an_empty_table_of_vectors_round_trips():
    column = vector_column(np.zeros((0, 5), np.float16))
    assert len(column) == 0 and vector_matrix(_round_trip(column), 5)[0].shape == (0, 5)
