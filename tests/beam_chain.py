"""A tiny run for the Beam portability tests: hand-made candidates and queries, run through the
pure-Beam stages (ingest, match, balance, dedupe, cap) with image facts filled in between
balance and dedupe the way download would leave them, and score rows between dedupe and cap.

Everything goes through `witcurate.pipeline.fs`, so `root` may be a local directory or any
fsspec URL (memory://...).
"""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.config import Config, load_config
from witcurate.pipeline import fs
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table
from witcurate.pipeline.stages import get_stage

QUERIES = ["red", "blue", "circle", "square", "grass", "red circle", "two", "star", "sky"]
COLOURS = ["red", "blue", "green"]
SHAPES = ["circle", "square", "star", "cloud"]
SCENES = ["grass", "sky", "table"]

# Pure Beam stages, in order, with what each reads; "download" and "score" are filled in by
# `fake_download` and `fake_score` (they need an image host and a model).
PURE_BEAM = ["ingest", "match", "balance", "dedupe", "cap"]


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def candidate_rows(n: int = 90) -> list[dict]:
    """Clean pairs plus every kind of junk ingest and match reject."""
    rows = []
    for i in range(n):
        words = ["two", COLOURS[i % 3], SHAPES[i % 4] + "s", "on the", SCENES[i % 3], str(i)]
        rows.append({"url": f"http://img.example.com/{i}.jpg", "caption": " ".join(words)})
    rows += [
        {"url": "http://img.example.com/3.jpg", "caption": "a copy with the same url"},   # duplicate_url
        {"url": "not a url", "caption": "two red circles"},
        {"url": "ftp://img.example.com/x.jpg", "caption": "two red circles"},
        {"url": "http://img.example.com/j1.jpg", "caption": "x"},                          # junk caption
        {"url": "http://img.example.com/j2.jpg", "caption": None},
        {"url": "http://img.example.com/nm.jpg", "caption": "nothing matches this one"},   # no_query_match
    ]
    return rows


def write_inputs(root: str) -> dict[str, str]:
    """Candidates parquet and queries.json under `root`; returns their paths."""
    fs.makedirs(fs.join(root, "sources"))
    fs.makedirs(fs.join(root, "queries"))
    src = fs.join(root, "sources", "candidates.parquet")
    with fs.open_file(src, "wb") as f:
        pq.write_table(pa.Table.from_pylist(candidate_rows(), pa.schema(
            [("url", pa.string()), ("caption", pa.string())])), f)
    queries = fs.join(root, "queries")
    with fs.open_file(fs.join(queries, "queries.json"), "w") as f:
        json.dump(QUERIES, f)
    return {"sources": src, "queries": queries}


def tiny_config() -> Config:
    return load_config(None, ["balance.per_query=4", "balance.oversample=1.5", "cap.per_query=3",
                              "dedupe.max_hamming=4", "dedupe.bands=5", "run.seed=7"])


def _write_parquet(path: str, table: pa.Table) -> None:
    with fs.open_file(path, "wb") as f:
        pq.write_table(table, f)


def fake_download(balance_dir: str, out_dir: str) -> None:
    """DOWNLOADED rows for the balanced pairs: every 6th image an exact copy of the one before,
    every 5th a near copy (2 bits of pHash flipped); image tars are not needed by dedupe/cap."""
    rows = sorted(read_table(balance_dir).to_pylist(), key=lambda r: r["uid"])
    prev = None
    for i, row in enumerate(rows):
        sha = hashlib.sha256(row["uid"].encode()).hexdigest()
        phash = _h(row["uid"])
        if prev is not None and i % 6 == 0:
            sha, phash = prev["sha256"], prev["phash"]
        elif prev is not None and i % 5 == 0:
            phash = prev["phash"] ^ 0b101
        row.update(shard="images/00000.tar", key=f"{i:09d}", width=64, height=48,
                   original_width=640, original_height=480, sha256=sha, phash=phash)
        prev = row
    fs.makedirs(fs.join(out_dir, "images"))
    _write_parquet(fs.join(out_dir, "part-00000.parquet"), pa.Table.from_pylist(rows, schemas.DOWNLOADED))


def fake_score(dedupe_dir: str, out_dir: str) -> None:
    rows = read_table(dedupe_dir).to_pylist()
    for row in rows:
        row.update(clip_score=(_h("s" + row["uid"]) % 1000) / 1000, clip_model="fake")
    fs.makedirs(out_dir)
    _write_parquet(fs.join(out_dir, "part-00000.parquet"), pa.Table.from_pylist(rows, schemas.SCORED))


def run_chain(root: str, beam_args: list[str], stop_after: str = "cap") -> dict[str, dict]:
    """Run the pure-Beam chain under `root` with these Beam options; returns each stage's manifest."""
    paths = write_inputs(root)
    cfg = tiny_config()
    d = {name: fs.join(root, name) for name in ["ingest", "match", "balance", "download",
                                                "dedupe", "score", "cap"]}
    inputs = {
        "ingest": {"in": paths["sources"]},
        "match": {"in": d["ingest"], "queries": paths["queries"]},
        "balance": {"in": d["match"]},
        "dedupe": {"in": d["download"]},
        "cap": {"in": d["score"], "query_counts": d["balance"], "queries": paths["queries"]},
    }
    manifests = {}
    for name in PURE_BEAM:
        if name == "dedupe":
            fake_download(d["balance"], d["download"])
        if name == "cap":
            fake_score(d["dedupe"], d["score"])
        manifests[name] = run_stage(get_stage(name), cfg, d[name], inputs[name], beam_args,
                                    progress=lambda msg: None)
        if name == stop_after:
            break
    return manifests


def outcome(stage_dir: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(sorted kept uids, sorted (uid, reason) of rejects) of a stage directory."""
    kept = read_table(stage_dir, ["uid"])
    rejects = read_table(fs.join(stage_dir, "rejects"), ["uid", "reason"])
    return (sorted(kept.column("uid").to_pylist()) if kept is not None else [],
            sorted(zip(rejects.column("uid").to_pylist(), rejects.column("reason").to_pylist()))
            if rejects is not None else [])


__all__ = ["PURE_BEAM", "run_chain", "outcome", "write_inputs", "tiny_config", "fake_download",
           "fake_score"]
