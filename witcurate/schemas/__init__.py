"""The pyarrow schema of every table the stages exchange, and their validation.

Each stage's kept table is a superset of the previous one: a record gains columns as it moves
(ingest -> match adds query ids -> download adds image facts -> score adds the CLIP score ...).
`validate` checks that a table has every required column with a compatible type; extra columns
are allowed, so a user's own columns can ride along.
"""

from __future__ import annotations

import pyarrow as pa

from witcurate.errors import InputError

QUERIES = pa.schema([
    ("query_id", pa.int32()),
    ("query", pa.string()),
    ("sources", pa.list_(pa.string())),     # unigram / bigram / title / wordnet / import
    ("unigram_count", pa.int64()),
    ("bigram_count", pa.int64()),
    ("pmi", pa.float64()),
    ("views", pa.int64()),
    ("synsets", pa.list_(pa.string())),
])

CANDIDATES = pa.schema([
    ("uid", pa.string()),          # sha1 of normalised url + "\t" + normalised caption
    ("url", pa.string()),
    ("caption", pa.string()),
    ("source", pa.string()),       # the file it came from
])

# Ingest's output: the candidates and the page each image was found on (WAT/WARC sources; null for
# tables). Match and later stages need only CANDIDATES' columns, so their inputs stay as they were.
INGESTED = pa.schema(list(CANDIDATES) + [
    ("page_url", pa.string()),
])

MATCHED = pa.schema(list(CANDIDATES) + [
    ("query_ids", pa.list_(pa.int32())),
])

BALANCED = pa.schema(list(MATCHED) + [
    ("keep_probability", pa.float64()),
])

DOWNLOADED = pa.schema(list(BALANCED) + [
    ("shard", pa.string()),        # image tar, relative to the download stage directory
    ("key", pa.string()),          # sample key inside that tar
    ("width", pa.int32()),         # stored (resized) size
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("sha256", pa.string()),       # of the stored image bytes
    ("phash", pa.uint64()),        # 64-bit perceptual hash (imagehash.phash)
])

DEDUPED = DOWNLOADED

SCORED = pa.schema(list(DEDUPED) + [
    ("clip_score", pa.float32()),
    ("clip_model", pa.string()),
])

CAPPED = pa.schema(list(SCORED) + [
    ("query_id", pa.int32()),      # the one query this pair counts toward (its rarest)
    ("query", pa.string()),
])

# How many pool captions match each query (MetaCLIP's count_e), counted once by balance over
# the whole match output and saved beside its output as `query_counts.parquet`; cap reads it to
# find each pair's rarest query.
QUERY_COUNTS = pa.schema([
    ("query_id", pa.int32()),
    ("pool_count", pa.int64()),
])

# Every stage's rejects: enough to find the record again and know why it went.
REJECTS = pa.schema([
    ("uid", pa.string()),
    ("reason", pa.string()),       # a short stable code, e.g. no_query_match, http_404
    ("detail", pa.string()),       # human-readable specifics (img2dataset's error, the survivor, ...)
    ("record", pa.string()),       # the rejected record as JSON, so nothing vanishes
])

# Dedupe's rejects also name the survivor they duplicate (null for its other reasons).
DEDUPE_REJECTS = pa.schema(list(REJECTS) + [("survivor_uid", pa.string())])

SCHEMAS = {
    "queries": QUERIES,
    "ingest": INGESTED,
    "match": MATCHED,
    "balance": BALANCED,
    "download": DOWNLOADED,
    "dedupe": DEDUPED,
    "score": SCORED,
    "cap": CAPPED,
    "rejects": REJECTS,
}


def _compatible(actual: pa.DataType, expected: pa.DataType) -> bool:
    if actual == expected:
        return True
    if pa.types.is_null(actual):
        return True
    if pa.types.is_string(expected) and (pa.types.is_large_string(actual) or pa.types.is_string(actual)):
        return True
    if pa.types.is_list(expected) and (pa.types.is_list(actual) or pa.types.is_large_list(actual)):
        return _compatible(actual.value_type, expected.value_type)
    if pa.types.is_integer(expected) and pa.types.is_integer(actual):
        return True
    if pa.types.is_floating(expected) and pa.types.is_floating(actual):
        return True
    return False


def validate(schema: pa.Schema, actual: pa.Schema, where: str) -> None:
    """Raise InputError naming every missing or mistyped column."""
    problems = []
    for f in schema:
        idx = actual.get_field_index(f.name)
        if idx < 0:
            problems.append(f"missing column {f.name!r}")
        elif not _compatible(actual.field(idx).type, f.type):
            problems.append(f"column {f.name!r} is {actual.field(idx).type}, expected {f.type}")
    if problems:
        raise InputError(f"{where}: {'; '.join(problems)}",
                         "point --in at the output of the previous stage")


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Cast a table to `schema`'s column types (keeping extra columns) after validating it."""
    validate(schema, table.schema, "table")
    for f in schema:
        i = table.schema.get_field_index(f.name)
        if table.schema.field(i).type != f.type:
            table = table.set_column(i, f.name, table.column(i).cast(f.type))
    return table


def candidate_uid(url: str, caption: str) -> str:
    """The stable id of a candidate: sha256 of its normalised url and caption, 32 hex chars."""
    import hashlib
    return hashlib.sha256(f"{url}\t{caption}".encode("utf-8")).hexdigest()[:32]
