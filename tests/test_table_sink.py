"""A pipeline's outputs through one sink: the files Beam's own sinks wrote, each row once."""

import json

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from witcurate.pipeline.table_sink import (WriteTables, _TablesSink, json_lines_table, parquet_table)

ROWS = pa.schema([("uid", pa.string()), ("tags", pa.list_(pa.int32())), ("note", pa.string())])
VECTORS = pa.schema([("uid", pa.string()), ("v", pa.list_(pa.float16()))])


def _rows(n):
    return [{"uid": f"{i:05d}", "tags": list(range(i % 4)), **({"note": "x"} if i % 2 else {})} for i in range(n)]


def _files(directory):
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_rows_tables_and_lines_land_as_beams_own_sinks_write_them(tmp_path):
    rows = _rows(2500)
    vectors = pa.table({"uid": ["a", "b"], "v": pa.array([[0.5, 1.0], [2.0, 4.0]], pa.list_(pa.float16()))},
                       schema=VECTORS)
    ours, beams = tmp_path / "ours", tmp_path / "beams"
    with beam.Pipeline(runner=FnApiRunner()) as p:
        pc_rows = p | "Rows" >> beam.Create(rows, reshuffle=False)
        pc_vectors = p | "Vectors" >> beam.Create([vectors], reshuffle=False)
        pc_lines = p | "Lines" >> beam.Create([json.dumps({"n": 1}), json.dumps({"n": 2})], reshuffle=False)
        pc_none = p | "None" >> beam.Create([])
        ({"rows": pc_rows, "vectors": pc_vectors, "lines": pc_lines, "none": pc_none}
         | WriteTables(str(ours), {
             "rows": parquet_table(str(ours / "part"), ROWS),
             "vectors": parquet_table(str(ours / "vectors" / "part"), VECTORS, use_dictionary=False),
             "lines": json_lines_table(str(ours / "_info" / "info")),
             "none": parquet_table(str(ours / "rejects" / "part"), ROWS)}))
        pc_rows | "BeamRows" >> beam.io.WriteToParquet(str(beams / "part"), ROWS, file_name_suffix=".parquet")
        pc_lines | "BeamLines" >> beam.io.WriteToText(str(beams / "_info" / "info"), file_name_suffix=".jsonl")
        pc_none | "BeamNone" >> beam.io.WriteToParquet(str(beams / "rejects" / "part"), ROWS,
                                                      file_name_suffix=".parquet")

    assert _files(ours) == ["_info/info-00000-of-00001.jsonl", "part-00000-of-00001.parquet",
                            "rejects/part-00000-of-00001.parquet", "vectors/part-00000-of-00001.parquet"]
    for name in ("part-00000-of-00001.parquet", "rejects/part-00000-of-00001.parquet"):
        mine, theirs = pq.ParquetFile(ours / name), pq.ParquetFile(beams / name)
        assert mine.schema_arrow == theirs.schema_arrow == ROWS   # lists of `item`, as Beam writes them
        assert mine.read().to_pylist() == theirs.read().to_pylist()
        assert mine.metadata.num_row_groups == theirs.metadata.num_row_groups
    assert pq.read_table(ours / "part-00000-of-00001.parquet").num_rows == 2500
    assert (ours / "_info/info-00000-of-00001.jsonl").read_bytes() == \
        (beams / "_info/info-00000-of-00001.jsonl").read_bytes()
    got = pq.ParquetFile(ours / "vectors/part-00000-of-00001.parquet")
    assert got.read().equals(vectors)
    assert not any(c.dictionary_page_offset for c in (got.metadata.row_group(0).column(i) for i in range(2)))
    assert not list(ours.glob("beam-temp-*"))                 # the temporary files are gone


def test_only_committed_bundles_land_and_a_retried_finalise_changes_nothing(tmp_path):
    # A bundle the runner retried wrote files too; only the attempt it committed is renamed.
    sink = _TablesSink(str(tmp_path), {"rows": parquet_table(str(tmp_path / "part"), ROWS)})
    init = sink.initialize_write()
    attempts = []
    for uid, rows in (("failed", _rows(3)), ("retried", _rows(3)), ("other", _rows(5)[3:])):
        writer = sink.open_writer(init, uid)
        for row in rows:
            writer.write(("rows", row))
        attempts.append(writer.close())
    committed = [attempts[1], attempts[2]]
    first = sink.finalize_write(init, committed, None)
    again = sink.finalize_write(init, committed, None)
    assert first == again == [str(tmp_path / f"part-0000{i}-of-00002.parquet") for i in range(2)]
    uids = sorted(u for path in first for u in pq.read_table(path)["uid"].to_pylist())
    assert uids == [f"{i:05d}" for i in range(5)]             # each row once
    assert _files(tmp_path) == ["part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]


def test_a_row_without_a_required_field_fails_as_in_beams_parquet_sink(tmp_path):
    schema = pa.schema([pa.field("uid", pa.string(), nullable=False)])
    sink = _TablesSink(str(tmp_path), {"rows": parquet_table(str(tmp_path / "part"), schema)})
    writer = sink.open_writer(sink.initialize_write(), "u")
    writer.write(("rows", {"other": 1}))
    with pytest.raises(KeyError):
        writer.close()


def test_inputs_must_match_the_tables_and_tables_must_not_collide():
    with pytest.raises(ValueError, match="differ"):
        with beam.Pipeline(runner=FnApiRunner()) as p:
            {"a": p | beam.Create([])} | WriteTables("/tmp", {"b": json_lines_table("/tmp/b")})
    with pytest.raises(ValueError, match="same files"):
        WriteTables("/tmp", {"a": json_lines_table("/tmp/x"), "b": json_lines_table("/tmp/x")})
    with pytest.raises(ValueError, match="word characters"):
        WriteTables("/tmp", {"a/b": json_lines_table("/tmp/x")})
