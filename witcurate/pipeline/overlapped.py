"""A DoFn that works on two elements at once, for steps whose work per element is long native
calls that let go of the GIL (Arrow decoding a row group, numpy over tens of megabytes, file
writes): the runner hands a bundle's elements to a DoFn one after another, so on two cores one
of them would sit idle through such a step.

Each element's outputs are yielded whole once its work is done, from a later element's
`process` or from `finish_bundle`. They are given the global window and the minimum timestamp,
which every stage's elements have (batch pipelines, no windowing); a step over windowed data
must not use this. An error in an element's work fails the bundle as it would have in
`process`, and the runner retries the bundle.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor

import apache_beam as beam
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindows


class OverlappedDoFn(beam.DoFn):
    WORKERS = 2
    # BLAS threads while a bundle runs (None: as they are). A step of many small matrix
    # products sets 1: BLAS splitting each product over both cores costs more than it gains
    # there, and the two elements at once use both cores instead.
    BLAS_THREADS: int | None = None

    def work(self, element, *side) -> list:
        """The outputs of one element (values and TaggedOutputs), as a list."""
        raise NotImplementedError

    def setup(self):
        self._pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix=type(self).__name__)

    def start_bundle(self):
        self._pending: deque[Future] = deque()
        self._restore_blas()                     # a failed bundle before this one left its limit
        if self.BLAS_THREADS is not None:
            from threadpoolctl import threadpool_limits
            self._limits = threadpool_limits(limits=self.BLAS_THREADS, user_api="blas")

    def process(self, element, *side):
        self._pending.append(self._pool.submit(self.work, element, *side))
        while self._pending and (len(self._pending) > self.WORKERS or self._pending[0].done()):
            yield from self._pending.popleft().result()

    def finish_bundle(self):
        while self._pending:
            for out in self._pending.popleft().result():
                if isinstance(out, TaggedOutput):
                    yield TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
                else:
                    yield GlobalWindows.windowed_value(out)
        self._restore_blas()

    def _restore_blas(self):
        if getattr(self, "_limits", None) is not None:
            self._limits.restore_original_limits()
            self._limits = None

    def teardown(self):
        self._restore_blas()                     # a failed bundle never reached finish_bundle
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
