"""The `scorer` and `train` stages under the runner: what lands in the stage directories, that
the scorer checkpoint loads as the score stage loads it, and that their manifests list the model
files they produced (they filter no records, so there is nothing to count)."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
import synth_shapes  # noqa: E402

from witcurate.config import Config  # noqa: E402
from witcurate.errors import InputError  # noqa: E402
from witcurate.pipeline.audit import audit_run  # noqa: E402
from witcurate.pipeline.runner import run_stage  # noqa: E402
from witcurate.pipeline.stages import get_stage  # noqa: E402
from witcurate.trainer.model import create_model  # noqa: E402

quiet = lambda msg: None  # noqa: E731


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    (root / "trusted").mkdir()
    synth_shapes.write_tar(str(root / "trusted" / "trusted-00000.tar"), 40, seed=1)
    synth_shapes.write_tar(str(root / "trusted" / "trusted-00001.tar"), 40, seed=2, start=40)
    (root / "shards").mkdir()
    synth_shapes.write_tar(str(root / "shards" / "00000.tar"), 40, seed=3)
    synth_shapes.write_tar(str(root / "shards" / "00001.tar"), 24, seed=4, start=40, corrupt=(2,))
    synth_shapes.write_zeroshot(str(root / "eval" / "zeroshot"), per_class=3)
    synth_shapes.write_tar(str(root / "eval" / "retrieval-00000.tar"), 16, seed=5)
    return root


def _config(world) -> Config:
    cfg = Config()
    cfg.scorer.trusted = str(world / "trusted" / "trusted-*.tar")
    cfg.scorer.epochs, cfg.scorer.batch_size, cfg.scorer.device = 2, 16, "cpu"
    cfg.train.epochs, cfg.train.batch_size, cfg.train.device, cfg.train.workers = 2, 16, "cpu", 0
    cfg.train.eval_dir = str(world / "eval")
    return cfg


def test_scorer_stage_trains_a_checkpoint_the_score_stage_can_load(world, tmp_path):
    cfg = _config(world)
    stage = get_stage("scorer")
    inputs = stage.default_inputs(cfg, str(tmp_path))
    assert inputs == {"trusted": cfg.scorer.trusted}
    manifest = run_stage(stage, cfg, str(tmp_path / "scorer"), inputs, progress=quiet)
    assert manifest["produces"] == "model" and "counts" not in manifest
    assert set(manifest["outputs"]) == {"checkpoint.pt", "metrics.jsonl"}
    assert manifest["checkpoint"] == "checkpoint.pt"
    train = manifest["train"]
    assert train["num_samples"] == 80 and train["steps"] == 10 and train["model"] == "witcurate-tiny"
    out = tmp_path / "scorer"
    assert manifest["outputs"]["checkpoint.pt"] == (out / "checkpoint.pt").stat().st_size
    assert not list(out.glob("*.parquet")) and not (out / "rejects").exists()
    assert audit_run(str(tmp_path))[0].problems == []
    # a plain state dict, loaded the way the score stage loads a local checkpoint
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert "logit_scale" in state and not any(k.startswith("module.") for k in state)
    model, _, preprocess, tokenizer = create_model("witcurate-tiny", str(out / "checkpoint.pt"))
    assert torch.equal(model.logit_scale.detach(), state["logit_scale"])
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, 11))
    assert not (tmp_path / ".work-scorer").exists()
    # the same config and inputs again: skipped
    again = run_stage(stage, cfg, str(tmp_path / "scorer"), inputs, progress=quiet)
    assert again.get("skipped") is True


def test_scorer_stage_without_a_trusted_set_says_what_to_set(tmp_path):
    stage = get_stage("scorer")
    with pytest.raises(InputError, match="trusted"):
        run_stage(stage, Config(), str(tmp_path / "scorer"), {"trusted": ""}, progress=quiet)


def test_train_stage_trains_on_the_shards_and_evaluates(world, tmp_path):
    cfg = _config(world)
    stage = get_stage("train")
    out_root = str(tmp_path)
    inputs = stage.default_inputs(cfg, out_root)
    assert inputs == {"in": os.path.join(out_root, "shards"), "eval": cfg.train.eval_dir}
    cfg.train.data = str(world / "shards" / "{00000..00001}.tar")    # what --data sets
    assert stage.default_inputs(cfg, out_root)["in"] == cfg.train.data
    inputs["in"] = str(world / "shards")                               # a directory works too
    lines = []
    manifest = run_stage(stage, cfg, str(tmp_path / "train"), inputs, progress=lines.append)
    assert manifest["produces"] == "model" and "counts" not in manifest
    assert set(manifest["outputs"]) == {"model.pt", "checkpoint.pt", "metrics.jsonl", "eval.json"}
    assert manifest["train"]["steps"] == 8                       # 64 samples // 16, 2 epochs
    assert manifest["samples_per_second"] > 0
    ev = manifest["eval"]
    assert ev["zeroshot"]["n"] == 12 and ev["zeroshot"]["classes"] == 4
    assert 0.0 <= ev["zeroshot"]["top1"] <= 1.0 and ev["zeroshot"]["top5"] == 1.0
    assert ev["retrieval"]["n"] == 16
    assert set(ev["retrieval"]) >= {f"{d}_R@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}
    out = tmp_path / "train"
    assert json.loads((out / "eval.json").read_text()) == ev
    create_model("witcurate-tiny", str(out / "model.pt"))
    create_model("witcurate-tiny", str(out / "checkpoint.pt"))   # the resumable one loads too
    assert any("samples/s" in line for line in lines)
    assert any("zero-shot top1" in line for line in lines)


def test_train_stage_resumes_an_interrupted_run_from_its_work_dir(world, tmp_path):
    """A kill mid-training leaves the work dir; the rerun continues from its checkpoint, unless
    the settings changed in between, in which case it starts over."""
    from witcurate.pipeline import train as train_stage
    from witcurate.pipeline.runner import StageContext
    from witcurate.trainer.train import TrainArgs

    cfg = _config(world)
    args = TrainArgs.from_section(cfg.train, seed=cfg.run.seed, eval_dir="", checkpoint_every=2)
    data = str(world / "shards" / "*.tar")
    ctx = StageContext("train", cfg, str(tmp_path), str(tmp_path / ".tmp-train"),
                       str(tmp_path / ".work-train"), {"in": str(world / "shards")}, progress=quiet)
    killed = train_stage.train_in_work_dir(ctx, TrainArgs(**dict(vars(args), stop_at_step=5)), data)
    assert killed["steps"] == 5 and killed["stopped_early"]
    done = train_stage.train_in_work_dir(ctx, args, data)
    assert done["resumed_from"] == 5 and done["steps"] == 8
    changed = train_stage.train_in_work_dir(ctx, TrainArgs(**dict(vars(args), lr=5e-4)), data)
    assert changed["resumed_from"] is None and changed["steps"] == 8
