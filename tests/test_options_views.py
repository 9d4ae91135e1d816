"""Pipeline options that keep one view per class answer as Beam's fresh views do, and build
each view's parser once instead of once per type check."""

from __future__ import annotations

import copy
import pickle

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (DirectOptions, PipelineOptions, SetupOptions, StandardOptions,
                                                  TypeOptions)
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.typehints.decorators import TypeCheckError

from witcurate.pipeline.beam_io import make_pipeline
from witcurate.pipeline.options_views import ViewCachingOptions

ARGS = ["--direct_num_workers=3", "--type_check_strictness=ALL_REQUIRED"]


def test_views_answer_as_fresh_views_do():
    ours, beams = ViewCachingOptions(ARGS), PipelineOptions(ARGS)
    for cls in (DirectOptions, TypeOptions, SetupOptions, StandardOptions):
        assert ours.view_as(cls).get_all_options() == beams.view_as(cls).get_all_options()
    assert ours.view_as(DirectOptions) is ours.view_as(DirectOptions)
    assert ours.view_as(DirectOptions).direct_num_workers == 3


def test_an_option_set_through_one_view_is_seen_by_every_view():
    options = ViewCachingOptions([])
    cached = options.view_as(SetupOptions)
    options.view_as(SetupOptions).save_main_session = True
    assert cached.save_main_session is True
    standard = options.view_as(StandardOptions)
    standard.runner = "SomeRunner"
    assert options.view_as(StandardOptions).runner == "SomeRunner"
    assert options.get_all_options()["runner"] == "SomeRunner"


@pytest.mark.parametrize("duplicate", [copy.deepcopy, lambda o: pickle.loads(pickle.dumps(o))])
def test_a_copy_has_its_own_views_and_values(duplicate):
    options = ViewCachingOptions(["--direct_num_workers=2"])
    options.view_as(DirectOptions)                       # a view in the cache before the copy
    other = duplicate(options)
    assert type(other) is ViewCachingOptions
    assert "_witcurate_views" not in pickle.loads(pickle.dumps(options)).__dict__
    other.view_as(DirectOptions).direct_num_workers = 5
    assert options.view_as(DirectOptions).direct_num_workers == 2
    assert other.view_as(DirectOptions).direct_num_workers == 5


def test_a_pipeline_still_type_checks_its_steps_at_construction():
    p = make_pipeline([])
    with pytest.raises(TypeCheckError):
        _ = (p | beam.Create([1, 2]).with_output_types(int)
               | beam.Map(str.upper).with_input_types(str))


def test_building_and_running_a_pipeline_parses_type_options_a_few_times(monkeypatch):
    built = []
    add_args = TypeOptions.__dict__["_add_argparse_args"].__func__

    def counting(cls, parser):
        built.append(cls)
        return add_args(cls, parser)

    monkeypatch.setattr(TypeOptions, "_add_argparse_args", classmethod(counting))
    p = make_pipeline([])
    values = p | beam.Create([("a", 1), ("b", 2), ("a", 3)])
    for i in range(20):
        values = values | f"Step{i}" >> beam.Map(lambda kv: (kv[0], kv[1] + 1))
    sums = values | beam.CombinePerKey(sum)
    assert_that(sums, equal_to([("a", 44), ("b", 22)]))
    p.run().wait_until_finish()
    # Beam's own options build TypeOptions' parser for every type check: hundreds here.
    assert len(built) <= 10, len(built)
