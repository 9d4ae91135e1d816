"""The experiment's arms: the curation steps after the CLIP score switched on and off, each arm
built by the real stages (semdedup, target, cap, shards) on a finished run's score output.

    raw                    every image the download stage kept: the shards stage on the download
                           output (no dedupe, no CLIP filter, no cap)
    clip                   the CLIP threshold, then cap (semdedup and target switched off)
    clip+semdedup          + semantic dedup
    clip+target            + the target-distribution filter
    clip+semdedup+target   both

Everything upstream (queries .. score, the scorer) is the run's own and is not redone. A switched
off step still runs and counts (every pair passes), as in a run with it off. The two semdedup
outputs are shared by the arms that need them; every other stage has a directory per arm:

    OUT/experiment/semdedup-on/, semdedup-off/
    OUT/experiment/arms/ARM/{target,cap,shards}/
    OUT/experiment/raw_shards/

Each is a stage under the runner, so a rerun skips what is done and redoes what changed.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from witcurate.config import Config
from witcurate.errors import InputError
from witcurate.pipeline import fs

RAW = "raw"
CLIP = "clip"
# arm -> (semdedup on, target on)
SWITCHES: dict[str, tuple[bool, bool]] = {
    CLIP: (False, False),
    "clip+semdedup": (True, False),
    "clip+target": (False, True),
    "clip+semdedup+target": (True, True),
}
ARMS = (RAW, *SWITCHES)
TITLES = {
    RAW: "raw: every downloaded image",
    CLIP: "CLIP threshold",
    "clip+semdedup": "CLIP threshold + semantic dedup",
    "clip+target": "CLIP threshold + target filter",
    "clip+semdedup+target": "CLIP threshold + both",
}


def arm_of(semdedup: bool, target: bool) -> str:
    """The arm whose switches are these."""
    return next(arm for arm, sw in SWITCHES.items() if sw == (semdedup, target))


def arm_config(config: Config, semdedup: bool, target: bool) -> Config:
    """`config` with the two embedding steps switched as the arm says (their other settings as
    the run has them)."""
    cfg = copy.deepcopy(config)
    cfg.semdedup.enabled = semdedup
    cfg.target.enabled = target
    return cfg


def _tagged(progress: Callable[[str], None], arm: str) -> Callable[[str], None]:
    return lambda msg: progress(f"[experiment] {arm} arm: {msg}")


def build_arm(run_dir: str, exp_dir: str, arm: str, config: Config, beam_args: list[str],
              progress: Callable[[str], None] = print) -> str:
    """Run (or skip, when done) the stages of one filtered arm; returns its shards directory."""
    from witcurate.pipeline.cap import CapStage
    from witcurate.pipeline.runner import run_stage
    from witcurate.pipeline.semdedup import SemdedupStage
    from witcurate.pipeline.shards import ShardsStage
    from witcurate.pipeline.target import TargetStage

    score_dir = fs.join(run_dir, "score")
    if not fs.exists(fs.join(score_dir, "_SUCCESS.json")):
        raise InputError(f"{score_dir} has no _SUCCESS.json", "the arms start from the run's score stage: "
                         "run the pipeline through score first")
    semdedup_on, target_on = SWITCHES[arm]
    cfg = arm_config(config, semdedup_on, target_on)
    say = _tagged(progress, arm)
    semdedup_dir = fs.join(exp_dir, f"semdedup-{'on' if semdedup_on else 'off'}")
    run_stage(SemdedupStage(), cfg, semdedup_dir, {"in": score_dir, "score": score_dir}, beam_args, progress=say)
    previous = semdedup_dir
    arm_dir = fs.join(exp_dir, "arms", arm)
    for stage in (TargetStage(), CapStage(), ShardsStage()):
        inputs = {**stage.default_inputs(cfg, run_dir), "in": previous}
        previous = fs.join(arm_dir, stage.name)
        run_stage(stage, cfg, previous, inputs, beam_args, progress=say)
    return previous


def raw_shards(download_dir: str, out_dir: str, config: Config,
               progress: Callable[[str], None] = print) -> dict[str, Any]:
    """The shards stage itself, run on the download stage's output: every image it kept, in the
    curated shards' layout (uid order, cut every shards.samples_per_shard). Returns its manifest.

    The score and cap columns are absent from those rows, so the raw samples ship without a CLIP
    score or an assigned query. Like any stage it is skipped when already done from the same
    download output and settings, and a row that cannot be shipped (its image missing, a uid seen
    twice) is a reject with its reason in OUT/experiment/raw_shards/rejects/.
    """
    from witcurate.pipeline.runner import run_stage
    from witcurate.pipeline.shards import MANIFEST_NAME, ShardsStage

    if not fs.exists(fs.join(download_dir, "_SUCCESS.json")):
        raise InputError(f"{download_dir} has no _SUCCESS.json", "run the pipeline first (`make dataset`)")
    landed = run_stage(ShardsStage(), config, out_dir, {"in": download_dir, "images": download_dir},
                       [], progress=_tagged(progress, RAW))
    if landed["counts"]["kept"] == 0:
        raise InputError(f"no samples from {download_dir}", "the raw arm needs the download stage's output")
    return fs.read_json(fs.join(out_dir, MANIFEST_NAME))
