"""The memo of Beam's stateful-DoFn scan (witcurate/pipeline/dofn_specs.py) answers as Beam's
own scan does, for every kind of DoFn, and stateful pipelines still run."""

from __future__ import annotations

import types

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.core import CallableWrapperDoFn
from apache_beam.transforms.timeutil import TimeDomain

from witcurate.pipeline import beam_io, dofn_specs  # noqa: F401 (beam_io installs the memo)
from witcurate.pipeline.download_shard import DownloadShard

BAG = userstate.BagStateSpec("seen", VarIntCoder())
TIMER = userstate.TimerSpec("flush", TimeDomain.WATERMARK)


class Plain(beam.DoFn):
    def process(self, x):
        yield x


class Stateful(beam.DoFn):
    """Keeps every value of a key and emits their sum when the window closes."""

    def process(self, kv, seen=beam.DoFn.StateParam(BAG), flush=beam.DoFn.TimerParam(TIMER)):
        seen.add(kv[1])
        flush.set(beam.window.GlobalWindow().max_timestamp())

    @userstate.on_timer(TIMER)
    def emit(self, key=beam.DoFn.KeyParam, seen=beam.DoFn.StateParam(BAG)):
        yield key, sum(seen.read())


class Swapped(beam.DoFn):
    """A DoFn whose instance may put a stateful method in place of its plain one: the class
    alone does not say what the scan finds."""

    def process(self, x):
        yield x

    def __init__(self, swap: bool):
        super().__init__()
        if swap:
            self.process = types.MethodType(_stateful_process, self)


def _stateful_process(self, kv, seen=beam.DoFn.StateParam(BAG)):
    yield kv


def _stateful_map_fn(kv, seen=beam.DoFn.StateParam(BAG)):
    return kv


def test_the_memo_is_installed_and_answers_as_beams_scan():
    assert userstate.get_dofn_specs is dofn_specs.memoised_dofn_specs
    dofns = [Plain(), Stateful(), Swapped(False), Swapped(True), Plain(), Stateful(),
             CallableWrapperDoFn(lambda x: x), CallableWrapperDoFn(_stateful_map_fn),
             CallableWrapperDoFn(lambda x: x), DownloadShard.__new__(DownloadShard)]
    for dofn in dofns * 2:        # the second round answers from the memo
        assert dofn_specs.memoised_dofn_specs(dofn) == dofn_specs._beam_scan(dofn), dofn
    assert dofn_specs.memoised_dofn_specs(Stateful()) == ({BAG}, {TIMER})
    assert dofn_specs.memoised_dofn_specs(Swapped(True)) == ({BAG}, set())
    assert dofn_specs.memoised_dofn_specs(Swapped(False)) == (set(), set())
    assert dofn_specs.memoised_dofn_specs(CallableWrapperDoFn(lambda x: x)) == (set(), set())


def test_callers_get_sets_of_their_own():
    first = dofn_specs.memoised_dofn_specs(Stateful())
    first[0].clear()
    assert dofn_specs.memoised_dofn_specs(Stateful()) == ({BAG}, {TIMER})


def test_a_stateful_pipeline_runs_with_the_memo():
    with TestPipeline(runner="FnApiRunner") as p:
        out = (p | beam.Create([("a", 1), ("b", 2), ("a", 3)])
                 | "Plain" >> beam.ParDo(Plain())
                 | "Sum" >> beam.ParDo(Stateful()))
        assert_that(out, equal_to([("a", 4), ("b", 2)]))


def test_an_unpickled_copy_finds_the_memo():
    """The local runner unpickles every DoFn before running it: the copy's callable is a new
    object with the same signature, and must not cost a second scan."""
    from apache_beam.internal import pickler
    # a Map's DoFn, and MapTuple's, which also keeps the argument spec (lists) of its callable
    for dofn in (CallableWrapperDoFn(lambda x, y=3: x), beam.MapTuple(lambda k, v: (k, v)).fn):
        dofn_specs.memoised_dofn_specs(dofn)
        size = len(dofn_specs._memo)
        copy = pickler.loads(pickler.dumps(dofn))
        assert copy._fn is not dofn._fn
        assert dofn_specs.memoised_dofn_specs(copy) == dofn_specs._beam_scan(copy)
        assert len(dofn_specs._memo) == size, dofn
