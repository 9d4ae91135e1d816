"""One small demo world, and one finished run of it, shared by the tests that need them.

Generating a world and running the whole chain on it are the slowest set-ups of the suite.
test_end_to_end (the chain and its card), test_chain_portability (the in-process reference
the other runs must equal) and test_kill_resume (the shards a killed run must reproduce) all
use the same world and the same run configuration, so a session makes both once (conftest's
`demo_world` and `demo_run` fixtures) and every test reads them without changing them.

The world is small (150 candidates, 40 trusted pairs, 10 eval images) and the run quick: no
WordNet (86k extra queries that cost seconds per run and are tested in the queries tests), one
scorer epoch, and the top 70% kept by score, since a scorer trained for seconds has no
calibrated threshold. Download shards of 30 URLs give five shards, so a kill can land between
finished and unfinished ones; a 1 s timeout keeps the host's 4 s slow faults quick; one
download process fetches them in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from witcurate.config import Config, load_config
from witcurate.demo import crawl
from witcurate.demo.hosts import allow_private

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "demo.yaml"
POOL, TRUSTED, EVAL = 150, 40, 10


@dataclass(frozen=True)
class DemoWorld:
    """A generated demo world and the port its image host serves it on (its URLs name it)."""
    root: Path
    port: int

    def overrides(self) -> list[str]:
        """The shared run's settings on top of configs/demo.yaml, as `section.key=value`."""
        w, port = self.root, self.port
        return [
            f"demo.root={w}", f"demo.port={port}", f"demo.pool_size={POOL}",
            f"demo.trusted_size={TRUSTED}", f"demo.eval_size={EVAL}",
            f"queries.dumps=[{w}/dump/enwiki-demo-pages-articles-multistream.xml.bz2]",
            f"queries.pageviews=['{w}/pageviews/pageviews-*.gz']",
            "queries.wordnet=false",
            f"ingest.sources=[{','.join(crawl.source_globs(str(w)))}]",   # listed, WARC and WAT
            f"download.allow_private={allow_private('127.0.0.1', port)}",     # the demo's 8 hosts
            "download.urls_per_shard=30", "download.processes_count=1", "download.timeout=1",
            f"scorer.trusted={w}/trusted/*.tar", "scorer.epochs=1",
            "score.threshold=null", "score.top_fraction=0.7",
            "target.enabled=true",                 # off in the demo config; the tests run it
            f"target.images={w}/trusted/trusted-*.tar",
            "shards.samples_per_shard=8",          # several tars from the few pairs kept
            f"train.eval_dir={w}/eval", "train.epochs=1",
        ]

    def config(self, extra: list[str] | None = None) -> Config:
        return load_config(str(CONFIG), self.overrides() + list(extra or []))

    def cli_args(self) -> list[str]:
        """The same settings as `witcurate --config configs/demo.yaml --set ...` arguments."""
        return ["--config", "configs/demo.yaml", *[a for v in self.overrides() for a in ("--set", v)]]


@dataclass
class DemoRun:
    """`witcurate run` of the shared world, every stage, in this process."""
    config: Config
    out: Path
    log: list[str] = field(default_factory=list)
    manifests: dict[str, dict] = field(default_factory=dict)

    def reference_seconds(self) -> float:
        """How long the stages took here: the yardstick for a run's time limit."""
        return sum(m.get("wall_seconds", 0.0) for m in self.manifests.values())


def make_world(root: Path, port: int) -> DemoWorld:
    from witcurate.demo.world import generate_world
    world = DemoWorld(root, port)
    generate_world(world.config().demo, str(root), progress=lambda m: None)
    return world


def make_run(world: DemoWorld, out: Path) -> DemoRun:
    from witcurate.demo.hooks import demo_hooks
    from witcurate.pipeline.run import run_all
    run = DemoRun(world.config(), out)
    manifests = run_all(run.config, str(out), [], progress=run.log.append, hooks=demo_hooks(run.config))
    run.manifests = {m["stage"]: m for m in manifests}
    return run
