"""Generated inputs for the metadata-only scaling benchmark (bench_scaling, WITCURATE_BENCH_METADATA=1).

`write_candidates` writes a candidate pool of any size without drawing an image: captions in the
demo world's vocabulary (so the demo's query list matches them), with the junk ingest and match
reject (duplicate and malformed URLs, junk alt text, captions that match no query).

`write_scored` stands in for download, dedupe and score, which need images and a model: it turns
the balance stage's rows into the score stage's rows (shard, key, sizes, hashes, a CLIP score)
and writes placeholder image tars (a few bytes per sample, their sha256 in the row), so cap and
the real shards stage run on 1M rows at the cost of their metadata work, not of image bytes.
Both stream: neither holds the pool in memory.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.demo.draw import random_spec
from witcurate.demo.vocab import junk_caption, random_caption

ROWS_PER_FILE = 100_000
SAMPLES_PER_TAR = 10_000


def _candidate(i: int, rng: random.Random, urls: list[str]) -> dict[str, str]:
    r = rng.random()
    if r < 0.03 and urls:
        url = rng.choice(urls)                                   # duplicate_url
    elif r < 0.04:
        url = f"not a url {i}"                                   # bad URL
    else:
        url = f"http://img{i % 997}.example.com/p/{i:09x}.jpg"
    r = rng.random()
    if r < 0.05:
        caption = junk_caption(rng)
    elif r < 0.07:
        caption = f"nothing in this text is listed {i}"           # no_query_match
    else:
        caption = random_caption(random_spec(rng), rng)
    return {"url": url, "caption": caption}


def write_candidates(pool_dir: Path, n: int, seed: int = 0) -> list[Path]:
    """`n` candidate rows as candidates-NNNNN.parquet files of ROWS_PER_FILE rows each."""
    pool_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"bench-pool:{seed}")
    recent: list[str] = []                   # a window of earlier URLs to duplicate
    paths = []
    for start in range(0, n, ROWS_PER_FILE):
        rows = []
        for i in range(start, min(n, start + ROWS_PER_FILE)):
            row = _candidate(i, rng, recent)
            rows.append(row)
            if len(recent) < 1000:
                recent.append(row["url"])
            else:
                recent[i % 1000] = row["url"]
        path = pool_dir / f"candidates-{start // ROWS_PER_FILE:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(rows, pa.schema([("url", pa.string()), ("caption", pa.string())])),
                       path)
        paths.append(path)
    return paths


class _ImageTars:
    """Placeholder image tars, SAMPLES_PER_TAR samples each, the way download lays them out."""

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        images_dir.mkdir(parents=True, exist_ok=True)
        self.tar: tarfile.TarFile | None = None
        self.index = -1

    def add(self, i: int, uid: str) -> tuple[str, str, str]:
        """(shard, key, sha256) of sample `i`, whose bytes are written into its tar."""
        if i // SAMPLES_PER_TAR != self.index:
            self.close()
            self.index = i // SAMPLES_PER_TAR
            self.tar = tarfile.open(self.images_dir / f"{self.index:05d}.tar", "w")
        key, blob = f"{i:09d}", (uid * 2).encode()
        info = tarfile.TarInfo(f"{key}.jpg")
        info.size = len(blob)
        self.tar.addfile(info, io.BytesIO(blob))
        return f"images/{self.index:05d}.tar", key, hashlib.sha256(blob).hexdigest()

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def write_scored(balance_dir: Path, download_dir: Path, score_dir: Path) -> int:
    """The score stage's rows for every row balance kept, and download's image tars; returns the rows."""
    score_dir.mkdir(parents=True, exist_ok=True)
    tars = _ImageTars(download_dir / "images")
    i = 0
    for part, path in enumerate(sorted(balance_dir.glob("part-*.parquet"))):
        writer = pq.ParquetWriter(score_dir / f"part-{part:05d}.parquet", schemas.SCORED)
        for batch in pq.ParquetFile(path).iter_batches(batch_size=50_000):
            rows = batch.to_pylist()
            for row in rows:
                shard, key, sha = tars.add(i, row["uid"])
                h = int(row["uid"][:16], 16)
                row.update(shard=shard, key=key, width=64, height=48, original_width=640,
                           original_height=480, sha256=sha, phash=h, clip_score=(h % 10_000) / 10_000,
                           clip_model="bench")
                i += 1
            writer.write_table(pa.Table.from_pylist(rows, schemas.SCORED))
        writer.close()
    tars.close()
    return i
