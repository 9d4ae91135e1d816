"""What every stage declares (its inputs, options and config sections), and the registry of them.

A stage is a small class: the CLI builds its subcommand from the declarations, `run` wires the
stages' default inputs together, and the runner enforces the contracts around `run(ctx)`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.runner import StageContext, StageResult


@dataclass(frozen=True)
class Option:
    """A stage-specific command-line flag that sets one config key."""
    flag: str            # e.g. "--threshold"
    key: str             # e.g. "score.threshold"
    help: str
    type: Any = str


class BaseStage:
    name: ClassVar[str]
    help: ClassVar[str]
    sections: ClassVar[tuple[str, ...]] = ()
    # Named inputs; "in" is the main one. Each becomes a flag (--in, --queries, --images).
    inputs: ClassVar[tuple[str, ...]] = ("in",)
    options: ClassVar[tuple[Option, ...]] = ()
    # Columns the main input ("in") must carry; the runner checks before running.
    input_schema: ClassVar[pa.Schema | None] = None

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        """Where this stage's inputs are inside a full run under `out_root`."""
        raise NotImplementedError

    def run(self, ctx: StageContext) -> StageResult:
        raise NotImplementedError


def stage_dir(out_root: str, name: str) -> str:
    return fs.join(out_root, name)


REGISTRY: dict[str, str] = {
    "queries": "witcurate.queries.stage:QueriesStage",
    "ingest": "witcurate.pipeline.ingest:IngestStage",
    "match": "witcurate.pipeline.match:MatchStage",
    "balance": "witcurate.pipeline.balance:BalanceStage",
    "download": "witcurate.pipeline.download:DownloadStage",
    "dedupe": "witcurate.pipeline.dedupe:DedupeStage",
    "scorer": "witcurate.pipeline.scorer:ScorerStage",
    "score": "witcurate.pipeline.score:ScoreStage",
    "cap": "witcurate.pipeline.cap:CapStage",
    "shards": "witcurate.pipeline.shards:ShardsStage",
    "train": "witcurate.pipeline.train:TrainStage",
}

ORDER = list(REGISTRY)


def get_stage(name: str) -> BaseStage:
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
