"""Shards: the final dataset as WebDataset tars, a Parquet sidecar per tar, a manifest and a card.

Output (the stage directory):
    00000.tar ...        WebDataset shards: UID.jpg (the downloaded bytes, untouched), UID.txt
                         (the caption, UTF-8), UID.json (the sample's metadata)
    00000.parquet ...    one row per sample of the tar beside it, no image bytes (SIDECAR)
    sizes.json           {"00000.tar": n, ...}: lets open_clip_train find the sample count
    manifest.json        shards with sample counts and sha256, totals, the full config, code version
    README.md, card/     the dataset card (witcurate.pipeline.card)
    rejects/             rows that could not be shipped (image_missing, duplicate_uid, ...)

Samples are ordered by uid over the whole set and cut every `shards.samples_per_shard`, so a
shard's content depends only on the set of rows, never on how Beam partitioned the work; the tar
bytes are pinned too (witcurate.pipeline.tar_writer), so the same input gives identical shards.

The Beam pipeline moves metadata only. Image bytes are read straight from the download stage's
tars by the DoFn that writes a shard, seeking to offsets found when the source tars were indexed
(and their images' sha256 checked); they never go through a shuffle:
    rows --GroupByKey(source tar)--> index the tar: offsets and sha256, or reject image_missing
                                     (invalid_uid: a uid that cannot be a WebDataset key)
         --uids ranked in order----> shard index of each row (witcurate.pipeline.uid_order)
         --GroupByKey(shard)-------> write UID.* members + sidecar, reading bytes by offset;
                                     a uid's further rows reject duplicate_uid
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from typing import Any, BinaryIO

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq

import witcurate
from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import ConfigError, InputError
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, make_pipeline, read_json_lines, read_stage, reject,
                                        run_pipeline)
from witcurate.pipeline.card import CARD_DIR, README
from witcurate.pipeline.card.manifests import TABLE_STAGES
from witcurate.pipeline.image_source import IMAGE_EXTENSIONS, sample_key
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.tables import parquet_files, reject_counts
from witcurate.pipeline.stages import BaseStage, Option
from witcurate.pipeline.table_sink import WriteTables, json_lines_table, parquet_table
from witcurate.pipeline.tar_writer import TarWriter, check_key
from witcurate.pipeline.uid_order import GroupByUidRank, bucket_width

INFO = "info"
MANIFEST_NAME = "manifest.json"
SIZES_NAME = "sizes.json"

# One row per shipped sample: what a user filters and joins on without opening a tar.
# `shard` and `key` say where the sample is in THIS dataset (the tar file, the WebDataset key).
SIDECAR = pa.schema([
    ("uid", pa.string()),
    ("url", pa.string()),
    ("caption", pa.string()),
    ("query", pa.string()),
    ("query_id", pa.int32()),
    ("query_ids", pa.list_(pa.int32())),
    ("clip_score", pa.float32()),
    ("sha256", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("original_width", pa.int32()),
    ("original_height", pa.int32()),
    ("shard", pa.string()),
    ("key", pa.string()),
])

SIDECAR_NAMES = tuple(SIDECAR.names)

# Keys this stage adds to a row while it travels through the pipeline; never written out.
_PRIVATE = ("_member", "_offset", "_size", "_tar")


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _PRIVATE}


# --- reading images from the download stage's tars ------------------------------------------
# image_source.read_shard streams a shard front to back for rows grouped by that shard. Here each
# output shard takes samples from every source tar (uid order), so the source tars are indexed
# once (offsets and sha256) and each writer seeks to the images it needs.

def index_image_tar(path: str) -> dict[str, tuple[str, int, int, str]]:
    """{sample key: (member name, data offset, size, sha256)} for the image members of a tar.

    One sequential pass over the tar: the sha256 of each image is checked against the download
    stage's record here, before samples are laid out in shards, so a mismatch becomes a reject
    instead of a hole in a shard. A key with several image members keeps the preferred extension.
    """
    found: dict[str, tuple[int, tuple[str, int, int, str]]] = {}
    with fs.open_file(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, ext = sample_key(member.name)
            if ext not in IMAGE_EXTENSIONS:
                continue
            rank = IMAGE_EXTENSIONS.index(ext)
            if key not in found or rank < found[key][0]:
                digest = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
                found[key] = (rank, (member.name, member.offset_data, member.size, digest))
    return {k: v for k, (_, v) in found.items()}


def read_member(handle: BinaryIO, offset: int, size: int) -> bytes:
    handle.seek(offset)
    data = handle.read(size)
    if len(data) != size:
        raise OSError(f"short read: {len(data)} of {size} bytes at offset {offset}")
    return data


# --- the DoFns ----------------------------------------------------------------------------------

class LocateImages(beam.DoFn):
    """For the rows of one source tar: where each image is, or an image_missing reject."""

    def __init__(self, images_dir: str):
        self.images_dir = images_dir

    def process(self, element):
        source, rows = element
        rows = list(rows)
        path = fs.join(self.images_dir, source) if source else ""
        problem = ""
        index: dict[str, tuple[str, int, int, str]] = {}
        if not source:
            problem = "the row names no image tar (empty `shard`)"
        elif not fs.exists(path):
            problem = f"image tar {source} not found under {self.images_dir}"
        else:
            try:
                index = index_image_tar(path)
            except (tarfile.TarError, OSError, EOFError) as e:
                problem = f"cannot read image tar {source}: {type(e).__name__}: {e}"
        for row in rows:
            try:
                check_key(row.get("uid") or "")
            except ValueError as e:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(row, "invalid_uid", str(e)))
                continue
            if problem:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(row, "image_missing", problem))
                continue
            hit = index.get(row.get("key") or "")
            if hit is None:
                yield beam.pvalue.TaggedOutput(
                    REJECTED, reject(row, "image_missing", f"no image member for key {row.get('key')!r} in {source}"))
                continue
            member, offset, size, digest = hit
            if row.get("sha256") and row["sha256"] != digest:
                yield beam.pvalue.TaggedOutput(REJECTED, reject(
                    row, "image_mismatch", f"{member} in {source} has sha256 {digest}, "
                                           f"the download stage recorded {row['sha256']}"))
                continue
            yield beam.pvalue.TaggedOutput(KEPT, {**row, "_tar": path, "_member": member,
                                                  "_offset": offset, "_size": size})


def shard_name(index: int, n_shards: int) -> str:
    """00000, 00001, ...: five digits (open_clip_train's brace patterns), wider past 99,999."""
    width = max(5, len(str(max(n_shards - 1, 0))))
    return f"{index:0{width}d}"


def sample_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """What goes into UID.json: the sample's provenance and the numbers a trainer may filter on."""
    score = row.get("clip_score")
    return {
        "uid": row["uid"],
        "url": row.get("url"),
        "caption": row.get("caption"),
        "query": row.get("query"),
        "query_id": row.get("query_id"),
        "query_ids": list(row.get("query_ids") or []),
        "clip_score": None if score is None else round(float(score), 6),
        "clip_model": row.get("clip_model"),
        "width": row.get("width"),
        "height": row.get("height"),
        "original_width": row.get("original_width"),
        "original_height": row.get("original_height"),
        "sha256": row.get("sha256"),
    }


class WriteShard(beam.DoFn):
    """Write one shard: its tar (bytes read by offset from the source tars) and its sidecar.

    A uid is a WebDataset key, so it may appear once: rows sharing a uid share a rank and arrive
    in the same group, and the first by position in the source tars is shipped, the others are
    rejected as duplicate_uid. A read failing here (the source tar changed or vanished since it
    was indexed) is rejected as image_unreadable and leaves the shard one sample short; the
    manifest records the real count.
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, element):
        (index, n_shards), rows = element
        name = shard_name(index, n_shards)
        rows = sorted(rows, key=lambda r: (r["uid"], r.get("shard") or "", r.get("key") or "", r["_offset"]))
        tar_name, sidecar_name = f"{name}.tar", f"{name}.parquet"
        handles: dict[str, BinaryIO] = {}
        sidecar: list[dict[str, Any]] = []
        try:
            with fs.open_file(fs.join(self.out_dir, tar_name), "wb") as out:
                writer = TarWriter(out)
                shipped: dict[str, Any] = {}
                for row in rows:
                    if shipped.get("uid") == row["uid"]:
                        yield beam.pvalue.TaggedOutput(REJECTED, reject(
                            _public(row), "duplicate_uid",
                            f"uid {row['uid']} already shipped from {shipped.get('shard')}/{shipped.get('key')}"))
                        continue
                    shipped = row
                    try:
                        handle = handles.get(row["_tar"])
                        if handle is None:
                            handle = handles[row["_tar"]] = fs.open_file(row["_tar"], "rb")
                        data = read_member(handle, row["_offset"], row["_size"])
                    except OSError as e:
                        yield beam.pvalue.TaggedOutput(REJECTED, reject(
                            _public(row), "image_unreadable", f"{row['_member']} in {row['shard']}: {e}"))
                        continue
                    ext = row["_member"].rsplit(".", 1)[1].lower()
                    ext = "jpg" if ext == "jpeg" else ext
                    meta = sample_metadata(row)
                    writer.write_sample(row["uid"], {
                        ext: data,
                        "txt": (row.get("caption") or "").encode("utf-8"),
                        "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                    })
                    sidecar.append({name: row.get(name) for name in SIDECAR_NAMES}
                                   | {"shard": tar_name, "key": row["uid"]})
                summary = writer.close()
        finally:
            for handle in handles.values():
                handle.close()
        table = pa.Table.from_pylist(sidecar, schema=SIDECAR)
        with fs.open_file(fs.join(self.out_dir, sidecar_name), "wb") as f:
            pq.write_table(table, f)
        yield beam.pvalue.TaggedOutput(INFO, json.dumps({
            "tar": tar_name, "sidecar": sidecar_name, "samples": summary.samples,
            "bytes": summary.bytes, "sha256": summary.sha256}, sort_keys=True))


# --- the stage ----------------------------------------------------------------------------------

def write_shards(p: beam.Pipeline, rows, images_dir: str, out_dir: str, per_shard: int, n_rows: int):
    """Wire the shard-writing steps onto `rows` (metadata dicts, about `n_rows` of them);
    returns the rejects and the written shards' info lines."""
    located = (rows
               | "KeyBySourceTar" >> beam.Map(lambda r: (r.get("shard") or "", r))
               | "GroupBySourceTar" >> beam.GroupByKey()
               | "LocateImages" >> beam.ParDo(LocateImages(images_dir)).with_outputs(KEPT, REJECTED))
    written = (located[KEPT]
               | "GroupIntoShards" >> GroupByUidRank(per_shard, bucket_width(n_rows))
               | "WriteShard" >> beam.ParDo(WriteShard(out_dir)).with_outputs(INFO, REJECTED))
    rejects = (located[REJECTED], written[REJECTED]) | "AllRejects" >> beam.Flatten()
    return rejects, written[INFO]


def brace_pattern(names: list[str]) -> str | None:
    """`{00000..00003}.tar`: the form webdataset and open_clip_train expand."""
    if not names:
        return None
    if len(names) == 1:
        return names[0]
    first, last = names[0].split(".")[0], names[-1].split(".")[0]
    return f"{{{first}..{last}}}.tar"


def _sorted_infos(prefix: str) -> list[dict[str, Any]]:
    return sorted(read_json_lines(prefix), key=lambda i: i["tar"])


def _distinct_queries(out_dir: str, infos: list[dict[str, Any]]) -> int:
    ids: set[int] = set()
    for info in infos:
        with fs.open_file(fs.join(out_dir, info["sidecar"])) as f:
            ids.update(v for v in pq.read_table(f, columns=["query_id"]).column(0).to_pylist() if v is not None)
    return len(ids)


# Columns a row gains in score and cap. The shards carry them when present; rows straight from
# the download stage (the curation experiment's raw arm) have none and ship with them empty.
OPTIONAL_COLUMNS = pa.schema([f for f in schemas.CAPPED if f.name not in schemas.DOWNLOADED.names])


def check_optional_columns(in_dir: str) -> None:
    """An optional column that is present must have its type (a string clip_score is an error)."""
    files = parquet_files(in_dir)
    if not files:
        return
    with fs.open_file(files[0]) as f:
        actual = pq.ParquetFile(f).schema_arrow
    present = pa.schema([f for f in OPTIONAL_COLUMNS if f.name in actual.names])
    schemas.validate(present, actual, f"stage shards input {files[0]}")


class ShardsStage(BaseStage):
    name = "shards"
    sections = ("shards",)
    inputs = ("in", "images")
    input_schema = schemas.DOWNLOADED          # and OPTIONAL_COLUMNS, checked in run()
    options = (
        Option("--samples-per-shard", "shards.samples_per_shard", "samples in each tar", int),
    )
    # The card shows every stage's counts, times and config, so any stage landing again redoes
    # it; the card and manifest.json (the run's config) are left out of this stage's content
    # digest, so the trainer reruns only when the shipped samples (tars, sidecars) change.
    reports_on = TABLE_STAGES
    content_skips = (README, f"{CARD_DIR}/*", MANIFEST_NAME)

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "cap"), "images": fs.join(out_root, "download")}

    def run(self, ctx: StageContext) -> StageResult:
        per_shard = ctx.config.shards.samples_per_shard
        if per_shard < 1:
            raise ConfigError(f"shards.samples_per_shard must be at least 1, got {per_shard}",
                              "use e.g. 10000 (WebDataset's usual shard size)")
        if not fs.exists(ctx.input("images")):
            # A wrong --images would otherwise reject every row as image_missing.
            raise InputError(f"stage shards: images directory {ctx.input('images')} does not exist",
                             "pass --images DIR, the download stage directory (its images/*.tar)")
        check_optional_columns(ctx.input("in"))
        out_dir = ctx.tmp_dir
        info_prefix = fs.join(out_dir, "_shard_info", "info")

        p = make_pipeline(ctx.beam_args)
        rows = read_stage(p, ctx.input("in"), "ReadCapped")
        rejects, info = write_shards(p, rows, ctx.input("images"), out_dir, per_shard, ctx.rows())
        tables = {REJECTED: parquet_table(fs.join(out_dir, "rejects", "part"), schemas.REJECTS),
                  INFO: json_lines_table(info_prefix)}
        {REJECTED: rejects, INFO: info} | "Write" >> WriteTables(out_dir, tables)
        run_pipeline(p)

        infos = _sorted_infos(info_prefix)
        fs.rm(fs.join(out_dir, "_shard_info"))
        total = sum(i["samples"] for i in infos)
        manifest = {
            "format": "webdataset",
            "pattern": brace_pattern([i["tar"] for i in infos]),
            "samples_per_shard": per_shard,
            "shards": [{"tar": i["tar"], "sidecar": i["sidecar"], "samples": i["samples"],
                        "bytes": i["bytes"], "sha256": i["sha256"]} for i in infos],
            "totals": {"samples": total, "shards": len(infos),
                       "bytes": sum(i["bytes"] for i in infos),
                       "queries": _distinct_queries(out_dir, infos),
                       "rejected": reject_counts(out_dir)},
            "members": ["UID.jpg (or .png/.webp as downloaded)", "UID.txt", "UID.json"],
            "config": ctx.config.to_dict(),
            "code_version": witcurate.__version__,
        }
        fs.write_json(fs.join(out_dir, MANIFEST_NAME), manifest)
        fs.write_json(fs.join(out_dir, SIZES_NAME), {i["tar"]: i["samples"] for i in infos})
        ctx.progress(f"[shards] {total} samples in {len(infos)} shards, writing the dataset card")

        from witcurate.pipeline.card import build_card
        build_card(ctx.out_root, out_dir, ctx.config)
        return StageResult(units="samples", kept_glob="[0-9]*.parquet",
                           extra={"shards": {"count": len(infos), "samples": total,
                                             "pattern": manifest["pattern"]}})


def verify_manifest(shards_dir: str) -> list[str]:
    """Problems found checking a shards directory against its manifest (empty list: all good)."""
    from witcurate.pipeline.tar_writer import sha256_file
    manifest = fs.read_json(fs.join(shards_dir, MANIFEST_NAME))
    problems = []
    for shard in manifest["shards"]:
        path = fs.join(shards_dir, shard["tar"])
        if not fs.exists(path):
            problems.append(f"{shard['tar']}: missing")
            continue
        actual = sha256_file(path)
        if actual != shard["sha256"]:
            problems.append(f"{shard['tar']}: sha256 {actual} != manifest {shard['sha256']}")
    return problems

