"""The dedupe stage: exact duplicates by sha256, near duplicates by perceptual-hash distance.

    download rows --(eval set: drop images within max_hamming of an evaluation image)
        nodes --key sha256--GroupByKey--> exact edges ---------------------\\
        nodes --key (band, band value)--GroupByKey--> verified near edges --Flatten--ToList
              --union-find--> (non-survivor uid, (reason, survivor)) --join on uid--> decide rows

Only metadata moves (uid, sha256, resolution, 64-bit hash); the decisions are the pure functions
of witcurate.filters.dedupe. The edges (one per duplicate pair found) are gathered in one place
to find the groups, the one step here that is not spread over workers: about 100 bytes per
edge. The verdicts go back to the rows by a join on uid, so no worker holds all of them.
"""

from __future__ import annotations

import logging
import posixpath
import tarfile
from typing import Iterable

import apache_beam as beam
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.config import Config, DedupeSection
from witcurate.errors import ConfigError, InputError
from witcurate.filters import dedupe as rules
from witcurate.filters import images
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import (KEPT, REJECTED, WriteStageOutputs, make_pipeline, read_stage,
                                        reject, run_pipeline)
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.tables import parquet_files
from witcurate.pipeline.stages import BaseStage, Option

log = logging.getLogger("witcurate")

MISSING_HASH = "missing_hash"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
EVAL_MAX_PIXELS = 89_478_485       # Pillow's own limit: evaluation images are trusted files

# A node on the wire: (uid, sha256, pixels, phash) - tuples keep Beam's coders fast.
NodeTuple = tuple[str, str, int, int]


def validate_config(cfg: DedupeSection) -> None:
    if not 0 <= cfg.max_hamming < 64:
        raise ConfigError(f"dedupe.max_hamming must be between 0 and 63, got {cfg.max_hamming}",
                          "4 is a common choice for 64-bit pHash")
    if not 1 <= cfg.bands <= 64:
        raise ConfigError(f"dedupe.bands must be between 1 and 64, got {cfg.bands}",
                          f"use max_hamming + 1 = {cfg.max_hamming + 1}")


# ------------------------------------------------------------------ eval set ---------------------

def _image_files(folder: str) -> Iterable[tuple[str, bytes]]:
    """(name, bytes) of every image in a folder tree, including images inside .tar files
    (WebDataset shards), in a stable order."""
    for path in fs.glob(fs.join(folder, "**")):
        low = path.lower()
        rel = posixpath.relpath(path, folder) if "://" not in path else path
        if low.endswith(IMAGE_SUFFIXES):
            with fs.open_file(path) as f:
                yield rel, f.read()
        elif low.endswith(".tar"):
            with fs.open_file(path) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
                for member in tar:
                    if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                        yield f"{rel}:{member.name}", tar.extractfile(member).read()


def hash_eval_images(folder: str) -> tuple[list[tuple[str, int]], list[str]]:
    """([(name, phash)], [names that could not be read]) for an evaluation image folder."""
    if not fs.exists(folder):
        raise InputError(f"dedupe.eval_images: no such folder {folder}",
                         "point it at a folder of evaluation images, or leave it empty")
    hashed, unreadable = [], []
    for name, data in _image_files(folder):
        facts = images.inspect_image(data, EVAL_MAX_PIXELS)
        if isinstance(facts, images.ImageFacts):
            hashed.append((name, facts.phash))
        else:
            unreadable.append(name)
    return hashed, unreadable


class DropEvalDuplicates(beam.DoFn):
    def __init__(self, eval_hashes: list[tuple[str, int]], max_hamming: int, bands: int):
        self.eval_hashes = eval_hashes
        self.max_hamming = max_hamming
        self.bands = bands

    def setup(self):
        self.index = rules.EvalIndex(self.eval_hashes, self.max_hamming, self.bands)

    def process(self, row):
        h = row.get("phash")
        hit = self.index.match(int(h)) if h is not None else None
        if hit is None:
            yield row
        else:
            yield beam.pvalue.TaggedOutput(REJECTED, reject(
                row, rules.EVAL_DUPLICATE, f"within Hamming {hit[1]} of evaluation image {hit[0]}"))


# ------------------------------------------------------------------ pool duplicates --------------

NODES = "nodes"


class SplitHashed(beam.DoFn):
    """Rows with both hashes go on (and their node to the NODES output); rows without are
    rejects, never dropped."""

    def process(self, row):
        if row.get("phash") is None or not row.get("sha256") or not row.get("uid"):
            yield beam.pvalue.TaggedOutput(REJECTED, reject(
                row, MISSING_HASH, "the row has no uid, sha256 or phash to compare"))
            return
        pixels = int(row.get("original_width") or 0) * int(row.get("original_height") or 0)
        yield row
        yield beam.pvalue.TaggedOutput(NODES, (row["uid"], row["sha256"], pixels, int(row["phash"])))


def exact_edges(element) -> Iterable[tuple[NodeTuple, NodeTuple]]:
    _, nodes = element
    nodes = sorted(nodes)
    for other in nodes[1:]:
        yield nodes[0], other


def band_entries(node: NodeTuple, bands: int):
    for key in rules.band_keys(node[3], bands):
        yield key, node


def near_edges(element, bands: int, max_hamming: int) -> Iterable[tuple[NodeTuple, NodeTuple]]:
    (band, _value), nodes = element
    by_uid = {n[0]: n for n in nodes}
    if len(by_uid) < 2:
        return
    for a, b in rules.bucket_edges(((u, n[3]) for u, n in by_uid.items()), band, bands, max_hamming):
        yield by_uid[a], by_uid[b]


def resolve(edges: list[tuple[NodeTuple, NodeTuple]]) -> Iterable[tuple[str, tuple[str, str, int]]]:
    """(non-survivor uid, (reason, survivor uid, distance)) for every duplicate group."""
    yield from rules.resolve_duplicates((rules.Node(*a), rules.Node(*b)) for a, b in edges).items()


class Decide(beam.DoFn):
    """(uid, {"row": [row], "loser": [] or [verdict]}) -> the row kept, or its duplicate reject."""

    def process(self, element):
        _, joined = element
        hits = list(joined["loser"])
        for row in joined["row"]:
            if not hits:
                yield row
                continue
            yield beam.pvalue.TaggedOutput(REJECTED, self.duplicate(row, hits[0]))

    @staticmethod
    def duplicate(row, hit):
        reason, survivor, distance = hit
        kind = "exact copy" if reason == rules.EXACT_DUPLICATE else f"Hamming {distance}"
        return reject(row, reason, f"duplicate of {survivor} ({kind})")


# ------------------------------------------------------------------ the stage --------------------

class DedupeStage(BaseStage):
    name = "dedupe"
    sections = ("dedupe",)
    inputs = ("in",)
    options = (
        Option("--max-hamming", "dedupe.max_hamming", "near-duplicate distance (bits of 64)", int),
        Option("--bands", "dedupe.bands", "LSH bands (>= max-hamming + 1 finds every pair)", int),
        Option("--eval-images", "dedupe.eval_images",
               "folder of evaluation images (and .tar shards) whose duplicates are dropped", str),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        return {"in": fs.join(out_root, "download")}

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.dedupe
        validate_config(cfg)
        in_dir = ctx.input("in")
        files = parquet_files(in_dir)
        if files:
            with fs.open_file(files[0]) as f:
                schemas.validate(schemas.DOWNLOADED, pq.read_schema(f), in_dir)
        if not rules.recall_is_exact(cfg.max_hamming, cfg.bands):
            ctx.progress(f"[dedupe] warning: {cfg.bands} bands for max_hamming {cfg.max_hamming} "
                         f"can miss near duplicates; {cfg.max_hamming + 1} bands find them all")
        eval_hashes, unreadable = ([], [])
        if cfg.eval_images:
            eval_hashes, unreadable = hash_eval_images(cfg.eval_images)
            ctx.progress(f"[dedupe] {len(eval_hashes)} evaluation images hashed"
                         + (f", {len(unreadable)} unreadable" if unreadable else ""))

        p = make_pipeline(ctx.beam_args)
        rows = read_stage(p, in_dir, "ReadIn")
        rejects = []
        if eval_hashes:
            split = rows | "EvalSet" >> beam.ParDo(
                DropEvalDuplicates(eval_hashes, cfg.max_hamming, cfg.bands)).with_outputs(REJECTED, main=KEPT)
            rows = split[KEPT]
            rejects.append(split[REJECTED])
        hashed = rows | "Hashed" >> beam.ParDo(SplitHashed()).with_outputs(NODES, REJECTED, main=KEPT)
        rejects.append(hashed[REJECTED])
        nodes = hashed[NODES]
        exact = (nodes
                 | "BySha256" >> beam.Map(lambda n: (n[1], n))
                 | "GroupSha256" >> beam.GroupByKey()
                 | "ExactEdges" >> beam.FlatMap(exact_edges))
        near = (nodes
                | "BandKeys" >> beam.FlatMap(band_entries, cfg.bands)
                | "GroupBands" >> beam.GroupByKey()
                | "NearEdges" >> beam.FlatMap(near_edges, cfg.bands, cfg.max_hamming))
        losers = ((exact, near)
                  | "Edges" >> beam.Flatten()
                  | "AllEdges" >> beam.combiners.ToList()
                  | "Groups" >> beam.FlatMap(resolve))
        by_uid = hashed[KEPT] | "KeyByUid" >> beam.Map(lambda r: (r["uid"], r))
        decided = ({"row": by_uid, "loser": losers}
                   | "JoinVerdicts" >> beam.CoGroupByKey()
                   | "Decide" >> beam.ParDo(Decide()).with_outputs(REJECTED, main=KEPT))
        kept = decided[KEPT]
        rejects.append(decided[REJECTED])
        all_rejects = tuple(rejects) | "AllRejects" >> beam.Flatten()
        {KEPT: kept, REJECTED: all_rejects} | "Write" >> WriteStageOutputs(ctx.tmp_dir, schemas.DEDUPED)
        run_pipeline(p)

        groups = survivors_named(ctx.tmp_dir)
        return StageResult(units="images", extra={"dedupe": {
            "duplicate_groups": groups,
            "exact_recall": rules.recall_is_exact(cfg.max_hamming, cfg.bands),
            "eval_images": len(eval_hashes),
            "eval_images_unreadable": unreadable[:100],
        }})


def survivors_named(tmp_dir: str) -> int:
    """How many duplicate groups there were: the distinct survivors the rejects name."""
    survivors = set()
    for path in parquet_files(fs.join(tmp_dir, "rejects")):
        with fs.open_file(path) as f:
            table = pq.read_table(f, columns=["reason", "detail"])
        for reason, detail in zip(table.column("reason").to_pylist(), table.column("detail").to_pylist()):
            if reason in (rules.EXACT_DUPLICATE, rules.NEAR_DUPLICATE) and detail:
                survivors.add(detail.split(" ", 3)[2])
    return len(survivors)

