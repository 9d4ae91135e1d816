"""The local runner's gRPC data plane without its timed flushes, which drop bytes.

In its multi-worker modes (`--direct_running_mode=multi_processing` or `multi_threading`) Beam's
local runner sends each bundle's input to its workers over gRPC, and in `multi_threading` the
workers send their outputs back the same way. Both ends write through a
`TimeBasedBufferingClosableOutputStream` (the runner's data servicer and the embedded workers
take `worker_handlers.DATA_BUFFER_TIME_LIMIT_MS`, 1,000 ms): besides flushing at close, a
background thread flushes the buffer every second. Its flush reads the buffer, hands the bytes
to the send queue and only then clears the buffer; the writer does not take that lock, so what
it writes while the bytes are being handed over is cleared unsent. What the runner loses that
way is whole chunks of encoded elements: the stream still decodes, so nothing fails where it
happens. A worker's flush can also fall between the parts of one element, and then the next
step fails to decode its input (seen with Arrow tables in multi-threaded mode).

Measured with Beam 2.77.0 (docs/pins.md has the twelve-line reproduction): 400 elements of 2 MB
flattened with a copy of themselves came out as 618 to 792 of 800 in multi-processing mode
(with one worker or two), and the semdedup stage at 100,000 pairs lost 800 to 1,900 kept rows in
two of four multi-threaded runs (the stage's in = kept + rejected check stopped it). The more
time a bundle spends writing its input, the likelier a flush lands in it: large elements, or
many of them, through a step whose input the runner re-sends (a Flatten's) lose the most.

`install()` sets the limit beyond any run's length, so those streams flush only when closed
(or by size, where Beam asks for it between elements), as the in-process runner and Dataflow's
workers (whose limit is 0, off) already do. A bundle's input then travels in one message, which
gRPC caps at 2 GB: a bundle that large fails with Beam's own error instead of losing data.
"""

from __future__ import annotations

# Longer than any run: the periodic flush thread waits this long and is cancelled at close.
NO_TIMED_FLUSH_MS = 10 ** 9


def install() -> None:
    from apache_beam.runners.portability.fn_api_runner import worker_handlers
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = NO_TIMED_FLUSH_MS
