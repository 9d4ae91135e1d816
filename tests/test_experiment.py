"""The curation ablation on a tiny synthetic run: every arm (raw, the CLIP threshold, + semantic
dedup, + the target filter, both) is built by the real stages from the run's score output, and
trains the same steps at the same batch size; results, the table and the verdict reach the card,
and a rerun resumes instead of redoing anything."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from semantic_world import embeddings_table, unit
from synth_shapes import write_tar, write_zeroshot

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import UserError
from witcurate.pipeline.card import add_card_section
from witcurate.pipeline.tar_writer import write_tar as write_wds_tar
from witcurate.trainer.experiment import run_experiment

N_POOL = 24          # images the download stage kept
COPIES = range(0, 4)        # one scene four times: semdedup keeps one
OFF_TARGET = range(20, 24)  # far from the target set: the target filter drops them
STEPS = 3
BATCH = 8


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def _planted_embeddings(dim: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(pool vectors, target vectors): copies nearly identical, two on-target topics the target
    set covers, and an off-target topic it does not."""
    rng = np.random.default_rng(0)
    topics = unit(rng.normal(size=(3, dim)))
    vectors = np.zeros((N_POOL, dim), dtype=np.float32)
    for i in range(N_POOL):
        topic = 2 if i in OFF_TARGET else i % 2
        vectors[i] = unit(topics[topic] + 0.3 * rng.normal(size=dim) / np.sqrt(dim))
    vectors[list(COPIES)] = unit(vectors[0] + 0.001 * rng.normal(size=(len(COPIES), dim)))
    targets = unit(topics[:2].repeat(10, axis=0) + 0.3 * rng.normal(size=(20, dim)) / np.sqrt(dim))
    return vectors, targets


def _stage_dir(path: Path, stage: str, rows: list[dict] | None, schema: pa.Schema | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "rejects").mkdir(exist_ok=True)
    counts = {}
    if rows is not None:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path / "part-00000.parquet")
        counts = {"counts": {"in": len(rows), "kept": len(rows), "rejected": 0, "reasons": {}}}
    (path / "_SUCCESS.json").write_text(json.dumps({"stage": stage, "fingerprint": f"fp-{stage}", **counts}))


def make_tiny_run(out: Path) -> dict[str, tuple[bytes, str]]:
    """OUT/download (rows + images tar; one row's image is missing), OUT/score (the downloaded
    rows scored, with planted embeddings), OUT/balance and OUT/queries (what cap reads),
    OUT/shards (manifest with the run's config, card), a target set and an eval set."""
    images = out / "download" / "images"
    images.mkdir(parents=True)
    write_tar(str(images / "00000.tar"), N_POOL, seed=3, size=64)
    members = _tar_members(images / "00000.tar")
    pool, rows = {}, []
    for i in range(N_POOL + 1):
        key = f"{i:08d}"
        uid = hashlib.sha256(key.encode()).hexdigest()[:32]
        caption = members.get(f"{key}.txt", b"a row whose image the tar lacks").decode()
        if i < N_POOL:
            pool[uid] = (members[f"{key}.jpg"], caption)
        rows.append({"uid": uid, "url": f"http://127.0.0.1:1/{i}.jpg", "caption": caption,
                     "source": "pool.parquet", "query_ids": [i % 3], "keep_probability": 1.0,
                     "shard": "images/00000.tar", "key": key, "width": 64, "height": 64,
                     "original_width": 64, "original_height": 64,
                     "sha256": hashlib.sha256(pool[uid][0]).hexdigest() if i < N_POOL else None,
                     "phash": i})
    _stage_dir(out / "download", "download", rows, schemas.DOWNLOADED)

    vectors, targets = _planted_embeddings()
    scored = [{**r, "clip_score": 0.5 + i / 100, "clip_model": "fake"} for i, r in enumerate(rows[:N_POOL])]
    _stage_dir(out / "score", "score", scored, schemas.SCORED)
    (out / "score" / "embeddings").mkdir()
    pq.write_table(embeddings_table([r["uid"] for r in scored], vectors), out / "score" / "embeddings" / "part-00000.parquet")
    np.save(out / "targets.npy", targets.astype(np.float16))
    _stage_dir(out / "balance", "balance", None, None)
    pq.write_table(pa.Table.from_pylist([{"query_id": q, "pool_count": 8} for q in range(3)], schemas.QUERY_COUNTS),
                   out / "balance" / "query_counts.parquet")
    _stage_dir(out / "queries", "queries", None, None)
    (out / "queries" / "queries.json").write_text(json.dumps(["circle", "square", "star"]))

    eval_dir = out / "eval"
    write_zeroshot(str(eval_dir / "zeroshot"), per_class=2, size=64)
    write_tar(str(eval_dir / "retrieval-00000.tar"), 12, seed=9, size=64)

    shards = out / "shards"
    shards.mkdir()
    curated = sorted(pool)[:16]
    summary = write_wds_tar(str(shards / "00000.tar"),
                            [(u, {"jpg": pool[u][0], "txt": pool[u][1].encode()}) for u in curated])
    cfg = Config()
    cfg.train.batch_size = BATCH
    cfg.train.workers = 0
    cfg.train.warmup_steps = 1
    cfg.train.eval_dir = str(eval_dir)
    cfg.shards.samples_per_shard = 10
    cfg.cap.per_query = 100
    cfg.semdedup.clusters, cfg.semdedup.sample, cfg.semdedup.threshold = 2, 100, 0.99
    cfg.target.enabled, cfg.target.embeddings = True, str(out / "targets.npy")
    cfg.target.clusters, cfg.target.sample = 3, 100
    # faiss starts k-means from random pool points: a seed whose start separates the three topics
    # both in the 24 pairs the target filter sees after the CLIP threshold and in the 21 after semdedup
    cfg.target.seed = 3
    manifest = {"samples_per_shard": 10, "config": cfg.to_dict(),
                "shards": [{"tar": "00000.tar", "samples": summary.samples, "sha256": summary.sha256}],
                "totals": {"samples": summary.samples}}
    (shards / "manifest.json").write_text(json.dumps(manifest))
    (shards / "README.md").write_text("# card\n\n## Summary\n\ntext\n\n## Config\n\nyaml\n")
    return pool


ARMS = ("raw", "clip", "clip+semdedup", "clip+target", "clip+semdedup+target")
# samples per arm: 24 downloaded; semdedup keeps one of the 4 copies; the target filter drops the
# 4 off-target pairs
SAMPLES = {"raw": 24, "clip": 24, "clip+semdedup": 21, "clip+target": 20, "clip+semdedup+target": 17}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "run"
    pool = make_tiny_run(out)
    log: list[str] = []
    results = run_experiment(str(out), seeds=2, steps=STEPS, progress=log.append)
    return out, pool, results, log


def _uids(shards_dir: Path) -> set[str]:
    return {name[:-4] for t in shards_dir.glob("*.tar") for name in _tar_members(t) if name.endswith(".jpg")}


def test_every_arm_trains_the_same_steps_and_batch(finished):
    out, pool, results, _ = finished
    saved = json.loads((out / "experiment" / "results.json").read_text())
    assert saved["steps"] == STEPS and saved["batch_size"] == BATCH and saved["seeds"] == [0, 1]
    assert saved["samples_seen"] == STEPS * BATCH
    assert set(saved["arms"]) == set(ARMS) and list(results["arms"]) == list(ARMS)
    for name, arm in saved["arms"].items():
        assert arm["samples"] == SAMPLES[name], name
        assert arm["epochs"] == pytest.approx(STEPS * BATCH / SAMPLES[name], abs=0.01)
        assert [r["seed"] for r in arm["runs"]] == [0, 1]
        for r in arm["runs"]:
            assert r["steps"] == STEPS and r["global_batch_size"] == BATCH
            assert 0.0 <= r["eval"]["zeroshot"]["top1"] <= 1.0 and r["eval"]["retrieval"]["n"] == 12
        s = arm["summary"]["zeroshot/top1"]
        values = [r["eval"]["zeroshot"]["top1"] for r in arm["runs"]]
        assert s["n"] == 2 and s["mean"] == pytest.approx(sum(values) / 2)
    # Different seeds, different runs: the seed reaches the model.
    losses = [r["final_loss"] for r in saved["arms"]["raw"]["runs"]]
    assert losses[0] != losses[1]


def test_arms_are_the_real_stages_with_steps_switched(finished):
    out, pool, _, _ = finished
    exp = out / "experiment"
    uids = sorted(pool)
    copies, off = {uids_by_index(out)[i] for i in COPIES}, {uids_by_index(out)[i] for i in OFF_TARGET}
    shipped = {arm: _uids(exp / "arms" / arm / "shards") for arm in ARMS[1:]}
    assert shipped["clip"] == set(uids)
    assert len(shipped["clip+semdedup"] & copies) == 1 and off <= shipped["clip+semdedup"]
    assert not shipped["clip+target"] & off and copies <= shipped["clip+target"]
    assert shipped["clip+semdedup+target"] == shipped["clip+semdedup"] - off
    for arm in ARMS[1:]:
        for stage in ("target", "cap", "shards"):
            landed = json.loads((exp / "arms" / arm / stage / "_SUCCESS.json").read_text())
            counts = landed["counts"]
            assert landed["stage"] == stage and counts["in"] == counts["kept"] + counts["rejected"]
    # The switched-off semdedup still ran and counted; both semdedup outputs are shared by two arms.
    off_manifest = json.loads((exp / "semdedup-off" / "_SUCCESS.json").read_text())
    assert off_manifest["semdedup"] == {"enabled": False} and off_manifest["counts"]["rejected"] == 0
    on_manifest = json.loads((exp / "semdedup-on" / "_SUCCESS.json").read_text())
    assert on_manifest["counts"]["reasons"] == {"semantic_duplicate": 3}
    target_in = {arm: json.loads((exp / "arms" / arm / "target" / "_SUCCESS.json").read_text())["inputs"]["in"]["path"]
                 for arm in ARMS[1:]}
    assert target_in["clip"] == target_in["clip+target"] == str(exp / "semdedup-off")
    assert target_in["clip+semdedup"] == target_in["clip+semdedup+target"] == str(exp / "semdedup-on")


def uids_by_index(out: Path) -> list[str]:
    return [hashlib.sha256(f"{i:08d}".encode()).hexdigest()[:32] for i in range(N_POOL)]


def test_raw_shards_hold_every_downloaded_image_once(finished):
    out, pool, _, _ = finished
    raw = out / "experiment" / "raw_shards"
    tars = sorted(raw.glob("*.tar"))
    assert [t.name for t in tars] == ["00000.tar", "00001.tar", "00002.tar"]    # 24 samples, 10 a shard
    seen = {}
    for t in tars:
        members = _tar_members(t)
        for name, data in members.items():
            if name.endswith(".jpg"):
                uid = name[:-4]
                assert uid not in seen
                seen[uid] = (data, members[uid + ".txt"].decode())
                meta = json.loads(members[uid + ".json"])
                assert meta["clip_score"] is None and meta["query_id"] is None   # never scored or capped
    assert seen == pool
    assert json.loads((raw / "sizes.json").read_text()) == {"00000.tar": 10, "00001.tar": 10, "00002.tar": 4}
    landed = json.loads((raw / "_SUCCESS.json").read_text())
    assert landed["stage"] == "shards"
    assert landed["counts"] == {"in": N_POOL + 1, "kept": N_POOL, "rejected": 1,
                                "reasons": {"image_missing": 1}}


def test_card_gets_the_table_and_the_verdict(finished):
    out, _, results, _ = finished
    card = (out / "shards" / "README.md").read_text()
    assert card.count("<!-- witcurate:experiment -->") == 1
    section = card.split("<!-- witcurate:experiment -->")[1].split("<!-- /witcurate:experiment -->")[0]
    for title in ("raw: every downloaded image", "CLIP threshold", "CLIP threshold + semantic dedup",
                  "CLIP threshold + target filter", "CLIP threshold + both"):
        assert f"| {title} |" in section
    assert "zero-shot top-1" in section and "±" in section and "equal compute" in section
    assert card.index("witcurate:experiment") < card.index("## Config")
    assert results["table"] in card
    chosen = results["chosen"]
    assert chosen["arm"] in ARMS[1:]
    assert "The table chooses" in section and "The default in this run's config" in section
    agree = "it agrees" if chosen["arm"] == "clip+semdedup+target" else "does not agree"
    assert agree in section


def test_the_verdict_follows_the_numbers():
    from witcurate.trainer.verdict import card_markdown, choose

    def arm(mean, std=0.01):
        return {"title": "t", "samples": 10, "epochs": 1.0, "summary": {"zeroshot/top1": {"mean": mean, "std": std, "n": 3}}}
    results = {"arms": {"raw": arm(0.2), "clip": arm(0.30), "clip+semdedup": arm(0.29),
                        "clip+target": arm(0.36), "clip+semdedup+target": arm(0.35)},
               "default": {"source": "configs/demo.yaml", "semdedup": True, "target": True,
                           "arm": "clip+semdedup+target"}, "seeds": [0, 1, 2], "model": "m", "steps": 1,
               "batch_size": 1, "samples_seen": 1, "eval_dir": "e", "run": "r", "results_path": "p"}
    chosen = choose(results)
    assert chosen["effects"]["semdedup"] == {"differences": [-0.01, -0.01], "mean": -0.01, "helps": False}
    assert chosen["effects"]["target"]["helps"] and chosen["arm"] == "clip+target"
    assert chosen["vs_clip"]["in_std"] == pytest.approx(6.0) and chosen["beyond_2_std"]
    assert not chosen["default_agrees"]
    text = card_markdown({**results, "chosen": chosen, "table": ""})
    assert "does not help on this world" in text and "does not agree" in text


def test_rerun_skips_finished_runs_and_redoes_a_missing_one(finished):
    out, _, first, _ = finished
    log: list[str] = []
    again = run_experiment(str(out), seeds=2, steps=STEPS, progress=log.append)
    assert sum("already done, skipped" in m for m in log) == 2 * len(ARMS)
    assert any(m.startswith("[experiment] raw arm: [shards] already done") for m in log)
    # raw; semdedup (each arm finds its shared output done); target, cap, shards of each arm
    assert sum("] already done (" in m for m in log) == 1 + 4 + 3 * 4
    assert not any("[train]" in m for m in log)
    assert again["arms"] == first["arms"]

    os.remove(out / "experiment" / "runs" / "raw-seed1" / "result.json")
    log.clear()
    third = run_experiment(str(out), seeds=2, steps=STEPS, progress=log.append)
    assert sum("already done, skipped" in m for m in log) == 2 * len(ARMS) - 1
    assert any(m.startswith("[raw seed 1] [train]") for m in log)
    assert third["arms"]["raw"]["runs"][1]["final_loss"] == pytest.approx(
        first["arms"]["raw"]["runs"][1]["final_loss"], rel=1e-5)
    # Replacing the section keeps one copy of it.
    add_card_section(str(out / "shards"), "experiment", "x", "y")
    assert (out / "shards" / "README.md").read_text().count("<!-- witcurate:experiment -->") == 1


def test_batch_larger_than_an_arm_is_refused(finished):
    # On the finished experiment (its arms are found done): refused before anything is trained
    # or written, naming the batch that fits the smallest arm.
    out = finished[0]

    def state():
        return {p: p.stat().st_mtime_ns for p in (out / "experiment").rglob("*")}
    before = state()
    with pytest.raises(UserError, match="batch size 20 is larger than an arm") as refused:
        run_experiment(str(out), seeds=1, steps=1, batch_size=20, progress=lambda m: None)
    assert f"--batch-size {min(SAMPLES.values())} or less" in refused.value.hint
    assert state() == before
