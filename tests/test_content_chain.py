"""Fingerprints by content across the whole chain, the embedding steps (semdedup, target) included,
on a copy of the session's shared demo run (conftest.py `demo_run`): every input a stage reads
from the run is named by content, and a stage rerun that lands the same content redoes nothing
after it except the dataset card, whose shards ship unchanged so the trainer is skipped."""

from __future__ import annotations

import copy
import shutil

from witcurate.pipeline import fs
from witcurate.pipeline.audit import audit_run
from witcurate.pipeline.runner import load_manifest, run_stage
from witcurate.pipeline.stages import ORDER, get_stage


def _landed(out) -> dict[str, dict]:
    return {name: m for name in ORDER if (m := load_manifest(fs.join(str(out), name))) is not None}


def test_every_input_read_from_the_run_is_named_by_its_content(demo_run):
    out = str(demo_run.out)
    manifests = _landed(out)
    assert {"semdedup", "target", "cap", "shards"} <= set(manifests)
    inside = 0
    for name, manifest in manifests.items():
        assert len(manifest["content"]["hash"]) == 32, name
        for key, entry in manifest["inputs"].items():
            if fs.normalize(entry["path"]).startswith(out + "/"):
                inside += 1
                assert entry["fingerprint"].startswith("content:"), (name, key, entry)
    # the target stage reads the scorer's checkpoint file: named by that file's sha256
    checkpoint = manifests["target"]["inputs"].get("checkpoint")
    if checkpoint:
        assert checkpoint["fingerprint"].startswith("content:checkpoint.pt:sha256:")
    # score's embeddings, read by semdedup and target, are part of score's content
    assert "embeddings/*.parquet" in manifests["score"]["content"]["files"]
    assert inside >= 15


def _rerun_from(config, out: str, forced: str, after: list[str]) -> tuple[list[str], dict[str, dict]]:
    """`forced` rerun from scratch, then the stages after it as `witcurate run` would."""
    lines: list[str] = []
    results = {}
    for name in [forced] + after:
        stage = get_stage(name)
        results[name] = run_stage(stage, config, fs.join(out, name), stage.default_inputs(config, out),
                                  force=name == forced, progress=lines.append)
    return lines, results


def test_an_embedding_step_rerun_with_the_same_content_redoes_nothing_after_it(demo_run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(demo_run.out, out, symlinks=True)
    before = _landed(out)
    after = [n for n in ("target", "cap", "shards", "train") if n in before]
    lines, results = _rerun_from(demo_run.config, out, "semdedup", after)

    assert not results["semdedup"].get("skipped")
    assert results["semdedup"]["finished_at"] != before["semdedup"]["finished_at"]
    assert results["semdedup"]["content"]["hash"] == before["semdedup"]["content"]["hash"]
    for name in ("target", "cap"):
        assert results[name].get("skipped"), name
        assert any(line.startswith(f"[{name}] already done") for line in lines), name
    # the card reports every stage's landing, so the shards stage writes it again; the samples it
    # ships are the same, so its content and everything after it stay
    assert not results["shards"].get("skipped")
    assert results["shards"]["content"]["hash"] == before["shards"]["content"]["hash"]
    if "train" in results:
        assert results["train"].get("skipped")
    assert all(not a.problems for a in audit_run(out))


def test_an_embedding_step_that_keeps_other_rows_reruns_what_follows(demo_run, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(demo_run.out, out, symlinks=True)
    before = _landed(out)
    config = copy.deepcopy(demo_run.config)         # the shared run's config stays as it is
    # The demo keeps the clusters nearest to a target image; keep a fraction of them instead, one
    # far from the share it kept. (The world's URLs carry the session's port, so its uids, and
    # how many clusters the rule keeps, differ from session to session.)
    summary = before["target"]["target"]
    config.target.keep_fraction = 0.25 if summary["clusters_kept"] > 0.4 * summary["clusters"] else 0.9
    lines, results = _rerun_from(config, out, "target", ["cap"])

    assert results["target"]["counts"]["kept"] != before["target"]["counts"]["kept"]
    assert not results["cap"].get("skipped")
    assert results["cap"]["counts"]["in"] == results["target"]["counts"]["kept"]
