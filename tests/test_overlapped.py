"""OverlappedDoFn: two elements at once, every output delivered, errors and BLAS limits kept."""

import threading
import time

import apache_beam as beam
import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from threadpoolctl import threadpool_info

from witcurate.pipeline.overlapped import OverlappedDoFn

_LOCK = threading.Lock()
_SEEN = {"running": 0, "most": 0, "blas": set()}


def _blas_threads() -> set[int]:
    """numpy's BLAS threads (faiss's OpenMP BLAS, when loaded, counts threads per calling
    thread, so a pool thread reports its own default whatever the limit)."""
    return {info["num_threads"] for info in threadpool_info()
            if info["user_api"] == "blas" and "numpy" in info["filepath"]}


class Slow(OverlappedDoFn):
    BLAS_THREADS = 1

    def work(self, element) -> list:
        with _LOCK:
            _SEEN["running"] += 1
            _SEEN["most"] = max(_SEEN["most"], _SEEN["running"])
            _SEEN["blas"] |= _blas_threads()
        time.sleep(0.02 if element % 3 else 0.05)       # later elements finish first at times
        if element == 13:
            raise ValueError("element 13 is bad")
        with _LOCK:
            _SEEN["running"] -= 1
        return [element] + ([TaggedOutput("odd", element)] if element % 2 else [])


def test_every_output_arrives_and_two_elements_run_at_once():
    before = _blas_threads()
    _SEEN.update(running=0, most=0, blas=set())
    with TestPipeline() as p:
        outs = (p | beam.Create([i for i in range(40) if i != 13])
                  | beam.ParDo(Slow()).with_outputs("odd", main="all"))
        assert_that(outs["all"], equal_to([i for i in range(40) if i != 13]), label="all")
        assert_that(outs["odd"], equal_to([i for i in range(1, 40, 2) if i != 13]), label="odd")
    assert _SEEN["most"] == 2
    assert _SEEN["blas"] == {1}                  # BLAS on one thread while the step ran
    assert _blas_threads() == before             # and as it was afterwards


def test_an_error_in_one_element_fails_the_run():
    with pytest.raises(Exception, match="element 13 is bad"):
        with TestPipeline() as p:
            p | beam.Create(list(range(20))) | beam.ParDo(Slow())


def test_a_bundle_that_failed_does_not_leave_blas_limited():
    before = _blas_threads()
    fn = Slow()
    fn.setup()
    fn.start_bundle()                   # this bundle fails: finish_bundle never runs
    fn.start_bundle()                   # the retry
    assert _blas_threads() == {1}
    list(fn.finish_bundle())
    assert _blas_threads() == before
    fn.start_bundle()
    fn.teardown()                       # a failed last bundle: teardown restores
    assert _blas_threads() == before
