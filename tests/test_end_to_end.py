"""The whole chain on a tiny demo world: dump -> queries -> ... -> shards -> train, offline.

The run is the session's shared one (conftest.py `demo_run`), also the reference of the
portability and kill-and-resume tests."""

import json

import pytest
import webdataset as wds

from witcurate.config import load_config
from witcurate.demo.hooks import demo_hooks
from witcurate.pipeline.audit import audit_run
from witcurate.pipeline.matcher import QueryMatcher
from witcurate.pipeline.run import run_all
from witcurate.pipeline.stages import ORDER


@pytest.fixture(scope="module")
def tiny_run(demo_run):
    """The session's shared run of the small demo world (conftest.py, shared_demo.py)."""
    return demo_run.config, demo_run.out, demo_run.log


def test_every_stage_ran_and_balances(tiny_run):
    cfg, out, _ = tiny_run
    audits = {a.stage: a for a in audit_run(str(out))}
    assert set(cfg.run.stages) <= set(audits) and set(cfg.run.stages) <= set(ORDER)
    for name, a in audits.items():
        assert a.problems == [], (name, a.problems)
    assert audits["download"].manifest["counts"]["rejected"] > 0          # the host's faults


def test_shards_open_with_webdataset_and_captions_match_queries(tiny_run):
    _, out, _ = tiny_run
    manifest = json.loads((out / "shards" / "manifest.json").read_text())
    urls = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    assert urls and len(urls) == len(manifest["shards"])
    matcher = QueryMatcher(json.loads((out / "queries" / "queries.json").read_text()))
    n = 0
    for image, caption, meta in wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("jpg;png", "txt", "json"):
        assert image.size[0] > 0 and meta["caption"] == caption
        assert matcher.match(caption), caption
        n += 1
    shards_kept = json.loads((out / "shards" / "_SUCCESS.json").read_text())["counts"]["kept"]
    assert n == shards_kept > 0


def test_rerun_skips_every_stage(tiny_run):
    cfg, out, _ = tiny_run
    log = []
    manifests = run_all(cfg, str(out), [], progress=log.append, hooks=demo_hooks(cfg))
    assert all(m.get("skipped") for m in manifests)


def test_training_reports_eval(tiny_run):
    _, out, _ = tiny_run
    evals = json.loads((out / "train" / "_SUCCESS.json").read_text())["eval"]
    assert evals  # zero-shot and retrieval numbers exist


def test_every_pool_url_is_accounted_for_against_the_ground_truth(tiny_run):
    _, out, _ = tiny_run
    report = json.loads((out / "demo_truth.json").read_text())
    assert report["unaccounted"] == 0
    fates = report["fates"]
    assert set(fates["http_404"]) == {"download:http_404"}
    assert set(fates["redirect_private"]) == {"download:private_address"}
    assert all(f.startswith("ingest:") for f in fates["junk"])
    assert report["clip_filter"]["pairs_scored"] > 0
    # the clean pairs the CLIP filter cost, as the fates count them
    clip = report["clip_filter"]
    assert clip["clean_rejected"] == fates["clean"].get("score:clip_score_below", 0)
    assert clip["clean_scored"] >= clip["clean_rejected"] and clip["clean_scored"] > 0
    assert (out / "shards" / "card" / "clip_pr_curve.png").exists()


def test_the_truth_report_s_target_curve_replays_what_the_stage_did(tiny_run):
    # The card's curve over the kept clusters is the stage's own rule replayed (its k-means fitted
    # on the pool's saved embeddings, as the stage fits it): at the stage's settings it must
    # remove exactly what the stage removed.
    _, out, _ = tiny_run
    target = json.loads((out / "demo_truth.json").read_text())["target"]
    manifest = json.loads((out / "target" / "_SUCCESS.json").read_text())
    assert target["fit"] == manifest["target"]["fit"] == "pool"
    at_stage = [p for p in target["curves"][str(manifest["config"]["target"]["clusters"])]
                if p["keep_fraction"] == manifest["config"]["target"]["keep_fraction"]]
    assert len(at_stage) == 1
    for key in ("removed", "off_target_removed", "clean_removed", "off_target_at_stage", "clean_at_stage"):
        assert at_stage[0][key] == target[key], key
    assert target["removed"] == manifest["counts"]["reasons"].get("off_target_cluster", 0)
