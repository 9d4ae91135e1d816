"""The score stage's decoding: image bytes -> the model's own eval preprocessing, in a thread
pool that runs ahead of the model."""

from __future__ import annotations

import collections
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import apache_beam as beam

from witcurate.filters import clip_score as rules
from witcurate.pipeline import image_source
from witcurate.pipeline.beam_io import REJECTED, reject
from witcurate.pipeline.inference import ScoreInput

# Reduced-size JPEG decoding (Pillow's draft) asks the decoder for at least this many times the
# model's input size, so the antialiased bicubic resize that follows still averages >= 2 source
# pixels per output pixel; images below 4x the input (the DCT scales by 1/2, 1/4, 1/8) decode in
# full, exactly as the reference preprocessing does.
DRAFT_FACTOR = 2

def prepare_image(data: bytes, preprocess: Any, input_size: int) -> Any:
    """Decode image bytes and apply the model's own eval preprocessing (a CHW float tensor).

    JPEGs much larger than the model input are decoded at a reduced size (Pillow's draft), which
    skips most of the decode work without going below DRAFT_FACTOR x the input size.
    """
    from PIL import Image
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and min(img.size) >= 2 * DRAFT_FACTOR * input_size:
            target = DRAFT_FACTOR * input_size
            img.draft("RGB", (target, target))
        img.load()
        return preprocess(img)


def model_input_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(min(size) if isinstance(size, (tuple, list)) else size)


class ReadAndPreprocess(beam.DoFn):
    """(shard, rows) -> ScoreInput per readable image; unreadable ones -> rejects.

    Each shard is read once, front to back. Decoding and preprocessing run in a thread pool
    (Pillow and torch release the GIL) that works `prefetch` images ahead, so while the model
    runs on one batch downstream, the next batch is being decoded.
    """

    def __init__(self, images_dir: str, preprocess: Any, input_size: int, threads: int, prefetch: int):
        self.images_dir = images_dir
        self.preprocess = preprocess
        self.input_size = input_size
        self.threads = threads
        self.prefetch = max(1, prefetch)
        self._pool: ThreadPoolExecutor | None = None

    def setup(self):
        if self.threads > 0:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="witcurate-decode")

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def process(self, element):
        shard, rows = element
        pending: collections.deque = collections.deque()
        for item in image_source.read_shard(self.images_dir, shard, rows):
            if item.data is None:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(item.row, rules.REASON_UNREADABLE, item.error))
                continue
            pending.append((item.row, self._submit(item.data)))
            while len(pending) > self.prefetch:
                yield from self._emit(*pending.popleft())
        while pending:
            yield from self._emit(*pending.popleft())

    def _submit(self, data: bytes):
        if self._pool is None:
            return _Done(lambda: prepare_image(data, self.preprocess, self.input_size))
        return self._pool.submit(prepare_image, data, self.preprocess, self.input_size)

    def _emit(self, row: dict[str, Any], future) -> Iterator[Any]:
        try:
            tensor = future.result()
        except Exception as e:  # any decode failure (corrupt, truncated, bomb, odd mode) is a reject
            detail = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            yield beam.pvalue.TaggedOutput(REJECTED, reject(row, rules.REASON_UNREADABLE, detail))
            return
        yield ScoreInput(tensor, str(row.get("caption") or ""), row)


class _Done:
    """A completed 'future' for inline decoding (num_workers 0)."""

    def __init__(self, fn):
        self._fn = fn

    def result(self):
        return self._fn()
