"""Groups of consecutive uids, cut without a global sorted list, equal the sorted-list cut."""

import hashlib
import random

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from witcurate.pipeline.uid_order import GroupByUidRank, bucket_width


def _reference(rows, per_group):
    """What one sorted list of distinct uids gives: group i = ranks i*N .. (i+1)*N - 1."""
    distinct = sorted({r["uid"] for r in rows})
    n_groups = -(-len(distinct) // per_group)
    rank = {u: i for i, u in enumerate(distinct)}
    groups = {}
    for r in rows:
        groups.setdefault((rank[r["uid"]] // per_group, n_groups), []).append(r["n"])
    return [(k, sorted(v)) for k, v in groups.items()]


@pytest.mark.parametrize("width, per_group", [(1, 7), (2, 7), (3, 50), (2, 1000)])
def test_rank_groups_equal_the_sorted_list_cut(width, per_group):
    rng = random.Random(width * 1000 + per_group)
    uids = [hashlib.sha256(str(i).encode()).hexdigest()[:32] for i in range(300)]
    uids += ["zz-not-hex", "a", "a1"]                               # any strings sort the same way
    rows = [{"uid": u, "n": i} for i, u in enumerate(uids)]
    rows += [{"uid": rng.choice(uids), "n": 1000 + i} for i in range(40)]   # duplicates
    rng.shuffle(rows)
    with test_pipeline.TestPipeline() as p:
        groups = (p | beam.Create(rows)
                    | GroupByUidRank(per_group, width)
                    | beam.MapTuple(lambda key, members: (key, sorted(r["n"] for r in members))))
        assert_that(groups, equal_to(_reference(rows, per_group)))


def test_bucket_width_keeps_buckets_small():
    assert bucket_width(1_000) == 1
    assert bucket_width(10_000_000) == 2            # 256 buckets of ~39k
    assert bucket_width(1_000_000_000) == 3         # 4,096 buckets of ~244k
    assert 1_000_000_000 / 16 ** bucket_width(1_000_000_000) <= 250_000
