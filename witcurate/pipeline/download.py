"""The download stage: img2dataset fetches, resizes and encodes images shard by shard in Beam.

    balance rows --GroupByUidRank--> (shard index, rows) --> DownloadShard DoFn
        for each shard:  URL safety check (refusals are rejects, never fetched)
                         img2dataset.download(shard's URLs) -> NNNNN.tar + per-sample parquet
                         image checks + sha256 + perceptual hash of each stored image
                         join every input row with its result: kept, or a reject with a reason
    after the pipeline: the shards' tars move into the stage directory as images/NNNNN.tar

Shards are cut deterministically: input uids in sorted order, one shard every `urls_per_shard`
distinct uids, ranked inside Beam (`uid_order`) so no process ever holds every uid. A
shard's work lives in the stage's work directory (kept when a run is killed) under a name that
includes a fingerprint of its uids and the download config; it is finished once its DONE.json
is written, and a rerun reuses finished shards instead of fetching them again. Image bytes are
written by img2dataset straight into the shard's tar files and never travel through Beam.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.config import Config, DownloadSection
from witcurate.filters import images, urls
from witcurate.filters.base import Decision, Drop, Required
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, FilterRecords, WriteStageOutputs, make_pipeline,
                                        read_json_lines, read_stage, reject, rejected, run_pipeline)
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.uid_order import GroupByUidRank, bucket_width
from witcurate.pipeline.stages import BaseStage, Option

log = logging.getLogger("witcurate")

DONE = "DONE.json"
OOM_SHARD_COUNT = 5            # img2dataset's default: its shard files are named 00000.tar ...

# Reasons decided here (others come from witcurate.filters.images / urls).
NO_RESULT = "no_result"
MISSING_UID = "missing_uid"
DUPLICATE_UID = "duplicate_uid"
SHARD = "shard"                # side output: each shard this run finished, {"index", "fingerprint"}

_BALANCED_FIELDS = [f.name for f in schemas.BALANCED]
_IMAGE_FIELDS = ["shard", "key", "width", "height", "original_width", "original_height", "sha256", "phash"]


# ------------------------------------------------------------------ planning -------------------

def shard_fingerprint(config_hash: str, uids: Iterable[str]) -> str:
    """Names a shard's work: the same uids under the same download config, the same work."""
    h = hashlib.sha256(config_hash.encode())
    for uid in uids:
        h.update(b"\n" + uid.encode())
    return h.hexdigest()[:12]


def shard_dir(work_dir: str, index: int, fingerprint: str) -> str:
    return fs.join(work_dir, "shards", f"{index:05d}-{fingerprint}")


def final_tar_name(index: int, sub: int, processes: int) -> str:
    """Shard `index` is fetched as up to `processes` img2dataset shards (one per worker
    process, so a shard's URLs are fetched in parallel); each becomes images/NNNNN.tar."""
    return f"images/{index * processes + sub:05d}.tar"


# ------------------------------------------------------------------ Beam DoFns -----------------

def _balanced(row: dict[str, Any]) -> dict[str, Any]:
    return {name: row.get(name) for name in _BALANCED_FIELDS}


class DownloadShard(beam.DoFn):
    """Fetch one shard (or reuse its finished work) and emit a kept row or a reject per input."""

    def __init__(self, cfg: DownloadSection, config_hash: str, work_dir: str, run_token: str):
        self.cfg = cfg
        self.config_hash = config_hash
        self.work_dir = work_dir
        self.run_token = run_token          # tells the driver which shards this run fetched

    def setup(self):
        from witcurate.pipeline import download_worker
        self.policy = urls.AddressPolicy.from_config(self.cfg.allow_private)
        self.settings = download_worker.WorkerSettings(self.policy, self.cfg.max_pixels,
                                                       self.cfg.encode_format)

    def teardown(self):
        from witcurate.pipeline import download_worker
        download_worker.close_pools()

    def process(self, element):
        (index, _), rows = element
        rows = sorted(rows, key=lambda r: (r["uid"], str(r.get("url") or ""), str(r.get("caption") or "")))
        unique: list[dict[str, Any]] = []
        for row in rows:
            if unique and unique[-1]["uid"] == row["uid"]:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(
                    row, DUPLICATE_UID, f"uid {row['uid']} appears more than once in the input"))
            else:
                unique.append(row)
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

    # -------------------------------------------------------------- one shard ----------------

    def fetch(self, index: int, directory: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        from witcurate.pipeline import download_worker
        cfg = self.cfg
        start = time.time()
        fs.rm(directory)                         # an unfinished earlier attempt
        attempt = f"attempt-{uuid.uuid4().hex[:8]}"
        adir = fs.join(directory, attempt)
        out_dir = fs.join(adir, "i2d")
        fs.makedirs(out_dir)

        rejects: list[dict[str, Any]] = []
        safe: list[dict[str, Any]] = []
        for row, decision in zip(rows, self.check_urls([r.get("url") for r in rows])):
            if decision is True:
                safe.append(row)
            else:
                rejects.append(rejected(row, decision))

        processes = cfg.processes_count
        results: dict[str, dict[str, Any]] = {}
        checks: dict[tuple[int, str], dict[str, Any]] = {}
        if safe:
            url_list = fs.join(adir, "urls.parquet")
            table = pa.table({"uid": [r["uid"] for r in safe],
                              "url": [str(r.get("url") or "") for r in safe],
                              "caption": [r.get("caption") for r in safe]},
                             schema=pa.schema([("uid", pa.string()), ("url", pa.string()),
                                               ("caption", pa.string())]))
            with fs.open_file(url_list, "wb") as f:
                pq.write_table(table, f)
            download_worker.guarded_download(
                self.settings,
                url_list=url_list, input_format="parquet", url_col="url", caption_col="caption",
                save_additional_columns=["uid"], output_format="webdataset", output_folder=out_dir,
                image_size=cfg.image_size, resize_mode=cfg.resize_mode,
                resize_only_if_bigger=cfg.resize_only_if_bigger, encode_format=cfg.encode_format,
                encode_quality=cfg.encode_quality, timeout=cfg.timeout, retries=cfg.retries,
                processes_count=processes, thread_count=cfg.thread_count,
                number_sample_per_shard=max(1, math.ceil(len(safe) / processes)),
                oom_shard_count=OOM_SHARD_COUNT, compute_hash="sha256",
                user_agent_token=cfg.user_agent_token or None,
                disallowed_header_directives=list(cfg.disallowed_header_directives),
                min_image_size=cfg.min_side, max_image_area=cfg.max_pixels,
                max_aspect_ratio=cfg.max_aspect_ratio, extract_exif=False,
                incremental_mode="incremental", enable_wandb=False)
            results, checks = read_results(out_dir)

        kept: list[dict[str, Any]] = []
        for row in safe:
            outcome = decide(row, results.get(row["uid"]), checks, cfg)
            if isinstance(outcome, Drop):
                rejects.append(rejected(row, outcome))
            else:
                sub, key = outcome["_sub"], outcome["key"]
                kept.append({**_balanced(row), **{k: outcome[k] for k in _IMAGE_FIELDS if k != "shard"},
                             "shard": final_tar_name(index, sub, processes), "key": key})

        write_parquet(fs.join(adir, "kept.parquet"), kept, schemas.DOWNLOADED)
        write_parquet(fs.join(adir, "rejects.parquet"), rejects, schemas.REJECTS)
        tars = {}
        for path in fs.glob(fs.join(out_dir, "*.tar")):
            stem = path.rsplit("/", 1)[-1][:-len(".tar")]
            if stem.isdigit():
                tars[f"i2d/{stem}.tar"] = final_tar_name(index, int(stem), processes)
        seconds = time.time() - start
        done = {"attempt": attempt, "run": self.run_token, "index": index, "tars": tars, "urls": len(rows),
                "fetched": len(safe), "kept": len(kept), "rejected": len(rejects),
                "seconds": round(seconds, 3),
                "images_per_second": round(len(safe) / seconds, 2) if seconds > 0 else None}
        fs.write_json(fs.join(directory, DONE), done)
        log.info("download shard %05d: %d urls, %d kept, %d rejected in %.1fs",
                 index, len(rows), len(kept), len(rejects), seconds)
        return done

    def check_urls(self, url_list: list[Any]) -> list[Decision]:
        """The URL-safety verdict of each URL, resolving each distinct host once, in parallel."""
        hosts: set[tuple[str, int]] = set()
        for url in url_list:
            try:
                scheme, host, port = urls.split_url(str(url or ""))
            except (ValueError, TypeError):
                continue
            if scheme in urls.ALLOWED_SCHEMES and urls.parse_ip(host) is None:
                hosts.add((host, port))
        resolved: dict[tuple[str, int], list[str] | OSError] = {}

        def lookup(hp):
            try:
                return hp, urls.resolve(*hp)
            except (OSError, UnicodeError) as e:
                return hp, OSError(str(e))

        if hosts:
            with ThreadPoolExecutor(min(32, len(hosts))) as pool:
                resolved.update(pool.map(lookup, sorted(hosts)))

        def resolver(host: str, port: int) -> list[str]:
            value = resolved.get((host, port))
            if value is None:
                return urls.resolve(host, port)
            if isinstance(value, OSError):
                raise value
            return value

        return [urls.check_url(str(url or ""), self.policy, resolver) for url in url_list]


def read_done(directory: str) -> dict[str, Any] | None:
    """A shard's DONE.json if the shard is finished and its image tars are all still there (a run
    killed while moving tars into the stage directory leaves a shard that must be fetched again)."""
    path = fs.join(directory, DONE)
    if not fs.exists(path):
        return None
    try:
        done = fs.read_json(path)
    except (OSError, ValueError):
        return None
    attempt = fs.join(directory, done.get("attempt", ""))
    needed = ["kept.parquet", "rejects.parquet", *done.get("tars", {})]
    if not all(fs.exists(fs.join(attempt, name)) for name in needed):
        return None
    return done


def read_results(out_dir: str) -> tuple[dict[str, dict[str, Any]], dict[tuple[int, str], dict[str, Any]]]:
    """img2dataset's per-sample results by uid (with the sub-shard they are in), and our checks
    of the stored images by (sub-shard, key)."""
    results: dict[str, dict[str, Any]] = {}
    checks: dict[tuple[int, str], dict[str, Any]] = {}
    for path in fs.glob(fs.join(out_dir, "*.parquet")):
        name = path.rsplit("/", 1)[-1]
        stem = name.split(".", 1)[0]
        if not stem.isdigit():
            continue
        sub = int(stem)
        with fs.open_file(path) as f:
            table = pq.read_table(f)
        if name.endswith(".checks.parquet"):
            for rec in table.to_pylist():
                checks[(sub, rec["key"])] = rec
            continue
        wanted = ["uid", "key", "status", "error_message", "width", "height",
                  "original_width", "original_height"]
        for rec in table.select([c for c in wanted if c in table.column_names]).to_pylist():
            rec["_sub"] = sub
            results[str(rec.get("uid"))] = rec
    return results, checks


def decide(row: dict[str, Any], result: dict[str, Any] | None,
           checks: dict[tuple[int, str], dict[str, Any]], cfg: DownloadSection):
    """The image facts of a kept row, or the Drop that makes it a reject."""
    if result is None:
        return Drop(NO_RESULT, "img2dataset returned no result for this URL (its shard failed)")
    if result.get("status") != "success":
        message = result.get("error_message") or f"status {result.get('status')}"
        return Drop(images.classify_error(result.get("status"), message), message)
    ow, oh = result.get("original_width"), result.get("original_height")
    size = images.size_ok(ow, oh, cfg.min_side, cfg.max_aspect_ratio, cfg.max_pixels)
    if size is not True:
        return size.explained(f"original size {ow}x{oh}")
    check = checks.get((result["_sub"], result["key"]))
    if check is None:
        return Drop(NO_RESULT, f"image {result['key']} is missing from its tar")
    if check["reason"]:
        return Drop(check["reason"], f"the stored image {result['key']} failed: {check['reason']}")
    return {"_sub": result["_sub"], "key": result["key"],
            "width": result.get("width") or check["width"],
            "height": result.get("height") or check["height"],
            "original_width": ow, "original_height": oh,
            "sha256": check["sha256"], "phash": check["phash"]}


def write_parquet(path: str, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    table = pa.Table.from_pylist(rows, schema)
    with fs.open_file(path, "wb") as f:
        pq.write_table(table, f)


# ------------------------------------------------------------------ the stage ------------------

class DownloadStage(BaseStage):
    name = "download"
    sections = ("download",)
    inputs = ("in",)
    # Only what fetching needs; the rest of a balance row rides along into the output.
    input_schema = pa.schema([schemas.BALANCED.field("uid"), schemas.BALANCED.field("url")])
    options = (
        Option("--image-size", "download.image_size", "resize images to this size (pixels)", int),
        Option("--resize-mode", "download.resize_mode",
               "img2dataset resize mode: no, keep_ratio, center_crop, border, keep_ratio_largest", str),
        Option("--encode-format", "download.encode_format", "jpg, png or webp", str),
        Option("--encode-quality", "download.encode_quality", "encoder quality", int),
        Option("--timeout", "download.timeout", "seconds per request", int),
        Option("--retries", "download.retries", "retries per URL", int),
        Option("--processes", "download.processes_count", "download processes per worker", int),
        Option("--threads", "download.thread_count", "download threads per process", int),
        Option("--urls-per-shard", "download.urls_per_shard", "URLs per download shard", int),
        Option("--min-side", "download.min_side", "minimum side of the original image (pixels)", int),
        Option("--user-agent-token", "download.user_agent_token",
               "token in the User-Agent and for X-Robots-Tag directives", str),
        Option("--allow-private", "download.allow_private",
               "allow this loopback/private host:port, host or CIDR network", str),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "balance")}

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.download
        in_dir = ctx.input("in")
        config_hash = ctx.config.section_hash("download")
        n_rows = ctx.rows()
        on_disk = len(fs.glob(fs.join(ctx.work_dir, "shards", "*", DONE)))
        ctx.progress(f"[download] {n_rows} urls, about {math.ceil(n_rows / cfg.urls_per_shard)} shards"
                     + (f"; {on_disk} finished shards of an earlier attempt to reuse" if on_disk else ""))

        run_token = uuid.uuid4().hex
        info_prefix = fs.join(ctx.tmp_dir, "_shards", "info")
        start = time.time()
        p = make_pipeline(ctx.beam_args)
        # Rows without a uid cannot be ranked into a shard: they are rejects straight away.
        rows = (read_stage(p, in_dir, "ReadIn")
                | "SplitMissingUid" >> FilterRecords(Required("uid", MISSING_UID, "the row has no uid",
                                                              allow_empty=False)))
        outs = (rows[KEPT]
                | "CutShards" >> GroupByUidRank(cfg.urls_per_shard, bucket_width(n_rows))
                | "DownloadShard" >> beam.ParDo(DownloadShard(cfg, config_hash, ctx.work_dir, run_token))
                .with_outputs(KEPT, REJECTED, SHARD))
        outs[SHARD] | "WriteShardList" >> beam.io.WriteToText(info_prefix, file_name_suffix=".jsonl")
        ({KEPT: outs[KEPT], REJECTED: (rows[REJECTED], outs[REJECTED]) | "AllRejects" >> beam.Flatten()}
         | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.DOWNLOADED))
        run_pipeline(p)
        wall = time.time() - start

        shard_stats = []
        fs.makedirs(fs.join(ctx.tmp_dir, "images"))
        for shard in sorted(read_json_lines(info_prefix), key=lambda i: i["index"]):
            directory = shard_dir(ctx.work_dir, shard["index"], shard["fingerprint"])
            done = read_done(directory)
            if done is None:
                raise RuntimeError(f"download shard {shard['index']} finished but its work in "
                                   f"{directory} is gone; run the stage again")
            resumed = done.get("run") != run_token
            for src, dst in sorted(done["tars"].items()):
                fs.move(fs.join(directory, done["attempt"], src), fs.join(ctx.tmp_dir, dst))
            shard_stats.append({k: done.get(k) for k in (
                "index", "urls", "fetched", "kept", "rejected", "seconds", "images_per_second")}
                | {"tars": sorted(done["tars"].values()), "resumed": resumed})
        fs.rm(fs.join(ctx.tmp_dir, "_shards"))

        fresh = [s for s in shard_stats if not s["resumed"]]
        fetched = sum(s["fetched"] for s in fresh)
        fetch_seconds = sum(s["seconds"] for s in fresh)
        return StageResult(units="images", extra={
            "throughput images/s": round(fetched / fetch_seconds, 2) if fetch_seconds > 0 else None,
            "download": {"shards": len(shard_stats), "fetched_this_run": fetched,
                         "reused_shards": len(shard_stats) - len(fresh),
                         "pipeline_seconds": round(wall, 3), "per_shard": shard_stats},
        })
