"""Dedupe: banded search against brute force, connected components in Beam against a plain
union-find, survivors, and the stage on planted duplicates."""

from __future__ import annotations

import io
import itertools
import json
import random
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw, ImageEnhance

from union_find import union_find
from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import ConfigError
from witcurate.filters import dedupe as rules
from witcurate.filters.images import inspect_image
from witcurate.pipeline.dedupe import DedupeStage
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table


def components(edges):
    groups: dict = {}
    for x, root in union_find((int(a), int(b)) for a, b in edges).items():
        groups.setdefault(root, []).append(x)
    return sorted(tuple(sorted(g)) for g in groups.values())


def planted_hashes(n_base=3000, n_near=400, max_flip=4, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**64, size=n_base, dtype=np.uint64)
    src = rng.integers(0, n_base, size=n_near)
    near = base[src].copy()
    for i in range(n_near):
        for bit in rng.choice(64, size=rng.integers(0, max_flip + 1), replace=False):
            near[i] ^= np.uint64(1) << np.uint64(bit)
    return np.concatenate([base, near])


def test_band_layout_covers_all_bits_once():
    for bands in (1, 5, 7, 8, 64):
        layout = rules.band_layout(bands)
        bits = [s + i for s, w in layout for i in range(w)]
        assert sorted(bits) == list(range(64))
    with pytest.raises(ValueError):
        rules.band_layout(0)
    h = 0xF0F0_0000_0000_0001
    assert rules.band_keys(h, 8)[0] == (0, 1) and rules.band_keys(h, 8)[7] == (7, 0xF0)


@pytest.mark.parametrize("bands", [5, 8])
def test_banded_search_finds_exactly_the_brute_force_groups(bands):
    hashes = planted_hashes()
    banded = rules.near_duplicate_pairs(hashes, 4, bands)
    brute = rules.brute_force_pairs(hashes, 4)
    assert len(brute) >= 390                       # the planted pairs (plus any chance ones)
    assert components(banded) == components(brute)
    for a, b in banded.tolist():                    # every edge is a verified pair
        assert rules.hamming(hashes[a], hashes[b]) <= 4


def test_bucket_edges_report_each_pair_from_one_band_only():
    a, b = 0x0123_4567_89AB_CDEF, 0x0123_4567_89AB_CDEF ^ 0b101   # differ in band 0 only
    items = [("a", a), ("b", b)]
    found = [(band, rules.bucket_edges(items, band, 5, 4)) for band in range(5)]
    assert [band for band, edges in found if edges] == [1]      # first band they agree on
    twins = [("x", a), ("y", a), ("z", a)]
    assert rules.bucket_edges(twins, 0, 5, 4) == [("x", "y"), ("x", "z")]
    assert rules.bucket_edges(twins, 3, 5, 4) == []


def test_survivor_is_highest_resolution_then_smallest_uid():
    nodes = [("b", "s1", 100, 0b0), ("a", "s1", 100, 0b0), ("c", "s2", 400, 0b11), ("d", "s3", 50, 0b111)]
    assert min(nodes, key=rules.survivor_rank)[0] == "c"
    assert min(nodes[:2], key=rules.survivor_rank)[0] == "a"
    assert rules.duplicate_verdict(nodes[0], nodes[1]) == ("exact_duplicate", 0)
    assert rules.duplicate_verdict(nodes[3], nodes[2]) == ("near_duplicate", 1)


def test_eval_index_finds_the_nearest_evaluation_image():
    index = rules.EvalIndex([("e1", 0xFF), ("e2", 0xFF ^ 0b11), ("far", 2**63 - 1)], 4, 5)
    assert index.match(0xFF ^ 0b1) == ("e1", 1)
    assert index.match(0xFF ^ 0b1111_0000_0000) == ("e1", 4)
    assert index.match(0xFF ^ 0b1_1111_0000_0000) is None
    assert index.match(0xFF) == ("e1", 0)


# ------------------------------------------------------------------ the stage -------------------

def scene(rng: random.Random, size=128) -> Image.Image:
    w, h = size + rng.randint(-30, 30), size
    c1 = np.array([rng.randint(0, 255) for _ in range(3)])
    c2 = np.array([rng.randint(0, 255) for _ in range(3)])
    t = np.linspace(0, 1, w)[None, :, None] if rng.random() < 0.5 else np.linspace(0, 1, h)[:, None, None]
    arr = np.broadcast_to(c1 * (1 - t) + c2 * t, (h, w, 3)).astype(np.uint8)
    img = Image.fromarray(arr)
    d = ImageDraw.Draw(img)
    for _ in range(rng.randint(2, 5)):
        x, y, r = rng.randint(0, w - 10), rng.randint(0, h - 10), rng.randint(8, size // 3)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x - r, y - r, x + r, y + r], fill=colour)
    return img


def encode(img: Image.Image, quality=90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def stored(img: Image.Image) -> bytes:
    """What the download stage keeps: shortest side resized to 64, re-encoded."""
    s = 64 / min(img.size)
    return encode(img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.BOX), 95)


VARIANTS = {
    "recompressed": lambda im: Image.open(io.BytesIO(encode(im, 40))).convert("RGB"),
    "half_size": lambda im: im.resize((im.width // 2, im.height // 2)),
    "brighter": lambda im: ImageEnhance.Brightness(im).enhance(1.05),
}


def row(uid: str, data: bytes, original: tuple[int, int]) -> dict:
    facts = inspect_image(data, 10**9)
    return {"uid": uid, "url": f"http://img/{uid}.jpg", "caption": "c", "source": "t", "query_ids": [1],
            "keep_probability": 1.0, "shard": "images/00000.tar", "key": uid, "width": facts.width,
            "height": facts.height, "original_width": original[0], "original_height": original[1],
            "sha256": facts.sha256, "phash": facts.phash}


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """120 distinct scenes, a near-duplicate variant of each, 10 byte-identical copies, and an
    evaluation folder holding 5 of the scenes (as PNG files and inside a tar)."""
    rng = random.Random(7)
    root = tmp_path_factory.mktemp("planted")
    rows, truth, bases = [], {}, []
    for i in range(120):
        img = scene(rng)
        bases.append(img)
        uid = f"base{i:03d}"
        rows.append(row(uid, stored(img), img.size))
        truth[uid] = i
        name = list(VARIANTS)[i % len(VARIANTS)]
        variant = VARIANTS[name](img)
        vuid = f"var{i:03d}"
        rows.append(row(vuid, stored(variant), variant.size))
        truth[vuid] = i
    for i in range(10):
        copy = dict(rows[2 * i], uid=f"copy{i:03d}", key=f"copy{i:03d}")
        rows.append(copy)
        truth[copy["uid"]] = i
    rng.shuffle(rows)
    (root / "download").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schemas.DOWNLOADED), root / "download" / "part-00000.parquet")
    ev = root / "eval" / "zeroshot" / "thing"
    ev.mkdir(parents=True)
    for i in (100, 101, 102):
        bases[i].save(ev / f"{i}.png")
    with tarfile.open(root / "eval" / "retrieval-00000.tar", "w") as tar:
        for i in (103, 104):
            data = encode(bases[i].resize((96, 96)))
            info = tarfile.TarInfo(f"{i:08d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "eval" / "notes.txt").write_text("not an image")
    return root, rows, truth


def reference_verdicts(rows, max_hamming) -> dict[str, tuple[str, str]]:
    """uid -> (reason, survivor uid) for every duplicate that is not its group's survivor, by a
    plain union-find over all pairs with the same sha256 or within max_hamming; the survivor
    is the highest resolution, then the smallest uid."""
    nodes = {r["uid"]: r for r in rows}
    pairs = [(a["uid"], b["uid"]) for a, b in itertools.combinations(rows, 2)
             if a["sha256"] == b["sha256"] or rules.hamming(a["phash"], b["phash"]) <= max_hamming]
    groups: dict = {}
    for uid, root in union_find(pairs).items():
        groups.setdefault(root, []).append(nodes[uid])
    out = {}
    for members in groups.values():
        best = min(members, key=lambda r: (-r["original_width"] * r["original_height"], r["uid"]))
        for m in members:
            if m is not best:
                exact = m["sha256"] == best["sha256"]
                out[m["uid"]] = ("exact_duplicate" if exact else "near_duplicate", best["uid"])
    return out


def rejects_of(out):
    """uid -> (reason, survivor uid, record) of a stage's rejects."""
    t = pq.read_table(str(out / "rejects"))
    return {r["uid"]: (r["reason"], r["survivor_uid"], json.loads(r["record"])) for r in t.to_pylist()}


def test_stage_removes_planted_duplicates_with_high_recall_and_no_false_merges(planted, tmp_path):
    root, rows, truth = planted
    cfg = Config()
    manifest = run_stage(DedupeStage(), cfg, str(tmp_path / "dedupe"), {"in": str(root / "download")},
                         progress=lambda s: None)
    assert manifest["counts"]["in"] == len(rows) == manifest["counts"]["kept"] + manifest["counts"]["rejected"]
    rejected = rejects_of(tmp_path / "dedupe")
    kept = read_table(str(tmp_path / "dedupe"))
    schemas.validate(schemas.DEDUPED, kept.schema, "dedupe output")
    kept_uids = set(kept.column("uid").to_pylist())

    # each scene should come out exactly once: count the groups the stage got right
    survivors_per_scene = {}
    for uid in kept_uids:
        survivors_per_scene.setdefault(truth[uid], []).append(uid)
    missed = sum(len(v) - 1 for v in survivors_per_scene.values())       # duplicates not removed
    duplicates = len(rows) - 120
    recall = 1 - missed / duplicates
    false_merges = sum(1 for uid, (_, survivor, _) in rejected.items()
                       if survivor and truth[survivor] != truth[uid])
    assert recall >= 0.98, recall
    assert false_merges / len(rows) <= 0.01, false_merges
    assert len(survivors_per_scene) == 120                                 # no scene lost entirely

    # survivors: highest original resolution, and byte-identical copies are exact duplicates
    by_uid = {r["uid"]: r for r in rows}
    for uid, (reason, survivor_uid, record) in rejected.items():
        survivor = by_uid[survivor_uid]
        me = by_uid[uid]
        assert (survivor["original_width"] * survivor["original_height"], ) >= (me["original_width"] * me["original_height"], )
        assert reason == ("exact_duplicate" if me["sha256"] == survivor["sha256"] else "near_duplicate")
        assert record["uid"] == uid
    assert {r for r, _, _ in rejected.values()} == {"exact_duplicate", "near_duplicate"}
    assert manifest["dedupe"]["duplicate_groups"] >= 100
    # the groups and survivors are a plain union-find's over every duplicate pair
    verdicts = {uid: (reason, survivor) for uid, (reason, survivor, _) in rejected.items()}
    assert verdicts == reference_verdicts(rows, cfg.dedupe.max_hamming)
    assert manifest["dedupe"]["duplicate_groups"] == len({s for _, s in verdicts.values()})
    # the detail still says it in words
    details = pq.read_table(str(tmp_path / "dedupe" / "rejects"), columns=["survivor_uid", "detail"]).to_pylist()
    assert all(d["detail"].startswith(f"duplicate of {d['survivor_uid']} (") for d in details)

    # deterministic: the same survivors on a second run
    again = run_stage(DedupeStage(), cfg, str(tmp_path / "again" / "dedupe"), {"in": str(root / "download")},
                      progress=lambda s: None)
    assert again["counts"] == manifest["counts"]
    assert set(read_table(str(tmp_path / "again" / "dedupe")).column("uid").to_pylist()) == kept_uids


def test_eval_set_duplicates_are_removed_from_the_pool(planted, tmp_path):
    root, rows, truth = planted
    cfg = Config()
    cfg.dedupe.eval_images = str(root / "eval")
    manifest = run_stage(DedupeStage(), cfg, str(tmp_path / "dedupe"), {"in": str(root / "download")},
                         progress=lambda s: None)
    rejected = rejects_of(tmp_path / "dedupe")
    eval_hits = {uid for uid, (reason, _, _) in rejected.items() if reason == "duplicates_eval_set"}
    in_eval_scenes = {uid for uid, scene_id in truth.items() if scene_id in (100, 101, 102, 103, 104)}
    assert eval_hits == in_eval_scenes
    assert manifest["dedupe"]["eval_images"] == 5
    kept = set(read_table(str(tmp_path / "dedupe")).column("uid").to_pylist())
    assert not kept & in_eval_scenes
    assert manifest["counts"]["kept"] + manifest["counts"]["rejected"] == len(rows)


def test_bad_settings_and_rows_without_hashes(tmp_path):
    cfg = Config()
    cfg.dedupe.max_hamming = 64
    (tmp_path / "download").mkdir()
    pq.write_table(pa.Table.from_pylist([], schemas.DOWNLOADED), tmp_path / "download" / "part-00000.parquet")
    with pytest.raises(ConfigError, match="max_hamming"):
        run_stage(DedupeStage(), cfg, str(tmp_path / "dedupe"), {"in": str(tmp_path / "download")},
                  progress=lambda s: None)
    base = row("a", stored(scene(random.Random(1))), (128, 128))
    rows = [base, dict(base, uid="b", phash=None), dict(base, uid="c")]
    pq.write_table(pa.Table.from_pylist(rows, schemas.DOWNLOADED), tmp_path / "download" / "part-00000.parquet")
    manifest = run_stage(DedupeStage(), Config(), str(tmp_path / "dedupe"), {"in": str(tmp_path / "download")},
                         progress=lambda s: None)
    assert manifest["counts"]["reasons"] == {"exact_duplicate": 1, "missing_hash": 1}
    assert read_table(str(tmp_path / "dedupe")).column("uid").to_pylist() == ["a"]


def meta_row(uid: str, phash: int, pixels_side: int) -> dict:
    """A download row as dedupe reads it, without an image behind it."""
    return {"uid": uid, "url": f"http://img/{uid}.jpg", "caption": "c", "source": "t", "query_ids": [1],
            "keep_probability": 1.0, "shard": "images/00000.tar", "key": uid, "width": 64, "height": 64,
            "original_width": pixels_side, "original_height": pixels_side, "sha256": f"sha-{uid}",
            "phash": phash}


def test_a_long_chain_of_near_duplicates_takes_more_passes_and_one_survivor(tmp_path):
    """60 images, each one bit from the next (so 59 bits from the first), are one group; with
    max_hamming 1 it is a path, too long for the first pipeline's rounds: later passes finish
    it and a last pipeline writes the verdicts, the same as a union-find's."""
    rng = random.Random(5)
    phash, rows = 0x0F0F_F0F0_3C3C_C3C3, []
    for i in range(60):
        rows.append(meta_row(f"link{i:02d}", phash, rng.randint(100, 400)))
        phash ^= 1 << i
    rows += [meta_row(f"alone{i}", rng.getrandbits(64), 100) for i in range(5)]
    rng.shuffle(rows)
    (tmp_path / "download").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schemas.DOWNLOADED), tmp_path / "download" / "part-00000.parquet")
    cfg = Config()
    cfg.dedupe.max_hamming, cfg.dedupe.bands = 1, 2
    manifest = run_stage(DedupeStage(), cfg, str(tmp_path / "dedupe"), {"in": str(tmp_path / "download")},
                         progress=lambda s: None)
    components = manifest["dedupe"]["components"]
    assert components["passes"] >= 2 and components["rounds_to_converge"] > 2
    assert components["vertices"] == 60 and components["edges"] == 59
    rejected = rejects_of(tmp_path / "dedupe")
    assert {uid: (reason, survivor) for uid, (reason, survivor, _) in rejected.items()} == \
        reference_verdicts(rows, 1)
    survivor = min((r for r in rows if r["uid"].startswith("link")),
                   key=lambda r: (-r["original_width"], r["uid"]))
    kept = set(read_table(str(tmp_path / "dedupe")).column("uid").to_pylist())
    assert kept == {survivor["uid"]} | {f"alone{i}" for i in range(5)}
    assert manifest["counts"]["in"] == 65 == manifest["counts"]["kept"] + manifest["counts"]["rejected"]
    assert manifest["dedupe"]["duplicate_groups"] == 1
