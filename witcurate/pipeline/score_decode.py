"""The score stage's decoding: image bytes -> batches the model takes whole.

The model's own eval preprocessing (open_clip's Resize, CenterCrop, RGB, ToTensor, Normalize) is
split where a batch can take over: the PIL steps run per image in the decode threads and write
each image's pixels straight into its slot of one uint8 batch array; ToTensor and Normalize run
once per batch, on the model's device (`to_model_input`). The result is the reference
computation's, value for value, without a float tensor per image, a stack of them, or per-image
torch calls. Captions are tokenised in the same threads, a batch per call.

`DecodeBatches` runs ahead of the model: while it runs on one batch downstream, up to
`in_flight` further batches are being decoded (threads release the GIL in Pillow's decoders and
resamplers). Batches span shards: a bundle's last images are sent when the bundle ends.
"""

from __future__ import annotations

import collections
import io
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple

import apache_beam as beam
import numpy as np
import torch
from apache_beam.transforms.window import GlobalWindows

from witcurate.filters import clip_score as rules
from witcurate.pipeline import image_source
from witcurate.pipeline.beam_io import REJECTED, reject

# Reduced-size JPEG decoding (Pillow's draft) asks the decoder for at least this many times the
# model's input size, so the antialiased bicubic resize that follows still averages >= 2 source
# pixels per output pixel; images below 4x the input (the DCT scales by 1/2, 1/4, 1/8) decode in
# full, exactly as the reference preprocessing does.
DRAFT_FACTOR = 2


def open_image(data: bytes, input_size: int) -> Any:
    """Decoded PIL image; JPEGs much larger than the model input are decoded at a reduced size
    (Pillow's draft), which skips most of the decode work without going below DRAFT_FACTOR x
    the input size."""
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG" and min(img.size) >= 2 * DRAFT_FACTOR * input_size:
        target = DRAFT_FACTOR * input_size
        img.draft("RGB", (target, target))
    img.load()
    return img


def prepare_image(data: bytes, preprocess: Any, input_size: int) -> Any:
    """One image through the model's whole eval preprocessing (a CHW float tensor)."""
    with open_image(data, input_size) as img:
        return preprocess(img)


def model_input_size(model: Any) -> int:
    size = getattr(model.visual, "image_size", 224)
    return int(min(size) if isinstance(size, (tuple, list)) else size)


@dataclass(frozen=True)
class PixelSteps:
    """The preprocessing split: `per_image` runs on each PIL image; when `mean` is set it returns
    an RGB image whose ToTensor + Normalize(mean, std) the batch does, else a ready float tensor
    (a preprocessing that does not end in ToTensor + Normalize runs whole, per image)."""
    per_image: Any
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def split_preprocess(preprocess: Any) -> PixelSteps:
    from torchvision import transforms as T
    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) >= 2 and isinstance(steps[-2], T.ToTensor) and isinstance(steps[-1], T.Normalize):
        norm = steps[-1]
        if not norm.inplace:
            return PixelSteps(T.Compose(steps[:-2]), tuple(map(float, norm.mean)), tuple(map(float, norm.std)))
    return PixelSteps(preprocess)


class ScoreBatch(NamedTuple):
    """Images and captions the model scores in one call, and the rows they came with."""
    images: torch.Tensor                  # uint8 [B, H, W, 3] (mean set), else float [B, 3, H, W]
    tokens: torch.Tensor                  # the model's tokenizer on the captions, [B, context]
    rows: list[dict[str, Any]]
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None


def to_model_input(batch: ScoreBatch, device: torch.device) -> torch.Tensor:
    """The batch's pixels as the model input on `device`: ToTensor (CHW, float, /255) and
    Normalize, once for the whole batch, after the uint8 pixels have crossed to the device."""
    images = batch.images.to(device, non_blocking=True)
    if batch.mean is None:
        return images
    x = images.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    mean = torch.as_tensor(batch.mean, dtype=x.dtype, device=device).view(1, -1, 1, 1)
    std = torch.as_tensor(batch.std, dtype=x.dtype, device=device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)


def _error_detail(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def decode_batch(items: list[tuple[dict[str, Any], bytes]], steps: PixelSteps, input_size: int,
                 tokenizer: Any, pin: bool) -> tuple[ScoreBatch | None, list[tuple[dict[str, Any], str]]]:
    """(the readable images as one ScoreBatch, or None; (row, why) for the others).

    Any decode failure (corrupt, truncated, a decompression bomb, an odd mode) is a reject."""
    pixels: Any = None
    slots: Any = None                   # where each image's output goes: a numpy view of the uint8 batch
    rows, failed = [], []
    for row, data in items:
        try:
            with open_image(data, input_size) as img:
                out = steps.per_image(img)
            if steps.mean is not None:
                out = np.asarray(out)
            if pixels is None:
                dtype = torch.uint8 if steps.mean is not None else out.dtype
                pixels = torch.empty((len(items), *out.shape), dtype=dtype, pin_memory=pin)
                slots = pixels.numpy() if steps.mean is not None else pixels
            if tuple(out.shape) != tuple(pixels.shape[1:]):
                raise ValueError(f"preprocessed to {tuple(out.shape)}, not {tuple(pixels.shape[1:])}")
            slots[len(rows)] = out
        except Exception as e:  # noqa: BLE001 - every way an image can fail to decode is a reject
            failed.append((row, _error_detail(e)))
            continue
        rows.append(row)
    if not rows:
        return None, failed
    tokens = tokenizer([str(row.get("caption") or "") for row in rows])
    return ScoreBatch(pixels[:len(rows)], tokens, rows, steps.mean, steps.std), failed


class _Done:
    """A completed 'future' for inline decoding (num_workers 0)."""

    def __init__(self, value):
        self._value = value

    def result(self):
        return self._value


class DecodeBatches(beam.DoFn):
    """(shard, rows) -> ScoreBatch of `batch_size` readable images; unreadable ones -> rejects.

    Each shard is read once, front to back. `threads` decode threads (0: inline) work up to
    `threads + 1` batches ahead of the model. Uint8 batches are allocated in pinned memory when
    the worker has a CUDA device to copy them to (`device` not "cpu")."""

    def __init__(self, images_dir: str, steps: PixelSteps, input_size: int, model_name: str,
                 batch_size: int, threads: int, device: str = "auto"):
        self.images_dir = images_dir
        self.steps = steps
        self.input_size = input_size
        self.model_name = model_name
        self.batch_size = batch_size
        self.threads = threads
        self.device = device
        self._pool: ThreadPoolExecutor | None = None

    def setup(self):
        self._tokenizer = load_tokenizer(self.model_name)
        self._pin = self.device != "cpu" and torch.cuda.is_available()
        if self.threads > 0:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="witcurate-decode")

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def start_bundle(self):
        self._chunk: list[tuple[dict[str, Any], bytes]] = []
        self._pending: collections.deque[Future | _Done] = collections.deque()

    def process(self, element):
        shard, rows = element
        for item in image_source.read_shard(self.images_dir, shard, rows):
            if item.data is None:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(item.row, rules.REASON_UNREADABLE, item.error))
                continue
            self._chunk.append((item.row, item.data))
            if len(self._chunk) == self.batch_size:
                self._submit()
                yield from self._ready(ahead=self.threads + 1)

    def finish_bundle(self):
        if self._chunk:
            self._submit()
        for out in self._ready(ahead=0):
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(out.tag, GlobalWindows.windowed_value(out.value))
            else:
                yield GlobalWindows.windowed_value(out)

    def _submit(self) -> None:
        chunk, self._chunk = self._chunk, []
        args = (chunk, self.steps, self.input_size, self._tokenizer, self._pin)
        self._pending.append(self._pool.submit(decode_batch, *args) if self._pool else _Done(decode_batch(*args)))

    def _ready(self, ahead: int) -> Iterator[Any]:
        """The oldest batches' outputs, until at most `ahead` are still being decoded."""
        while len(self._pending) > ahead:
            batch, failed = self._pending.popleft().result()
            for row, detail in failed:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(row, rules.REASON_UNREADABLE, detail))
            if batch is not None:
                yield batch


def load_tokenizer(model_name: str) -> Any:
    """The model's own open_clip tokenizer (the repo's model configs registered first)."""
    from witcurate.trainer.model import tokenizer_for
    return tokenizer_for(model_name)
