"""The curation experiment on a tiny synthetic run: both arms train the same steps at the same
batch size, results and the card section are written, and a rerun resumes instead of retraining."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from synth_shapes import write_tar, write_zeroshot

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import UserError
from witcurate.pipeline.card import add_card_section
from witcurate.pipeline.tar_writer import write_tar as write_wds_tar
from witcurate.trainer.experiment import run_experiment

N_POOL = 24          # images the download stage kept
N_CURATED = 16       # of which the curated shards ship these
STEPS = 3
BATCH = 8


def _tar_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def make_tiny_run(out: Path) -> dict[str, tuple[bytes, str]]:
    """OUT/download (rows + images tar; one row's image is missing), OUT/shards (manifest, card)
    and an eval set."""
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
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.DOWNLOADED), out / "download" / "part-00000.parquet")
    (out / "download" / "_SUCCESS.json").write_text(json.dumps({
        "stage": "download", "fingerprint": "fp-dl",
        "counts": {"in": N_POOL + 1, "kept": N_POOL + 1, "rejected": 0, "reasons": {}}}))

    eval_dir = out / "eval"
    write_zeroshot(str(eval_dir / "zeroshot"), per_class=2, size=64)
    write_tar(str(eval_dir / "retrieval-00000.tar"), 12, seed=9, size=64)

    shards = out / "shards"
    shards.mkdir()
    curated = sorted(pool)[:N_CURATED]
    summary = write_wds_tar(str(shards / "00000.tar"),
                            [(u, {"jpg": pool[u][0], "txt": pool[u][1].encode()}) for u in curated])
    cfg = Config()
    cfg.train.batch_size = BATCH
    cfg.train.workers = 0
    cfg.train.warmup_steps = 1
    cfg.train.eval_dir = str(eval_dir)
    cfg.shards.samples_per_shard = 10
    manifest = {"samples_per_shard": 10, "config": cfg.to_dict(),
                "shards": [{"tar": "00000.tar", "samples": summary.samples, "sha256": summary.sha256}],
                "totals": {"samples": summary.samples}}
    (shards / "manifest.json").write_text(json.dumps(manifest))
    (shards / "README.md").write_text("# card\n\n## Summary\n\ntext\n\n## Config\n\nyaml\n")
    return pool


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "run"
    pool = make_tiny_run(out)
    log: list[str] = []
    results = run_experiment(str(out), seeds=2, steps=STEPS, progress=log.append)
    return out, pool, results, log


def test_both_arms_train_the_same_steps_and_batch(finished):
    out, pool, results, _ = finished
    saved = json.loads((out / "experiment" / "results.json").read_text())
    assert saved["steps"] == STEPS and saved["batch_size"] == BATCH and saved["seeds"] == [0, 1]
    assert set(saved["arms"]) == {"curated", "raw"}
    assert saved["arms"]["curated"]["samples"] == N_CURATED
    assert saved["arms"]["raw"]["samples"] == N_POOL
    for arm in saved["arms"].values():
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


def test_raw_arm_is_the_shards_stage_and_rejects_what_it_cannot_ship(finished):
    out, _, _, _ = finished
    landed = json.loads((out / "experiment" / "raw_shards" / "_SUCCESS.json").read_text())
    assert landed["stage"] == "shards"
    assert landed["counts"] == {"in": N_POOL + 1, "kept": N_POOL, "rejected": 1,
                                "reasons": {"image_missing": 1}}


def test_card_gets_the_table(finished):
    out, _, results, _ = finished
    card = (out / "shards" / "README.md").read_text()
    assert card.count("<!-- witcurate:experiment -->") == 1
    section = card.split("<!-- witcurate:experiment -->")[1].split("<!-- /witcurate:experiment -->")[0]
    assert "curated (16 samples)" in section and "raw (24 samples)" in section
    assert "zero-shot top-1" in section and "±" in section
    assert card.index("witcurate:experiment") < card.index("## Config")
    assert results["table"] in card


def test_rerun_skips_finished_runs_and_redoes_a_missing_one(finished):
    out, _, first, _ = finished
    log: list[str] = []
    again = run_experiment(str(out), seeds=2, steps=STEPS, progress=log.append)
    assert sum("already done, skipped" in m for m in log) == 4
    assert any(m.startswith("[experiment] raw arm: [shards] already done") for m in log)
    assert not any("[train]" in m for m in log)
    assert again["arms"] == first["arms"]

    os.remove(out / "experiment" / "runs" / "raw-seed1" / "result.json")
    log.clear()
    third = run_experiment(str(out), seeds=2, steps=STEPS, progress=log.append)
    assert sum("already done, skipped" in m for m in log) == 3
    assert any(m.startswith("[raw seed 1] [train]") for m in log)
    assert third["arms"]["raw"]["runs"][1]["final_loss"] == pytest.approx(
        first["arms"]["raw"]["runs"][1]["final_loss"], rel=1e-5)
    # Replacing the section keeps one copy of it.
    add_card_section(str(out / "shards"), "experiment", "x", "y")
    assert (out / "shards" / "README.md").read_text().count("<!-- witcurate:experiment -->") == 1


def test_batch_larger_than_an_arm_is_refused(tmp_path):
    out = tmp_path / "run"
    make_tiny_run(out)
    with pytest.raises(UserError, match="batch"):
        run_experiment(str(out), seeds=1, steps=1, batch_size=20, progress=lambda m: None)
    shutil.rmtree(out / "experiment")
