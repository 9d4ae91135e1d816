"""What state each stage of a run is in, read from the run directory alone.

A stage is `done` when its `_SUCCESS.json` reads; `failed` when it left a temporary or work
directory behind (`.tmp-STAGE`, `.work-STAGE`: an attempt that never landed), or its directory
exists without a readable manifest; `missing` when a later stage finished without it; otherwise
`not run`. The report shows every stage with its state and the rest of the run regardless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from witcurate.pipeline import fs
from witcurate.pipeline.runner import MANIFEST
from witcurate.pipeline.stages import ORDER

# Stages that produce a model rather than filter records (the runner exempts them from the
# accounting); the funnel shows what they produced instead of counts. Newer manifests say so
# themselves (`produces: model`); this list covers runs from before.
MODEL_STAGES = ("scorer", "train")

DONE, FAILED, MISSING, NOT_RUN = "done", "failed", "missing", "not run"


@dataclass
class StageState:
    name: str
    status: str
    note: str = ""                               # why it is not done, in words
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status == DONE

    @property
    def counts(self) -> dict[str, Any]:
        return self.manifest.get("counts", {})

    @property
    def is_model(self) -> bool:
        """A stage that produces a model: its manifest says so (`produces: model`), or, in a run
        from before manifests said it, it is one of the known model stages."""
        return self.manifest.get("produces") == "model" or self.name in MODEL_STAGES


def _read_manifest(stage_dir: str) -> tuple[dict[str, Any] | None, str]:
    path = fs.join(stage_dir, MANIFEST)
    if not fs.exists(path):
        return None, f"{MANIFEST} is missing"
    try:
        manifest = fs.read_json(path)
    except (OSError, ValueError) as e:
        return None, f"{MANIFEST} does not read: {type(e).__name__}"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("counts", {}), dict):
        return None, f"{MANIFEST} is not a stage manifest"
    return manifest, ""


def stage_state(out_root: str, name: str) -> StageState:
    """One stage's state, before looking at the stages around it (no `missing` yet)."""
    stage_dir = fs.join(out_root, name)
    leftovers = [d for d in (f".tmp-{name}", f".work-{name}") if fs.exists(fs.join(out_root, d))]
    if fs.exists(stage_dir):
        manifest, problem = _read_manifest(stage_dir)
        if manifest is not None:
            return StageState(name, DONE, "", manifest)
        return StageState(name, FAILED, f"{name}/ exists but {problem}: rerun the stage with --force")
    if leftovers:
        return StageState(name, FAILED, f"an attempt did not finish (it left {', '.join(leftovers)}): "
                                        "rerun the same command to resume it")
    return StageState(name, NOT_RUN)


def run_states(out_root: str, configured: list[str] | None = None) -> list[StageState]:
    """Every stage in pipeline order. A record-filtering stage that is absent while a later stage
    finished is `missing`; with the run's configured stage list (from the shards manifest), any
    configured stage absent is."""
    states = [stage_state(out_root, name) for name in ORDER]
    last_done = max((i for i, s in enumerate(states) if s.done), default=-1)
    for i, state in enumerate(states):
        if state.status != NOT_RUN:
            continue
        if configured is not None and state.name in configured:
            state.status, state.note = MISSING, "configured in run.stages but never finished"
        elif configured is None and i < last_done and not state.is_model:
            state.status, state.note = MISSING, "a later stage finished without it"
    return states


def run_config(out_root: str) -> dict[str, Any] | None:
    """The run's whole config as the shards stage saved it in manifest.json, if it got there."""
    path = fs.join(out_root, "shards", "manifest.json")
    try:
        config = fs.read_json(path).get("config") if fs.exists(path) else None
    except (OSError, ValueError, AttributeError):
        return None
    return config if isinstance(config, dict) else None
