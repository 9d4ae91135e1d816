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
from witcurate.pipeline.runner import RECORDS, StageContext, StageResult


@dataclass(frozen=True)
class Option:
    """A stage-specific command-line flag that sets one config key."""
    flag: str            # e.g. "--threshold"
    key: str             # e.g. "score.threshold"
    help: str
    type: Any = str


class BaseStage:
    name: ClassVar[str]
    sections: ClassVar[tuple[str, ...]] = ()
    # Named inputs; "in" is the main one. Each becomes a flag (--in, --queries, --images).
    inputs: ClassVar[tuple[str, ...]] = ("in",)
    options: ClassVar[tuple[Option, ...]] = ()
    # Columns the main input ("in") must carry; the runner checks before running.
    input_schema: ClassVar[pa.Schema | None] = None
    # RECORDS: kept + rejected parts that balance against the input; MODEL: model files only.
    produces: ClassVar[str] = RECORDS
    # Globs of its own files that its content digest leaves out (pipeline/content.py): files no
    # stage reads, or whose content its kept rows already fix.
    content_skips: ClassVar[tuple[str, ...]] = ()
    # Stages of the run whose manifests it reads besides its inputs (the dataset card): their
    # reruns rerun it.
    reports_on: ClassVar[tuple[str, ...]] = ()

    @property
    def help(self) -> str:
        return SUMMARIES[self.name]

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        """Where this stage's inputs are inside a full run under `out_root`."""
        raise NotImplementedError

    def run(self, ctx: StageContext) -> StageResult:
        raise NotImplementedError


def stage_dir(out_root: str, name: str) -> str:
    return fs.join(out_root, name)


def last_run(config: Config, out_root: str, *names: str) -> str:
    """The directory of the first of `names` that run.stages includes (else the last name): where
    a stage's input is when the stages between it and score may be left out of a run."""
    chosen = next((n for n in names if n in config.run.stages), names[-1])
    return stage_dir(out_root, chosen)


REGISTRY: dict[str, str] = {
    "queries": "witcurate.queries.stage:QueriesStage",
    "ingest": "witcurate.pipeline.ingest:IngestStage",
    "match": "witcurate.pipeline.match:MatchStage",
    "balance": "witcurate.pipeline.balance:BalanceStage",
    "download": "witcurate.pipeline.download:DownloadStage",
    "dedupe": "witcurate.pipeline.dedupe:DedupeStage",
    "scorer": "witcurate.pipeline.scorer:ScorerStage",
    "score": "witcurate.pipeline.score:ScoreStage",
    "semdedup": "witcurate.pipeline.semdedup:SemdedupStage",
    "target": "witcurate.pipeline.target:TargetStage",
    "cap": "witcurate.pipeline.cap:CapStage",
    "shards": "witcurate.pipeline.shards:ShardsStage",
    "train": "witcurate.pipeline.train:TrainStage",
}

ORDER = list(REGISTRY)

# What each stage does, one line each: `witcurate --help` lists them without importing the
# stage modules (which load Beam, torch and img2dataset).
SUMMARIES: dict[str, str] = {
    "queries": "build the query list from a Wikipedia dump, page views and WordNet "
               "(or --import a MetaCLIP metadata.json)",
    "ingest": "read candidate pairs (parquet/csv/tsv/jsonl/WAT), normalise, validate, dedupe URLs",
    "match": "find the queries each caption contains (Aho-Corasick, whole tokens, case-sensitive)",
    "balance": "MetaCLIP balancing before download: keep a pair with prob. 1 - prod(1 - min(1, t/count))",
    "download": "fetch, resize and encode images with img2dataset shard by shard, refuse private "
                "addresses, check and hash every image; every URL ends kept or rejected with a reason",
    "dedupe": "remove exact duplicates (sha256) and near duplicates (perceptual-hash Hamming distance, "
              "LSH banding), keeping one survivor per group; optionally drop images that duplicate "
              "an evaluation set",
    "scorer": "train the bootstrap CLIP scorer on a trusted clean image-text set (WebDataset tars)",
    "score": "CLIP-score image-text pairs with an open_clip model; keep by threshold or top fraction",
    "semdedup": "semantic dedup (SemDeDup) on the score stage's image embeddings: k-means, then "
                "pairs above a cosine threshold within a cluster, one survivor per group",
    "target": "target-distribution filter (DataComp's image-based filter): keep the pairs whose "
              "image cluster is nearest to a target set's embeddings",
    "cap": "keep at most per_query pairs per query (the rarest query a pair matches), best scores first",
    "shards": "write the final WebDataset shards, Parquet sidecars, manifest.json and the dataset card",
    "train": "train a CLIP model on the shards with the bundled trainer and evaluate it",
}


def get_stage(name: str) -> BaseStage:
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)()
