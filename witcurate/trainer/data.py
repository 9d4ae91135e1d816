"""The WebDataset loader: shard patterns in, batches of (images, tokens) out.

Shards are `KEY.jpg` (or png/jpeg/webp) + `KEY.txt` tars, named by brace patterns
(`shards/{00000..00003}.tar`), globs, directories or `::`-joined lists; fsspec opens them, so
`gs://` works. An epoch is `steps` batches on every rank (the whole data once at the global
batch size, as open_clip_train counts it), so ranks never disagree on how many steps there are.

Order is a pure function of (seed, epoch, rank, worker): the shard order, the shuffle buffer and
the augmentation draws each get their own seeded generator, isolated from the model's RNG. A
resumed run rebuilds the epoch and skips the batches already trained on, which reproduces the
rest of the epoch exactly.

Splitting: with at least as many shards as ranks, rank r reads shards[r::world] (what
`wds.split_by_node` does, with the rank passed in rather than read from globals); with fewer,
every rank reads every shard and keeps samples i with i % world == r. Within a rank,
DataLoader workers split its shards with `wds.split_by_worker`.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import posixpath
import random
import re
import tarfile
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Iterable, Iterator

import braceexpand
import torch
import webdataset as wds
from webdataset.tariterators import group_by_keys, tar_file_expander

from witcurate.errors import InputError
from witcurate.pipeline import fs

log = logging.getLogger("witcurate.trainer")

IMAGE_EXTS = ("jpg", "png", "jpeg", "webp")
IMAGE_KEY = ";".join(IMAGE_EXTS)
TEXT_EXT = "txt"
_KEY_RE = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")   # webdataset's key/extension split


def expand_shards(spec: str | list[str]) -> list[str]:
    """Shard paths from brace patterns, globs, directories (their *.tar) or '::'-joined lists."""
    parts = spec if isinstance(spec, list) else [s for s in spec.split("::") if s]
    out: list[str] = []
    for part in parts:
        for path in braceexpand.braceexpand(part):
            if any(c in path for c in "*?["):
                matches = fs.glob(path)
                if not matches:
                    raise InputError(f"no shards match {path}", "check the --data pattern")
                out.extend(matches)
            elif fs.exists(path) and not path.endswith(".tar"):
                tars = fs.glob(fs.join(path, "*.tar"))
                if not tars:
                    raise InputError(f"no .tar shards in {path}: nothing to train on",
                                     "check that the shards stage kept samples (see its _SUCCESS.json and rejects/)")
                out.extend(tars)
            elif fs.exists(path):
                out.append(path)
            else:
                raise InputError(f"shard not found: {path}", "check the --data pattern")
    out = list(dict.fromkeys(out))
    if not out:
        raise InputError(f"no shards in {spec!r}", "pass --data 'DIR/{00000..00003}.tar' or a glob")
    return out


def _split_key(name: str) -> tuple[str | None, str | None]:
    m = _KEY_RE.match(name)
    return (m.group(1), m.group(2).lower()) if m else (None, None)


def shard_sample_count(url: str) -> int:
    """Samples in one tar that have both an image and a caption (headers only: data is seeked past)."""
    images: set[str] = set()
    texts: set[str] = set()
    try:
        with fs.open_file(url) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_key(member.name)
                if key is None or key.startswith("__") or posixpath.basename(key).startswith("."):
                    continue
                if ext in IMAGE_EXTS:
                    images.add(key)
                elif ext == TEXT_EXT:
                    texts.add(key)
    except tarfile.TarError as e:
        raise InputError(f"{url} is not a readable tar: {e}", "rewrite or drop this shard") from None
    return len(images & texts)


def count_samples(urls: list[str]) -> list[int]:
    return [shard_sample_count(u) for u in urls]


def _mix(*values: Any) -> int:
    """A 63-bit seed from a tuple, stable across processes and Python versions."""
    digest = hashlib.sha256(repr(values).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _worker_id() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info is not None else (0, 1)


class SeededTransform:
    """Applies `fn` with its own torch generator state, so augmentation draws depend only on the
    seed (and DataLoader worker) and never on, or disturb, the model's random state."""

    def __init__(self, fn: Callable, seed: int):
        self.fn = fn
        self.seed = seed
        self.state: torch.Tensor | None = None

    def __call__(self, x: Any) -> Any:
        if self.state is None:
            gen = torch.Generator().manual_seed(_mix(self.seed, _worker_id()[0]))
            self.state = gen.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            y = self.fn(x)
            self.state = torch.get_rng_state()
        return y


def skip_bad_sample(exn: Exception) -> bool:
    """Handler for undecodable samples: warn and go on (wds.warn_and_continue also sleeps 0.5 s
    per bad sample, which a raw, unfiltered shard full of them cannot afford)."""
    log.warning("skipping a bad sample: %r", exn)
    return True


def _open_shards(src: Iterable[dict], handler: Callable[[Exception], bool]) -> Iterator[dict]:
    """Open each shard through fsspec (local, gs://, ...); closed once its samples are read."""
    for item in src:
        try:
            stream = fs.open_file(item["url"])
        except Exception as e:  # a missing or unreadable shard
            if handler(e):
                continue
            raise
        try:
            yield {**item, "stream": stream}
        finally:
            stream.close()


def tar_samples(handler: Callable[[Exception], bool] = skip_bad_sample,
                select_files: Callable[[str], bool] | None = None) -> list[Callable]:
    """Pipeline stages from {"url": ...} items to webdataset samples ({"__key__", "jpg", ...}):
    wds.tarfile_to_samples, with fsspec opening the files instead of webdataset's gopen."""
    return [partial(_open_shards, handler=handler),
            partial(tar_file_expander, handler=handler, select_files=select_files),
            partial(group_by_keys, handler=handler)]


def _split_by_rank(src: Iterable, rank: int, world_size: int) -> Iterator:
    return itertools.islice(src, rank, None, world_size)


def _buffer_shuffle(src: Iterable, bufsize: int, seed: int) -> Iterator:
    """A shuffle buffer seeded per worker (wds' .shuffle() fixes one rng for all workers)."""
    rng = random.Random(_mix(seed, _worker_id()[0]))
    buf: list[Any] = []
    for sample in src:
        if len(buf) < bufsize:
            buf.append(sample)
            continue
        i = rng.randrange(bufsize)
        buf[i], sample = sample, buf[i]
        yield sample
    rng.shuffle(buf)
    yield from buf


def _wanted_file(name: str) -> bool:
    _, ext = _split_key(name)
    return ext in IMAGE_EXTS or ext == TEXT_EXT


@dataclass
class LoaderSpec:
    """What a rank needs to build any epoch's batches."""
    urls: list[str]
    batch_size: int                  # per rank
    preprocess: Callable             # PIL image -> tensor
    tokenize: Callable               # list[str] -> LongTensor (open_clip tokenizer)
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    workers: int = 0
    shuffle_buffer: int = 1000
    shuffle: bool = True

    @property
    def shard_split(self) -> bool:
        return len(self.urls) >= self.world_size

    def rank_urls(self) -> list[str]:
        return self.urls[self.rank::self.world_size] if self.shard_split else list(self.urls)

    def effective_workers(self) -> int:
        # A worker without a shard would have nothing to read.
        return max(0, min(self.workers, len(self.rank_urls())))

    def dataset(self, epoch: int, pass_index: int = 0) -> wds.DataPipeline:
        """One pass over this rank's share, built from webdataset's stages (explicitly, rather
        than through wds.WebDataset, whose seeding arguments differ between 0.2.x releases)."""
        seed = _mix(self.seed, epoch, pass_index)
        urls = self.rank_urls()
        if self.shuffle:
            random.Random(_mix(seed, "shards")).shuffle(urls)
        stages: list[Any] = [wds.SimpleShardList(urls), wds.split_by_worker,
                             *tar_samples(select_files=_wanted_file)]
        if not self.shard_split and self.world_size > 1:
            stages.append(partial(_split_by_rank, rank=self.rank, world_size=self.world_size))
        if self.shuffle and self.shuffle_buffer > 1:
            stages.append(partial(_buffer_shuffle, bufsize=self.shuffle_buffer,
                                  seed=_mix(seed, "buffer", self.rank)))
        image_fn = SeededTransform(self.preprocess, _mix(seed, "augment", self.rank))
        stages += [
            wds.decode("pil", handler=skip_bad_sample),
            wds.to_tuple(IMAGE_KEY, TEXT_EXT, handler=skip_bad_sample),
            wds.map_tuple(image_fn, _TokenizeOne(self.tokenize), handler=skip_bad_sample),
            wds.batched(self.batch_size, partial=False),
        ]
        return wds.DataPipeline(*stages)

    def _pass(self, epoch: int, pass_index: int) -> Iterable:
        ds = self.dataset(epoch, pass_index)
        workers = self.effective_workers()
        if workers == 0:
            return ds
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers,
                                           persistent_workers=False)


class _TokenizeOne:
    def __init__(self, tokenize: Callable):
        self.tokenize = tokenize

    def __call__(self, text: str) -> torch.Tensor:
        return self.tokenize([text])[0]


def epoch_batches(spec: LoaderSpec, epoch: int, steps: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Exactly `steps - skip` batches of epoch `epoch` for this rank.

    A rank whose share runs dry early (uneven shards, bad samples) reads its shards again in a
    fresh order, so every rank takes the same number of steps and DDP never waits forever.
    """
    def passes() -> Iterator:
        for pass_index in itertools.count():
            produced = 0
            for batch in spec._pass(epoch, pass_index):
                produced += 1
                yield batch
            if produced == 0:
                raise InputError(
                    f"rank {spec.rank} got no full batch of {spec.batch_size} from {len(spec.rank_urls())} shard(s)",
                    "check the shards hold decodable images with .txt captions, or lower --batch-size")
    stream = itertools.islice(passes(), steps)
    for _ in itertools.islice(stream, skip):
        pass
    yield from stream
