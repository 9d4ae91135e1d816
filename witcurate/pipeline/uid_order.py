"""Cut a PCollection into groups of N consecutive uids (in sorted order) without a global list.

The download stage fetches `urls_per_shard` uids per shard and the shards stage writes
`samples_per_shard` samples per tar, both in uid order so that a rerun cuts exactly the same
groups. Sorting every uid in one place (the driver, or one worker's side input) stops working
long before a billion rows. Instead rows are bucketed by a uid prefix: prefixes sort the way
their uids do, so counting the distinct uids per bucket (a small table, one row per bucket)
gives each bucket's first rank, and sorting inside one bucket gives every uid its global rank.
Rows sharing a uid share a rank, so duplicates land in the same group.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import apache_beam as beam

ROWS_PER_BUCKET = 250_000          # hex uids: 16**width buckets hold about this many each


def bucket_width(n_rows: int, rows_per_bucket: int = ROWS_PER_BUCKET) -> int:
    """Characters of uid prefix per bucket, for about `rows_per_bucket` rows in each."""
    width = 1
    while n_rows / 16 ** width > rows_per_bucket:
        width += 1
    return width


def bucket_starts(counts: list[tuple[str, int]]) -> dict[str, Any]:
    """{"starts": {bucket: rank of its first uid}, "total": distinct uids}."""
    starts, total = {}, 0
    for bucket, n in sorted(counts):
        starts[bucket] = total
        total += n
    return {"starts": starts, "total": total}


def rank_bucket(item: tuple[str, list[dict]], layout: dict[str, Any],
                per_group: int) -> Iterator[tuple[tuple[int, int], dict]]:
    """((group index, number of groups), row) for every row of one bucket."""
    bucket, rows = item
    n_groups = math.ceil(layout["total"] / per_group)
    rank = layout["starts"][bucket] - 1
    previous = None
    for row in sorted(rows, key=lambda r: r["uid"]):
        if row["uid"] != previous:
            rank, previous = rank + 1, row["uid"]
        yield (rank // per_group, n_groups), row


class GroupByUidRank(beam.PTransform):
    """Rows (dicts with a non-empty string `uid`) -> ((index, n_groups), [rows]): group `index`
    holds the uids ranked index*per_group .. (index+1)*per_group - 1 in sorted order."""

    def __init__(self, per_group: int, width: int):
        super().__init__()
        self.per_group, self.width = per_group, width

    def expand(self, rows):
        width = self.width
        layout = (rows
                  | "Uids" >> beam.Map(lambda r: r["uid"])
                  | "DistinctUids" >> beam.Distinct()
                  | "BucketOfUid" >> beam.Map(lambda uid: (uid[:width], 1))
                  | "CountPerBucket" >> beam.CombinePerKey(sum)
                  | "AllBuckets" >> beam.combiners.ToList()
                  | "BucketStarts" >> beam.Map(bucket_starts))
        return (rows
                | "KeyByBucket" >> beam.Map(lambda r: (r["uid"][:width], r))
                | "GroupByBucket" >> beam.GroupByKey()
                | "RankInBucket" >> beam.FlatMap(rank_bucket, beam.pvalue.AsSingleton(layout), self.per_group)
                | "GroupByRank" >> beam.GroupByKey())
