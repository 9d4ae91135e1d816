"""The one decision type every filter returns, and the one Beam transform that applies filters."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from witcurate.filters.base import Drop, Required, apply_filters, first_drop
from witcurate.filters.candidates import ValidCaption, ValidUrl, clipped, read_cleanly
from witcurate.pipeline.beam_io import KEPT, REJECTED, REJECT_FIELD_CHARS, FilterRecords, reject


def test_a_drop_is_falsy_and_carries_its_reason_and_detail():
    drop = Drop("caption_too_short")
    assert not drop and drop.reason == "caption_too_short" and drop.detail == ""
    assert drop.explained("ab") == Drop("caption_too_short", "ab")
    assert Drop("x", "specific").explained("generic").detail == "specific"


def test_the_first_drop_wins_and_later_filters_do_not_run():
    calls = []

    def keeps(record):
        calls.append("keeps")
        return True

    def never(record):
        calls.append("never")
        return True

    assert apply_filters({}, [keeps, Required("url", "missing_url", "no url"), never]) == \
        Drop("missing_url", "no url")
    assert calls == ["keeps"]
    assert apply_filters({"url": "x"}, [keeps, Required("url", "missing_url")]) is True
    assert first_drop(iter([True, Drop("a"), Drop("b")])) == Drop("a")


def test_a_filter_that_answers_a_bare_false_is_a_bug_not_a_silent_drop():
    with pytest.raises(TypeError, match="returns True or a Drop"):
        apply_filters({}, [lambda record: False])


def test_required_tells_none_from_empty():
    assert Required("uid", "missing_uid")({"uid": ""}) is True
    assert Required("uid", "missing_uid", allow_empty=False)({"uid": ""}) == Drop("missing_uid")
    assert Required("uid", "missing_uid")({}) == Drop("missing_uid")


def test_candidate_filters_say_what_the_text_was():
    long_url = "http://a.com/" + "x" * 300
    drop = ValidUrl(2048)({"url": "ftp://a.com/x.jpg"})
    assert drop == Drop("url_scheme", "ftp://a.com/x.jpg")
    assert ValidUrl(100)({"url": long_url}) == Drop("url_too_long", clipped(long_url))
    assert clipped(long_url).startswith("313 characters: http://a.com/xxx")
    assert ValidUrl(2048)({"url": "http://a.com:99999/x.jpg"}).reason == "url_unparseable"
    assert ValidUrl(2048)({"url": " http://a.com/x.jpg"}) is True
    assert ValidCaption(2, 5, 1000)({"caption": "IMG_0001.jpg"}) == Drop("caption_filename", "IMG_0001.jpg")
    assert read_cleanly({"error": "malformed_row: 3 fields"}) == Drop("malformed_row", "3 fields")


def test_filter_records_routes_each_drop_to_the_rejects_with_its_reason_and_detail():
    records = [{"uid": "a", "url": "http://a.com/1.jpg"}, {"uid": "b", "url": None},
               {"uid": "c", "url": "ftp://c.com/1.jpg"}]
    with test_pipeline.TestPipeline(runner="FnApiRunner") as p:
        outs = (p | beam.Create(records)
                  | FilterRecords(Required("url", "missing_url", "no url"), ValidUrl(2048)))
        assert_that(outs[KEPT], equal_to([records[0]]), label="kept")
        summary = outs[REJECTED] | beam.Map(lambda r: (r["uid"], r["reason"], r["detail"],
                                                       json.loads(r["record"])["url"]))
        assert_that(summary, equal_to([("b", "missing_url", "no url", None),
                                       ("c", "url_scheme", "ftp://c.com/1.jpg", "ftp://c.com/1.jpg")]),
                    label="rejected")


def test_a_reject_keeps_its_record_but_clips_giant_text():
    row = reject({"uid": "u", "caption": "w" * 10_000, "n": 3}, "caption_too_long", "10,000 characters")
    record = json.loads(row["record"])
    assert len(record["caption"]) == REJECT_FIELD_CHARS and record["n"] == 3
    assert reject({"uid": None}, "missing_uid")["uid"] == ""
