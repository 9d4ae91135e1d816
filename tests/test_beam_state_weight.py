"""The state cache's weighing (witcurate/pipeline/beam_state_weight.py) gives Beam's own weights,
without a cost that grows with the number of loaded modules."""

from __future__ import annotations

import sys
import time
import types

import numpy as np
import pyarrow as pa
from apache_beam.runners.worker import statecache

from witcurate.pipeline import beam_io, beam_state_weight  # noqa: F401 (beam_io installs it)
from witcurate.queries.lookups import LookupSet


class Holder:
    """A value that refers to a function, a class and a module, as a DoFn's side input might."""

    def __init__(self):
        self.fn = beam_state_weight.deep_size
        self.kind = Holder
        self.module = np
        self.data = {"a": [1, 2, 3], "b": "x" * 100}


def _values():
    return [
        ["gs://bucket/run/tmp/part-00000-of-00004.parquet"],
        [("query", 3), ("other query", 12)] * 50,
        {f"query {i}": i for i in range(1000)},
        np.zeros((300, 512), np.float16),
        pa.table({"uid": [f"{i:016x}" for i in range(100)]}),
        LookupSet(f"title {i}" for i in range(500)),
        Holder(),
        [Holder(), Holder()],
    ]


def test_the_weights_are_beams():
    assert statecache.get_deep_size is beam_state_weight.deep_size
    for value in _values():
        assert beam_state_weight.deep_size(value) == beam_state_weight._beam_weight(value), type(value)


def test_weighing_does_not_grow_with_the_loaded_modules(monkeypatch):
    """Beam's default lists every loaded module's globals at each call; 20,000 more modules make
    it far slower, and ours not."""
    for i in range(20_000):
        monkeypatch.setitem(sys.modules, f"witcurate_test_module_{i}", types.ModuleType(f"m{i}"))
    value = ["gs://bucket/run/tmp/part-00000-of-00004.parquet"]

    def seconds(weigh) -> float:
        start = time.perf_counter()
        for _ in range(20):
            weigh(value)
        return time.perf_counter() - start

    beams, ours = seconds(beam_state_weight._beam_weight), seconds(beam_state_weight.deep_size)
    assert ours * 20 < beams, (ours, beams)
