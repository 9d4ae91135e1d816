"""Reading a stage directory's tables: its Parquet parts, their row counts and reject reasons.

Every reader of finished stage output (the runner's accounting, `audit`, the card, later stages
and the demo's truth report) goes through here, so a damaged part is always reported the same
way: an InputError naming the file and the stage to rerun.
"""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate.errors import InputError
from witcurate.pipeline import fs

KEPT_PARTS = "part-*.parquet"
# Beside balance's output: pool captions per query (schemas.QUERY_COUNTS).
QUERY_COUNTS_FILE = "query_counts.parquet"


def parquet_files(directory: str, pattern: str = KEPT_PARTS) -> list[str]:
    return fs.glob(fs.join(directory, pattern))


def open_parquet(path: str, columns: list[str] | None = None, footer_only: bool = False):
    """A part's footer (FileMetaData) or its table; a damaged file is an InputError naming it."""
    try:
        with fs.open_file(path) as f:
            return pq.ParquetFile(f).metadata if footer_only else pq.read_table(f, columns=columns)
    except (OSError, ValueError) as e:           # ArrowInvalid is a ValueError
        raise InputError(f"unreadable parquet file {path}: {e}",
                         "the stage that wrote it was damaged after it finished: rerun that stage "
                         "with --force") from None


def count_rows(directory: str, pattern: str = KEPT_PARTS) -> int:
    """Rows of the parts matching `pattern`, from their footers (no data is read)."""
    return sum(open_parquet(path, footer_only=True).num_rows for path in parquet_files(directory, pattern))


def read_table(directory: str, columns: list[str] | None = None) -> pa.Table | None:
    """All kept rows of a stage directory as one pyarrow table (metadata only: no image bytes)."""
    tables = [open_parquet(path, columns) for path in parquet_files(directory)]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="default")


def reject_counts(directory: str) -> dict[str, int]:
    """Rejects of a stage directory by reason, most frequent first."""
    counts: collections.Counter[str] = collections.Counter()
    for path in parquet_files(fs.join(directory, "rejects")):
        counts.update(open_parquet(path, ["reason"]).column("reason").to_pylist())
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def query_counts_file(path: str) -> str:
    """The query counts a balance stage saved: `path` is that stage's directory or the file."""
    file = path if path.endswith(".parquet") else fs.join(path, QUERY_COUNTS_FILE)
    if not fs.exists(file):
        raise InputError(f"no per-query counts at {file}",
                         "point it at a balance stage directory written by this version "
                         "(rerun balance with --force if it predates query_counts.parquet)")
    return file
