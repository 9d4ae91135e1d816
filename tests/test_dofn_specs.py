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


def _with_defaults(x, scale=2, offset=beam.DoFn.TimestampParam):
    return x


class Overridden(beam.DoFn):
    """An instance that puts a function of its own, with other arguments, in place of process."""

    def process(self, x):
        yield x

    def __init__(self):
        super().__init__()
        self.process = types.MethodType(_stateful_process, self)


def _argument_cases() -> list:
    return [(Plain(), "process"), (Plain(), "start_bundle"), (Stateful(), "process"),
            (Stateful(), "emit"), (Swapped(False), "process"), (Swapped(True), "process"),
            (Overridden(), "process"), (Overridden(), "setup"),
            (beam.Map(lambda x: x).fn, "process"), (beam.Map(_with_defaults).fn, "process"),
            (beam.Map(_stateful_map_fn).fn, "process"), (beam.FlatMap(_with_defaults).fn, "process"),
            (beam.MapTuple(lambda k, v: (k, v)).fn, "process"),
            (beam.Map(lambda x, y: x, 3).fn, "process"), (DownloadShard.__new__(DownloadShard), "process")]


def test_the_argument_memo_is_installed_and_answers_as_beam():
    from apache_beam.transforms import core
    assert core.get_function_arguments is dofn_specs.memoised_function_arguments
    for _ in range(2):                 # the second round answers from the memo
        for obj, method in _argument_cases():
            assert dofn_specs.memoised_function_arguments(obj, method) == dofn_specs._beam_arguments(obj, method), \
                (obj, method)
    # every Map wraps its callable in the same lambda: the callable's own arguments count
    assert dofn_specs.memoised_function_arguments(beam.Map(_with_defaults).fn, "process") == \
        (["x", "scale", "offset"], [2, beam.DoFn.TimestampParam])
    assert dofn_specs.memoised_function_arguments(beam.Map(lambda x: x).fn, "process") == (["x"], [])
    for dofn in (beam.Map(lambda kv: kv).fn, beam.Map(_stateful_map_fn).fn):
        assert dofn_specs.memoised_dofn_specs(dofn) == dofn_specs._beam_scan(dofn)


def test_argument_lists_are_the_callers_own():
    names, defaults = dofn_specs.memoised_function_arguments(Stateful(), "process")
    names.clear()
    defaults.clear()
    assert dofn_specs.memoised_function_arguments(Stateful(), "process")[0] == ["kv", "seen", "flush"]


def test_a_step_takes_its_arguments_from_beam_once(monkeypatch):
    """Building, translating and running a pipeline asks for the same DoFn's arguments many
    times; Beam's own scan runs once per kind of DoFn and method."""
    calls, beams_own = [], dofn_specs._beam_arguments

    def counting(obj, method):
        calls.append((type(obj).__name__, method))
        return beams_own(obj, method)

    class Counted(beam.DoFn):      # a class no earlier test has scanned
        def process(self, x, step=1):
            yield x + step

    monkeypatch.setattr(dofn_specs, "_beam_arguments", counting)
    with TestPipeline(runner="FnApiRunner") as p:
        out = p | beam.Create([1, 2]) | "A" >> beam.ParDo(Counted()) | "B" >> beam.ParDo(Counted())
        assert_that(out, equal_to([3, 4]))
    counted = [c for c in calls if c[0] == "Counted"]
    assert counted and len(counted) == len(set(counted)), counted
