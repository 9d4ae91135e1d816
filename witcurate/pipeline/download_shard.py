"""One download shard in Beam: its URLs checked, fetched by img2dataset, and every row judged.

    (shard index, rows) --> DownloadShard
        duplicate uids        -> rejects
        URL safety check      -> refusals are rejects, never fetched
        img2dataset.download  -> NNNNN.tar + per-sample parquet (in the shard's work dir), the
                                 URLs interleaved by host, fetched politely (polite_fetch.py)
                                 through a per-host gate shared by the shard's worker processes
        image checks + sha256 + perceptual hash of each image as it is stored (in the download
                                 workers, shard_checks.py)
        every fetched row joined with its result: kept, or a reject with a reason

A shard whose DONE.json is already there (a killed run's finished shard) is not fetched again:
its kept and rejected rows are read back from its work directory.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
import uuid
from typing import Any, Iterator

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.config import DownloadSection
from witcurate.filters import urls
from witcurate.filters.base import Drop
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import KEPT, REJECTED, reject, rejected
from witcurate.pipeline.download_results import (DONE, DUPLICATE_UID, decide, final_tar_name,
                                                 read_done, read_results, shard_dir,
                                                 shard_fingerprint, write_parquet)
from witcurate.pipeline.host_gate import make_gate_dir
from witcurate.pipeline.hosts import interleave_by_host

log = logging.getLogger("witcurate")

OOM_SHARD_COUNT = 5            # img2dataset's default: its shard files are named 00000.tar ...
SHARD = "shard"                # side output: each shard this run finished, {"index", "fingerprint"}

_BALANCED_FIELDS = [f.name for f in schemas.BALANCED]
_IMAGE_FIELDS = ["key", "width", "height", "original_width", "original_height", "sha256", "phash"]
_URL_LIST = pa.schema([("uid", pa.string()), ("url", pa.string()), ("caption", pa.string())])

Row = dict[str, Any]


def split_duplicate_uids(rows: list[Row]) -> tuple[list[Row], list[Row]]:
    """(one row per uid, in uid order; a reject for each further row with a uid already seen)."""
    rows = sorted(rows, key=lambda r: (r["uid"], str(r.get("url") or ""), str(r.get("caption") or "")))
    unique: list[Row] = []
    duplicates: list[Row] = []
    for row in rows:
        if unique and unique[-1]["uid"] == row["uid"]:
            duplicates.append(reject(row, DUPLICATE_UID,
                                     f"uid {row['uid']} appears more than once in the input"))
        else:
            unique.append(row)
    return unique, duplicates


def worker_settings(cfg: DownloadSection):
    """What the download worker processes are started with (their pool is kept per settings)."""
    from witcurate.pipeline import download_worker
    politeness = download_worker.Politeness(cfg.user_agent, cfg.per_host_connections, cfg.per_host_delay,
                                            cfg.max_retry_after, cfg.rate_limit_retries)
    return download_worker.WorkerSettings(urls.AddressPolicy.from_config(cfg.allow_private), cfg.max_pixels,
                                          cfg.encode_format, politeness)


class WarmWorkers(beam.DoFn):
    """Passes rows through; its set-up starts this process's download workers in the background.

    A spawned worker spends seconds importing img2dataset and OpenCV before its first image.
    Started here, on the step that reads the stage's input, that happens while robots.txt is
    fetched and the shards are grouped, instead of after; DownloadShard then finds the pool
    running (the same process on the local runner and on Dataflow's workers)."""

    def __init__(self, cfg: DownloadSection):
        self.cfg = cfg

    def setup(self):
        from witcurate.pipeline import download_worker
        download_worker.warm_pool(self.cfg.processes_count, worker_settings(self.cfg))

    def process(self, row):
        yield row


class DownloadShard(beam.DoFn):
    """Fetch one shard (or reuse its finished work) and emit a kept row or a reject per input."""

    def __init__(self, cfg: DownloadSection, config_hash: str, work_dir: str, run_token: str,
                 in_driver: bool = True):
        self.cfg = cfg
        self.config_hash = config_hash
        self.work_dir = work_dir
        self.run_token = run_token          # tells the driver which shards this run fetched
        self.in_driver = in_driver          # False: Beam runs it in worker processes of its own

    def setup(self):
        if not self.in_driver:
            # img2dataset as the download workers have it, without torch (download_preload.py):
            # a Beam worker process only drives the download, and torch was half of its
            # img2dataset import (4.1 -> 1.3 CPU-s a worker here, 708 -> 220 MB peak). Not in the
            # driver, where a trainer may later want webdataset's torch classes.
            from witcurate.pipeline import download_preload  # noqa: F401
        self.settings = worker_settings(self.cfg)
        self.policy = self.settings.policy

    def teardown(self):
        from witcurate.pipeline import download_worker
        download_worker.close_pools()

    def process(self, element) -> Iterator:
        (index, _), rows = element
        unique, duplicates = split_duplicate_uids(list(rows))
        for row in duplicates:
            yield beam.pvalue.TaggedOutput(REJECTED, row)
        fingerprint = shard_fingerprint(self.config_hash, [r["uid"] for r in unique])
        directory = shard_dir(self.work_dir, index, fingerprint)
        for other in fs.glob(fs.join(self.work_dir, "shards", f"{index:05d}-*")):
            if other.rstrip("/") != directory.rstrip("/"):
                fs.rm(other)                     # this shard's work for other uids or config
        done = read_done(directory)
        if done is None:
            done = self.fetch(index, directory, unique)
        yield beam.pvalue.TaggedOutput(SHARD, json.dumps({"index": index, "fingerprint": fingerprint}))
        attempt = fs.join(directory, done["attempt"])
        for name, tag in (("kept.parquet", KEPT), ("rejects.parquet", REJECTED)):
            with fs.open_file(fs.join(attempt, name)) as f:
                table = pq.read_table(f)
            for record in table.to_pylist():
                yield beam.pvalue.TaggedOutput(tag, record)

    def fetch(self, index: int, directory: str, rows: list[Row]) -> dict[str, Any]:
        """Fetch a shard into a fresh attempt directory; returns its DONE record, once written."""
        start = time.time()
        fs.rm(directory)                         # an unfinished earlier attempt
        attempt = f"attempt-{uuid.uuid4().hex[:8]}"
        adir = fs.join(directory, attempt)
        out_dir = fs.join(adir, "i2d")
        fs.makedirs(out_dir)
        safe, rejects = [], []
        for row, decision in zip(rows, urls.check_urls([r.get("url") for r in rows], self.policy)):
            if decision is True:
                safe.append(row)
            else:
                rejects.append(rejected(row, decision))
        kept = self.fetch_images(index, adir, safe, rejects)
        write_parquet(fs.join(adir, "kept.parquet"), kept, schemas.DOWNLOADED)
        write_parquet(fs.join(adir, "rejects.parquet"), rejects, schemas.REJECTS)
        seconds = time.time() - start
        done = {"attempt": attempt, "run": self.run_token, "index": index,
                "tars": self.tar_names(index, out_dir), "urls": len(rows), "fetched": len(safe),
                "kept": len(kept), "rejected": len(rejects), "seconds": round(seconds, 3),
                "images_per_second": round(len(safe) / seconds, 2) if seconds > 0 else None}
        fs.write_json(fs.join(directory, DONE), done)
        log.info("download shard %05d: %d urls, %d kept, %d rejected in %.1fs",
                 index, len(rows), len(kept), len(rejects), seconds)
        return done

    def fetch_images(self, index: int, adir: str, safe: list[Row], rejects: list[Row]) -> list[Row]:
        """img2dataset on the safe rows; returns the kept rows, adding each failure to `rejects`."""
        if not safe:
            return []
        out_dir = fs.join(adir, "i2d")
        url_list = fs.join(adir, "urls.parquet")
        write_parquet(url_list, [{"uid": r["uid"], "url": str(r.get("url") or ""),
                                  "caption": r.get("caption")} for r in interleave_by_host(safe)],
                      _URL_LIST)
        # The shard's per-host gate lives on this machine's disk, beside its worker processes.
        gate_dir = make_gate_dir(index)
        try:
            self.run_img2dataset(url_list, out_dir, len(safe), gate_dir)
        finally:
            shutil.rmtree(gate_dir, ignore_errors=True)
        results, checks = read_results(out_dir)
        kept = []
        for row in safe:
            outcome = decide(row, results.get(row["uid"]), checks, self.cfg)
            if isinstance(outcome, Drop):
                rejects.append(rejected(row, outcome))
                continue
            tar = final_tar_name(index, outcome["_sub"], self.cfg.processes_count)
            kept.append({**{name: row.get(name) for name in _BALANCED_FIELDS},
                         **{k: outcome[k] for k in _IMAGE_FIELDS}, "shard": tar})
        return kept

    def run_img2dataset(self, url_list: str, out_dir: str, n_urls: int, gate_dir: str) -> None:
        from witcurate.pipeline import download_worker
        cfg = self.cfg
        download_worker.guarded_download(
            self.settings, gate_dir,
            url_list=url_list, input_format="parquet", url_col="url", caption_col="caption",
            save_additional_columns=["uid"], output_format="webdataset", output_folder=out_dir,
            image_size=cfg.image_size, resize_mode=cfg.resize_mode,
            resize_only_if_bigger=cfg.resize_only_if_bigger, encode_format=cfg.encode_format,
            encode_quality=cfg.encode_quality, timeout=cfg.timeout, retries=cfg.retries,
            processes_count=cfg.processes_count, thread_count=cfg.thread_count,
            number_sample_per_shard=max(1, math.ceil(n_urls / cfg.processes_count)),
            oom_shard_count=OOM_SHARD_COUNT, compute_hash="sha256",
            user_agent_token=cfg.user_agent_token or None,
            disallowed_header_directives=list(cfg.disallowed_header_directives),
            min_image_size=cfg.min_side, max_image_area=cfg.max_pixels,
            max_aspect_ratio=cfg.max_aspect_ratio, extract_exif=False,
            incremental_mode="incremental", enable_wandb=False)

    def tar_names(self, index: int, out_dir: str) -> dict[str, str]:
        """img2dataset's tars in the attempt (i2d/NNNNN.tar) -> their names in the stage output."""
        tars = {}
        for path in fs.glob(fs.join(out_dir, "*.tar")):
            stem = path.rsplit("/", 1)[-1][:-len(".tar")]
            if stem.isdigit():
                tars[f"i2d/{stem}.tar"] = final_tar_name(index, int(stem), self.cfg.processes_count)
        return tars
