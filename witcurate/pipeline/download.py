"""The download stage: img2dataset fetches, resizes and encodes images shard by shard in Beam.

    balance rows --ObeyRobots (robots.py)--> robots rejects, ((shard, n_shards), row)
                 --GroupByKey--> (shard index, rows) --> DownloadShard DoFn (download_shard.py)
    kept rows + rejects --CountHosts (download_hosts.py)--> the top hosts and their outcomes
    after the pipeline: the shards' tars move into the stage directory as images/NNNNN.tar

Each origin's robots.txt is fetched once, before any image (robots.py), and its verdicts land in
download/robots/. Shards are cut by host (hosts.py): a host's URLs go to one shard, or to at
most download.max_host_shards for a big host, so the per-host limits each shard's workers keep
(polite_fetch.py) bound what reaches a host from the whole run; the cut is a hash of host and
uid, the same in every run. A shard's work lives in the stage's work directory (kept when a run is killed) under a name that
includes a fingerprint of its uids and the download config (download_results.py); it is finished
once its DONE.json is written, and a rerun reuses finished shards instead of fetching them
again. Image bytes are written by img2dataset straight into the shard's tar files and never
travel through Beam.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import apache_beam as beam
import pyarrow as pa

from witcurate import schemas
from witcurate.config import Config
from witcurate.filters.base import Required
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, FilterRecords, WriteStageOutputs, make_pipeline,
                                        read_json_lines, read_stage, run_pipeline, runs_in_this_process)
from witcurate.pipeline.download_results import DONE, MISSING_UID, read_done, shard_dir
from witcurate.pipeline.download_hosts import CountHosts, read_host_counts
from witcurate.pipeline.download_shard import SHARD, DownloadShard, WarmWorkers, worker_settings
from witcurate.pipeline.download_worker import warm_pool
from witcurate.pipeline.hosts import shard_count
from witcurate.pipeline.robots import ROBOTS_SCHEMA, ObeyRobots, table_row
from witcurate.pipeline.table_sink import json_lines_table, parquet_table
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option

ROBOTS_DIR = "robots"          # the robots table: download/robots/part-*.parquet
ROBOTS, HOSTS = "robots", "hosts"       # the pipeline's other tables (SHARD: the finished shards)


class DownloadStage(BaseStage):
    name = "download"
    sections = ("download",)
    inputs = ("in",)
    # Only what fetching needs; the rest of a balance row rides along into the output.
    input_schema = pa.schema([schemas.BALANCED.field("uid"), schemas.BALANCED.field("url")])
    # Later stages read an image by the tar and key its kept row names, and the row carries the
    # sha256 of those bytes: the rows' digest covers the tars without reading them again.
    content_skips = ("images/*.tar",)
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
               "product token matched by robots.txt groups and X-Robots-Tag directives", str),
        Option("--user-agent", "download.user_agent", "the User-Agent sent with every request", str),
        Option("--per-host-connections", "download.per_host_connections",
               "requests open to one host at once (per download shard)", int),
        Option("--per-host-delay", "download.per_host_delay",
               "seconds between the starts of two requests to one host", float),
        Option("--max-retry-after", "download.max_retry_after",
               "the longest Retry-After (seconds) waited out before a URL is rate_limited", float),
        Option("--allow-private", "download.allow_private",
               "allow this loopback/private host:port, host or CIDR network", str),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "balance")}

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.download
        n_rows = ctx.rows()
        on_disk = len(fs.glob(fs.join(ctx.work_dir, "shards", "*", DONE)))
        planned = shard_count(n_rows, cfg.urls_per_shard)
        ctx.progress(f"[download] {n_rows} urls, up to {planned} shards by host"
                     + (f"; {on_disk} finished shards of an earlier attempt to reuse" if on_disk else ""))
        to_fetch = on_disk < planned                    # else no download worker is needed
        if to_fetch and runs_in_this_process(ctx.beam_args):
            # WarmWorkers would start them once the runner is up; here they import img2dataset
            # while the graph is built and robots.txt fetched (the first image ~1 s sooner).
            warm_pool(cfg.processes_count, worker_settings(cfg))
        run_token = uuid.uuid4().hex
        info_prefix = fs.join(ctx.tmp_dir, "_shards", "info")
        start = time.time()
        p = make_pipeline(ctx.beam_args)
        download_pipeline(p, ctx, n_rows, run_token, info_prefix, warm=to_fetch)
        run_pipeline(p)
        wall = time.time() - start
        shard_stats = land_shards(ctx, read_json_lines(info_prefix), run_token)
        fs.rm(fs.join(ctx.tmp_dir, "_shards"))
        hosts = read_host_counts(hosts_prefix(ctx.tmp_dir))
        fs.rm(fs.join(ctx.tmp_dir, "_hosts"))
        fresh = [s for s in shard_stats if not s["resumed"]]
        fetched = sum(s["fetched"] for s in fresh)
        fetch_seconds = sum(s["seconds"] for s in fresh)
        return StageResult(units="images", extra={
            "throughput images/s": round(fetched / fetch_seconds, 2) if fetch_seconds > 0 else None,
            "download": {"shards": len(shard_stats), "fetched_this_run": fetched,
                         "reused_shards": len(shard_stats) - len(fresh),
                         "pipeline_seconds": round(wall, 3), "per_shard": shard_stats},
            "hosts": hosts,
        })


def download_pipeline(p: beam.Pipeline, ctx: StageContext, n_rows: int, run_token: str,
                      info_prefix: str, warm: bool = True) -> None:
    """Read the balanced rows, obey robots.txt, cut the rest into shards by host, fetch each,
    write kept rows and rejects, the robots table and the per-host counts; each finished shard
    is listed under `info_prefix`. `warm`: start the download workers while the input is read
    (not when every shard finished in an earlier attempt)."""
    cfg = ctx.config.download
    config_hash = ctx.config.section_hash("download")
    # Rows without a uid cannot be ranked into a shard: they are rejects straight away.
    rows = (read_stage(p, ctx.input("in"), "ReadIn")
            | "SplitMissingUid" >> FilterRecords(Required("uid", MISSING_UID, "the row has no uid",
                                                          allow_empty=False)))
    kept = rows[KEPT]
    if warm:            # False: every shard finished in an earlier attempt, nothing to fetch
        kept = kept | "WarmWorkers" >> beam.ParDo(WarmWorkers(cfg))
    judged = kept | "Robots" >> ObeyRobots(cfg, ctx.work_dir, n_rows)
    outs = (judged[KEPT]
            | "GroupByShard" >> beam.GroupByKey()
            | "DownloadShard" >> beam.ParDo(DownloadShard(cfg, config_hash, ctx.work_dir, run_token,
                                                          runs_in_this_process(ctx.beam_args)))
            .with_outputs(KEPT, REJECTED, SHARD))
    rejects = (rows[REJECTED], judged[REJECTED], outs[REJECTED]) | "AllRejects" >> beam.Flatten()
    hosts = ({"kept": outs[KEPT], "rejects": rejects, "robots": judged["robots"]}
             | "HostCounts" >> CountHosts())
    tables = {SHARD: json_lines_table(info_prefix), HOSTS: json_lines_table(hosts_prefix(ctx.tmp_dir))}
    written = {KEPT: outs[KEPT], REJECTED: rejects, SHARD: outs[SHARD], HOSTS: hosts}
    if cfg.obey_robots:
        tables[ROBOTS] = parquet_table(fs.join(ctx.tmp_dir, ROBOTS_DIR, "part"), ROBOTS_SCHEMA)
        written[ROBOTS] = judged["robots"] | "RobotsRows" >> beam.Map(lambda kv: table_row(kv[1]))
    written | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.DOWNLOADED, extra=tables)


def hosts_prefix(tmp_dir: str) -> str:
    return fs.join(tmp_dir, "_hosts", "hosts")


def land_shards(ctx: StageContext, shards: list[dict[str, Any]], run_token: str) -> list[dict[str, Any]]:
    """Move each finished shard's tars into the stage output (images/NNNNN.tar); returns the
    shards' statistics, each marked `resumed` when an earlier attempt fetched it."""
    stats = []
    fs.makedirs(fs.join(ctx.tmp_dir, "images"))
    for shard in sorted(shards, key=lambda i: i["index"]):
        directory = shard_dir(ctx.work_dir, shard["index"], shard["fingerprint"])
        done = read_done(directory)
        if done is None:
            raise RuntimeError(f"download shard {shard['index']} finished but its work in "
                               f"{directory} is gone; run the stage again")
        for src, dst in sorted(done["tars"].items()):
            fs.move(fs.join(directory, done["attempt"], src), fs.join(ctx.tmp_dir, dst))
        stats.append({k: done.get(k) for k in (
            "index", "urls", "fetched", "kept", "rejected", "seconds", "images_per_second")}
            | {"tars": sorted(done["tars"].values()), "resumed": done.get("run") != run_token})
    return stats
