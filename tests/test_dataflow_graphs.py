"""Every Beam stage's graph builds for Dataflow, offline: nothing is submitted, no network.

Each stage runs its own driver code on small real inputs with DataflowRunner options; where it
would run its pipeline, the pipeline is instead checked by `beam_io.check_graph` (Dataflow's
graph rewrites, translation to the proto the service receives, every pickled DoFn/CombineFn
loaded back as a worker would, --setup_file present). A broken transform, an unpicklable DoFn
or a missing setup file fails here rather than minutes into a paid job.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import apache_beam as beam
import pytest

from witcurate.config import load_config
from witcurate.pipeline import beam_io, fs
from witcurate.pipeline.runner import StageContext
from witcurate.pipeline.stages import ORDER, get_stage

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_DUMP = ROOT / "tests" / "fixtures" / "wikipedia" / \
    "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
# Beam validates these at pipeline construction: project ids and bucket names must look real.
DATAFLOW_ARGS = ["--runner=DataflowRunner", "--project=witcurate-test", "--region=us-central1",
                 "--temp_location=gs://witcurate-test-bucket/tmp", f"--setup_file={ROOT / 'setup.py'}"]
NOT_BEAM = {"scorer", "train"}      # plain torch jobs: the demo's bootstrap scorer and the trainer


class GraphBuilt(Exception):
    """Raised in place of running a pipeline, once its graph has been checked."""


@pytest.fixture
def dry_run(monkeypatch):
    """Pipelines built while this is active are checked and captured instead of run."""
    built = []

    def run(self, test_runner_api="AUTO"):
        from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
        assert isinstance(self.runner, DataflowRunner), type(self.runner)
        built.append(beam_io.check_graph(self))
        raise GraphBuilt()

    monkeypatch.setattr(beam.Pipeline, "run", run)
    return built


@pytest.fixture(scope="module")
def run_dir(beam_chain_run):
    """Real stage outputs (ingest .. cap) from a small local run, to build the graphs on (the
    session's in-process beam_chain run, which the portability tests compare against)."""
    return beam_chain_run[0]


def stage_setup(name: str, root: str):
    d = lambda s: fs.join(root, s)  # noqa: E731
    queries = d("queries")
    overrides = {
        "queries": [f"queries.dumps=[{FIXTURE_DUMP}]", "queries.wordnet=false"],
        "score": ["score.model=witcurate-tiny", "score.pretrained=''", "score.threshold=0.2"],
        "semdedup": ["semdedup.clusters=4", "semdedup.sample=100"],
        "target": ["target.enabled=true", f"target.embeddings={_embeddings(root)}", "target.clusters=4",
                   "target.sample=100"],
    }.get(name, [])
    inputs = {
        "queries": {"dump0": str(FIXTURE_DUMP)},
        "ingest": {"source0": d("sources/candidates.parquet")},
        "match": {"in": d("ingest"), "queries": queries},
        "balance": {"in": d("match")},
        "download": {"in": d("balance")},
        "dedupe": {"in": d("download")},
        "score": {"in": d("dedupe"), "images": d("download")},
        "semdedup": {"in": d("score"), "score": d("score")},
        "target": {"in": d("score"), "score": d("score")},
        "cap": {"in": d("score"), "query_counts": d("balance"), "queries": queries},
        "shards": {"in": d("cap"), "images": d("download")},
    }[name]
    return load_config(None, overrides), inputs


def _embeddings(root: str) -> str:
    """Image embeddings beside the fake score rows (as the score stage saves them) and a target
    set; returns the target set's path."""
    import numpy as np
    import pyarrow.parquet as pq
    from witcurate.pipeline.score_outputs import embeddings_table
    from witcurate.pipeline.tables import read_table
    uids = read_table(fs.join(root, "score"), ["uid"]).column("uid").to_pylist()
    vectors = np.random.default_rng(0).normal(size=(len(uids) + 8, 16)).astype(np.float16)
    fs.makedirs(fs.join(root, "score", "embeddings"))
    pq.write_table(embeddings_table(uids, vectors[:len(uids)], vectors[:len(uids)]),
                   fs.join(root, "score", "embeddings", "part-00000.parquet"))
    np.save(fs.join(root, "targets.npy"), vectors[len(uids):])
    return fs.join(root, "targets.npy")


BEAM_STAGES = [n for n in ORDER if n not in NOT_BEAM]


def test_the_beam_stage_list_is_complete():
    assert set(ORDER) - set(BEAM_STAGES) == NOT_BEAM
    assert BEAM_STAGES == ["queries", "ingest", "match", "balance", "download", "dedupe",
                           "score", "semdedup", "target", "cap", "shards"]


@pytest.mark.parametrize("name", BEAM_STAGES)
def test_stage_graph_builds_for_dataflow(name, run_dir, dry_run, tmp_path):
    config, inputs = stage_setup(name, run_dir)
    ctx = StageContext(name, config, str(tmp_path), str(tmp_path / "tmp"), str(tmp_path / "work"),
                       inputs, list(DATAFLOW_ARGS), progress=lambda msg: None)
    (tmp_path / "tmp" / "rejects").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    with pytest.raises(GraphBuilt):
        get_stage(name).run(ctx)
    assert len(dry_run) == 1
    proto = dry_run[0]
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert any(n.startswith("Write") or "/Write" in n for n in names), sorted(names)[:20]
    # Every step runs in the one Docker environment the container image / setup file provides.
    envs = {t.environment_id for t in proto.components.transforms.values() if t.environment_id}
    assert envs and all(proto.components.environments[e].urn for e in envs)


def _tiny_pipeline(args: list[str], fn: beam.DoFn) -> beam.Pipeline:
    p = beam_io.make_pipeline(args)
    _ = p | beam.Create([1, 2, 3]) | beam.ParDo(fn)
    return p


class HoldsALiveReader(beam.DoFn):
    """Driver-only state: a half-consumed generator (an open reader) cannot travel to a worker.
    (Beam's pickler recreates locks, so a lock is not the example.)"""

    def __init__(self):
        self.reader = (line for line in ["a", "b"])

    def process(self, x):
        yield x


def _refuse_on_worker():
    raise ImportError("module only present on the driver")


class BreaksOnWorker(beam.DoFn):
    """Pickles on the driver but cannot be rebuilt on a worker."""

    def __reduce__(self):
        return (_refuse_on_worker, ())

    def process(self, x):
        yield x


class Fine(beam.DoFn):
    def process(self, x):
        yield x + 1


def test_a_pipeline_that_never_runs_leaves_no_temporary_directory():
    # Beam makes /tmp/beam-pipeline-temp* for every Pipeline and removes it only in run(): a
    # graph that is only checked, or a stage stopped by bad input before it ran, left one behind.
    import gc
    for args in ([], DATAFLOW_ARGS):
        p = beam_io.make_pipeline(args)
        temp = Path(p.local_tempdir)
        assert temp.is_dir()
        del p
        gc.collect()
        assert not temp.exists()


def test_check_graph_passes_a_sound_pipeline():
    proto = beam_io.check_graph(_tiny_pipeline(DATAFLOW_ARGS, Fine()))
    assert proto.components.transforms


def test_unpicklable_dofn_is_caught():
    with pytest.raises(Exception, match="(?i)pickle|generator"):
        beam_io.check_graph(_tiny_pipeline(DATAFLOW_ARGS, HoldsALiveReader()))


def test_dofn_that_cannot_be_rebuilt_on_a_worker_is_caught():
    # Beam itself round-trips a DoFn when the ParDo is built; check_graph loads every pickled
    # function of the translated proto again, CombineFns included.
    with pytest.raises(Exception, match="(?i)pickl"):
        beam_io.check_graph(_tiny_pipeline(DATAFLOW_ARGS, BreaksOnWorker()))


def test_missing_setup_file_is_caught(tmp_path):
    args = [a for a in DATAFLOW_ARGS if not a.startswith("--setup_file")]
    with pytest.raises(RuntimeError, match="setup_file"):
        beam_io.check_graph(_tiny_pipeline(args + [f"--setup_file={tmp_path / 'setup.py'}"], Fine()))


def test_setup_file_ships_the_whole_package(tmp_path):
    """What --setup_file stages for workers (Beam builds this sdist): every module and the
    package data the stages load (the witcurate-tiny model config)."""
    from apache_beam.runners.portability.stager import Stager
    tarball = Stager._build_setup_package(str(ROOT / "setup.py"), str(tmp_path))
    with tarfile.open(tarball) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    sources = {str(p.relative_to(ROOT)) for p in (ROOT / "witcurate").rglob("*.py")}
    assert sources <= names, sorted(sources - names)[:10]
    assert "witcurate/trainer/model_configs/witcurate-tiny.json" in names


def test_wikipedia_config_loads_with_full_scale_values():
    cfg = load_config(str(ROOT / "configs" / "wikipedia.yaml"))
    q = cfg.queries
    assert (q.min_unigram_count, q.min_bigram_count, q.min_pmi, q.min_title_views) == (100, 30, None, 70)
    assert (q.max_unigrams, q.max_bigrams, q.max_titles) == (251_465, 100_646, 61_235)
    assert q.max_queries == 500_000 and cfg.cap.per_query == 20_000 == cfg.balance.per_query
    assert (cfg.score.model, cfg.score.pretrained, cfg.score.threshold) == ("ViT-B-32", "openai", 0.28)
    assert cfg.download.image_size == 256 and not cfg.run.demo
    for path in [*q.dumps, *q.pageviews, *cfg.ingest.sources, cfg.run.out]:
        assert path.startswith("gs://"), path
