"""A small fake run directory: every stage before `shards`, as the stages would leave them, and
an img2dataset-like images tar (used by test_shards.py and test_card.py)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from witcurate import schemas


def uid_of(i: int) -> str:
    return hashlib.sha256(f"u{i}".encode()).hexdigest()[:32]


def _image(i: int, fmt: str = "JPEG") -> bytes:
    img = Image.new("RGB", (40 + i, 30 + (i % 3) * 7), ((i * 37) % 256, (i * 91) % 256, 120))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_img2dataset_tar(path: Path, members: dict[str, bytes]) -> None:
    """A tar laid out like img2dataset's: KEY.jpg, KEY.txt, KEY.json per sample, plus noise."""
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _manifest(stage: str, n_in: int, kept: int, reasons: dict[str, int], wall: float = 1.5) -> dict:
    return {"stage": stage, "fingerprint": f"fp-{stage}", "code_version": "0.1.0",
            "counts": {"in": n_in, "kept": kept, "rejected": sum(reasons.values()), "reasons": reasons},
            "wall_seconds": wall, "throughput": {"units": "records", "per_second": round(n_in / wall, 2)}}


def _write_stage(out: Path, stage: str, table: pa.Table | None, rejects: list[dict], manifest: dict) -> None:
    """A finished stage directory. Without a table, placeholder rows as many as the manifest
    counts kept: the runner checks a finished input still holds what its manifest says."""
    d = out / stage
    (d / "rejects").mkdir(parents=True, exist_ok=True)
    if table is None:
        table = pa.table({"uid": [f"{stage}-{i}" for i in range(manifest["counts"]["kept"])]})
    assert table.num_rows == manifest["counts"]["kept"], stage
    pq.write_table(table, d / "part-00000.parquet")
    pq.write_table(pa.Table.from_pylist(rejects, schema=schemas.REJECTS), d / "rejects" / "part-00000.parquet")
    (d / "_SUCCESS.json").write_text(json.dumps(manifest))


def make_run(out: Path, png: bool = False, upstream: bool = True) -> dict:
    """A fake run directory with every stage before `shards`; returns what the test expects.

    Sample 10 sits in a second source tar; with `png` it is a PNG (download.encode_format=png).
    Without `upstream` only the cap rows and the images exist, no stage has a _SUCCESS.json (a
    standalone `witcurate shards --in DIR --images DIR` on someone else's data).
    """
    images = out / "download" / "images"
    images.mkdir(parents=True)
    rows, members0, members1, expect = [], {}, {}, {}
    for i in range(11):
        key = f"{i:09d}"
        uid = uid_of(i)
        second = i == 10
        is_png = second and png
        data = _image(i, "PNG" if is_png else "JPEG")
        caption = f"{['two', 'three', 'a'][i % 3]} red circles on the grass — été {i}"
        shard = "images/00001.tar" if second else "images/00000.tar"
        (members1 if second else members0).update({f"{key}.{'png' if is_png else 'jpg'}": data,
                                                f"{key}.txt": caption.encode(), f"{key}.json": b"{}"})
        rows.append(dict(uid=uid, url=f"http://127.0.0.1:18080/img/{i}.jpg", caption=caption, source="pool",
                         query_ids=[i % 3, 7], keep_probability=1.0, shard=shard, key=key,
                         width=40 + i, height=30, original_width=400 + i, original_height=300,
                         sha256=hashlib.sha256(data).hexdigest(), phash=i, clip_score=0.25 + i / 100,
                         clip_model="witcurate-tiny", query_id=i % 3, query=["two", "three", "red"][i % 3]))
        expect[uid] = (data, caption, "png" if is_png else "jpg")
    members0["__noise__/readme.txt"] = b"not a sample"
    write_img2dataset_tar(images / "00000.tar", members0)
    write_img2dataset_tar(images / "00001.tar", members1)
    # Rows that cannot ship: key absent from its tar, a tar that does not exist, a repeated uid,
    # bytes that are not the image the download stage hashed, a uid that cannot be a key.
    bad = [
        dict(rows[0], uid=uid_of(100), key="000000999"),
        dict(rows[1], uid=uid_of(101), shard="images/00009.tar"),
        dict(rows[2], key=rows[3]["key"], sha256=rows[3]["sha256"]),
        dict(rows[4], uid=uid_of(102), sha256="0" * 64),
        dict(rows[5], uid="has.a.dot"),
    ]
    capped = pa.Table.from_pylist(rows + bad, schema=schemas.CAPPED)
    if not upstream:
        (out / "cap").mkdir()
        pq.write_table(capped, out / "cap" / "part-00000.parquet")
        return {"rows": capped, "expect": expect, "n_good": len(rows)}
    # The stages before, as a run would leave them (each stage's kept = the next one's in).
    n = capped.num_rows
    assert n == 16
    _write_stage(out, "queries", pa.table({"query_id": pa.array([0, 1, 2, 7], pa.int32()),
                                           "query": ["two", "three", "red", "grass"]}), [],
                 {**_manifest("queries", 4, 4, {}), "sources": {
                     "wordnet": {"floors": {}, "before_budget": 2, "budget": None, "after_budget": 2,
                                 "last_admitted": None, "in_list": 2},
                     "bigram": {"floors": {"min_bigram_count": 30}, "before_budget": 9, "budget": 1,
                                "after_budget": 1, "in_list": 1,
                                "last_admitted": {"query": "red grass", "count": 31, "pmi": 7.25}}}})
    _write_stage(out, "ingest", None, [], _manifest("ingest", 40, 30, {"bad_url": 6, "junk_caption": 4}))
    _write_stage(out, "match", None, [], _manifest("match", 30, 25, {"no_query_match": 5}))
    _write_stage(out, "balance", None, [], _manifest("balance", 25, 22, {"over_budget": 3}))
    _write_stage(out, "download", None, [], _manifest("download", 22, n + 4, {"http_404": 1, "too_small": 1}))
    _write_stage(out, "dedupe", None, [], _manifest("dedupe", n + 4, n + 3, {"near_duplicate": 1}))
    score_rejects = [{"uid": uid_of(200 + j), "reason": "clip_score_below", "detail": "",
                      "record": json.dumps({"uid": uid_of(200 + j), "clip_score": 0.05 + j / 100})} for j in range(2)]
    over_cap = pa.Table.from_pylist([dict(rows[6], uid=uid_of(300))], schema=schemas.CAPPED)
    scored = pa.concat_tables([capped, over_cap]).drop_columns(["query_id", "query"])
    _write_stage(out, "score", scored, score_rejects,
                 dict(_manifest("score", n + 3, n + 1, {"clip_score_below": 2}), threshold_used=0.2))
    cap_rejects = [{"uid": uid_of(300), "reason": "over_query_cap", "detail": "",
                    "record": json.dumps({"uid": uid_of(300), "query_id": 0})}]
    _write_stage(out, "cap", capped, cap_rejects, _manifest("cap", n + 1, n, {"over_query_cap": 1}))
    return {"rows": capped, "expect": expect, "n_good": len(rows),
            "rejects": {"image_missing": 2, "duplicate_uid": 1, "image_mismatch": 1, "invalid_uid": 1}}
