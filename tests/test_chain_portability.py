"""The whole chain is portable: in Beam's worker processes, and on a non-local filesystem.

The session's shared demo world (conftest.py `demo_world`) runs through queries, ingest, match,
balance, download, dedupe, scorer, score, semdedup, target, cap and shards three ways:
in-process under a local directory (the reference: the session's shared run, `demo_run`, made
once for this test, the end-to-end test and the kill-and-resume test); with Beam's local runner
in multi-process mode (`--direct_num_workers=2 --direct_running_mode=multi_processing`), where
unpicklable DoFns, driver-only state, per-process model and pool set-up and non-deterministic
keys show up before Dataflow does; and in-process under `memory://`, with every input the stages read (the dump, pageview files, candidate pool
and trusted set) copied into memory:// as well. The stages' parquet IO goes through Beam's
FileSystems, which learn `memory://` from the test-only FileSystem in `memory_fs.py`; the local
FnApiRunner runs in this process, so it shares fsspec's memory store with the driver. Any
os.path, open(), os.listdir, pathlib or shutil call on a run path fails there (or writes a local
directory named `memory:`), as it would on gs://. Both other runs must produce the same uids and the
same reject reasons in every stage they run as the reference, and byte-identical shard tars;
the memory run also an audit without problems.

The multi-process run runs the stages with something of their own to get wrong in worker
processes: download (its worker pool), score (a model per process) and shards (image tars).
The pure-Beam stages between them (ingest, match, balance, dedupe, cap) are copied from the
reference instead: test_beam_portability runs each of them in worker processes on data made to
keep and reject something in every one, and each Beam stage here costs two worker start-ups.
So is queries: test_queries_stage counts a handmade dump in worker processes and compares it
with the same dump counted in the driver (the demo's dump is one split as well). (The scorer
trains in the driver, in any mode.)

The one exception is where the download stage's files are written. img2dataset writes its shards
from worker processes that the stage spawns; on gs:// they write to the bucket, but a spawned
process has its own, empty memory store, so nothing written there would reach this process. The
memory run's download stage therefore reads its input from memory:// (the driver's shard plan
and Beam's read) while its output, temporary and work directories are local; the finished stage
directory is then copied into memory://, and dedupe, score and shards read it (rows and image
tars) from there. Everything after download runs on memory:// alone.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest
from memory_fs import beam_memory_filesystem, clear

from beam_modes import MULTI_PROCESS
from witcurate.config import load_config
from witcurate.demo.host import ImageHost
from witcurate.pipeline import fs
from witcurate.pipeline.audit import audit_run, format_table
from witcurate.pipeline.inference import local_weights
from witcurate.pipeline.runner import MODEL, run_stage
from witcurate.pipeline.stages import get_stage

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "demo.yaml")
MEMORY_ROOT = "memory://witcurate-fsspec-paths/run"
STAGES = ["queries", "ingest", "match", "balance", "download", "dedupe", "scorer", "score", "semdedup",
          "target", "cap", "shards"]


def _quiet(_msg: str) -> None:
    pass


def _copy_inputs(world: Path, root: str) -> str:
    """The world's raw inputs, copied under ROOT/inputs through fsspec; returns that directory."""
    inputs = fs.join(root, "inputs")
    fs.makedirs(inputs)
    files = [*sorted((world / "dump").iterdir()), *sorted((world / "pageviews").iterdir()),
             *sorted((world / "pool" / "sources").iterdir()), *sorted((world / "trusted").glob("*.tar"))]
    for path in files:
        with fs.open_file(fs.join(inputs, path.name), "wb") as f:
            f.write(path.read_bytes())
    return inputs


MULTI_PROCESS_STAGES = ["download", "score", "shards"]


def _run_chain(root: str, world: Path, overrides: list[str], download_staging: str | None,
               beam_args: tuple[str, ...] = (), only: list[str] = STAGES, reference: str = "") -> dict:
    """The stages in `only` under `root` with their default inputs, the others copied from the
    finished `reference` run; returns each stage's manifest."""
    inputs = _copy_inputs(world, root)
    config = load_config(CONFIG, overrides + [      # the same run, reading the copies
        f"queries.dumps=['{inputs}/enwiki-demo-pages-articles-multistream.xml.bz2']",
        f"queries.pageviews=['{inputs}/pageviews-*.gz']",
        f"ingest.sources=['{inputs}/listed.parquet','{inputs}/*.warc.gz','{inputs}/*.warc.wat.gz']",
        f"scorer.trusted={inputs}/*.tar", f"target.images={inputs}/trusted-*.tar",
    ])
    manifests = {}
    for name in STAGES:
        if name not in only:
            shutil.copytree(fs.join(reference, name), fs.join(root, name))
            manifests[name] = {**fs.read_json(fs.join(root, name, "_SUCCESS.json")), "copied": True}
            continue
        stage = get_stage(name)
        final = fs.join(root, name)
        if name == "download" and download_staging:
            final = fs.join(download_staging, name)
        manifests[name] = run_stage(stage, config, final, stage.default_inputs(config, root),
                                    list(beam_args), progress=_quiet)
        if final != fs.join(root, name):
            target, path = fs.fs_for(fs.join(root, name))
            target.put(final, path, recursive=True)
    return manifests


@pytest.fixture(scope="module")
def runs(demo_world, demo_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsspec-paths")
    world, mp_root = demo_world.root, str(tmp / "run-multiprocess")
    overrides = demo_world.overrides()
    host = ImageHost(str(world), "127.0.0.1", demo_world.port)
    host.start()
    clear(MEMORY_ROOT)
    checkpoint = fs.join(MEMORY_ROOT, "scorer", "checkpoint.pt")
    try:
        multiprocess = _run_chain(mp_root, world, overrides, None, tuple(MULTI_PROCESS),
                                  MULTI_PROCESS_STAGES, str(demo_run.out))
        with beam_memory_filesystem():
            memory = _run_chain(MEMORY_ROOT, world, overrides, str(tmp / "staging"))
        yield {"local_root": str(demo_run.out), "local": demo_run.manifests, "memory": memory,
               "mp_root": mp_root, "multiprocess": multiprocess}
    finally:
        host.stop()
        if fs.exists(checkpoint):         # the score stage's local copy of the memory checkpoint
            shutil.rmtree(os.path.dirname(local_weights(checkpoint)), ignore_errors=True)
        clear(MEMORY_ROOT)


def _kept_keys(stage_dir: str, kept_glob: str) -> list[str]:
    keys = []
    for path in fs.glob(fs.join(stage_dir, kept_glob)):
        with fs.open_file(path) as f:
            table = pq.read_table(f)
        column = "uid" if "uid" in table.column_names else "query"
        keys.extend(str(v) for v in table.column(column).to_pylist())
    return sorted(keys)


def _rejects(stage_dir: str) -> list[tuple[str, str]]:
    out = []
    for path in fs.glob(fs.join(stage_dir, "rejects", "*.parquet")):
        with fs.open_file(path) as f:
            table = pq.read_table(f, columns=["uid", "reason"])
        out.extend(zip(table.column("uid").to_pylist(), table.column("reason").to_pylist()))
    return sorted(out)


def _produced(manifest: dict):
    """What a stage's manifest says it made: counts for a filtering stage, the files a model stage wrote."""
    return manifest["counts"] if manifest.get("produces") != MODEL else sorted(manifest["outputs"])


def _read(path: str) -> bytes:
    with fs.open_file(path) as f:
        return f.read()


def test_memory_run_equals_local_run(runs):
    local_root, local, memory = runs["local_root"], runs["local"], runs["memory"]
    for name in STAGES:
        assert _produced(memory[name]) == _produced(local[name]), name
        if local[name].get("produces") != MODEL:
            glob = local[name]["kept_glob"]
            assert _kept_keys(fs.join(MEMORY_ROOT, name), glob) == _kept_keys(fs.join(local_root, name), glob), name
            assert _rejects(fs.join(MEMORY_ROOT, name)) == _rejects(fs.join(local_root, name)), name
        # The stage really read memory://: every input it recorded is there.
        recorded = [entry["path"] for entry in memory[name]["inputs"].values()]
        assert recorded and all(p.startswith("memory://") for p in recorded), (name, recorded)
    # Something was kept and rejected along the way, so the comparisons above are not empty.
    assert memory["shards"]["counts"]["kept"] > 0
    assert sum(memory[n]["counts"]["rejected"] for n in STAGES if "counts" in memory[n]) > 0

    assert (_read(fs.join(MEMORY_ROOT, "queries", "queries.json"))
            == _read(fs.join(local_root, "queries", "queries.json")))
    assert (_read(fs.join(MEMORY_ROOT, "scorer", "checkpoint.pt"))
            == _read(fs.join(local_root, "scorer", "checkpoint.pt")))
    shards = fs.read_json(fs.join(MEMORY_ROOT, "shards", "manifest.json"))
    assert shards["shards"] == fs.read_json(fs.join(local_root, "shards", "manifest.json"))["shards"]
    tars = [s["tar"] for s in shards["shards"]]
    assert len(tars) > 1
    for tar in tars:
        assert _read(fs.join(MEMORY_ROOT, "shards", tar)) == _read(fs.join(local_root, "shards", tar)), tar
    assert fs.exists(fs.join(MEMORY_ROOT, "shards", "README.md"))
    assert fs.exists(fs.join(MEMORY_ROOT, "score", "embeddings"))


def test_chain_in_beam_worker_processes_equals_in_process(runs):
    local_root, local, mp_root, mp = runs["local_root"], runs["local"], runs["mp_root"], runs["multiprocess"]
    for name in MULTI_PROCESS_STAGES:
        assert not mp[name].get("skipped") and not mp[name].get("copied"), name    # really ran
        assert mp[name]["counts"] == local[name]["counts"], name
        glob = local[name]["kept_glob"]
        assert _kept_keys(fs.join(mp_root, name), glob) == _kept_keys(fs.join(local_root, name), glob), name
        assert _rejects(fs.join(mp_root, name)) == _rejects(fs.join(local_root, name)), name
    assert mp["shards"]["counts"]["kept"] > 0
    shards = fs.read_json(fs.join(mp_root, "shards", "manifest.json"))["shards"]
    assert shards == fs.read_json(fs.join(local_root, "shards", "manifest.json"))["shards"]
    for tar in (s["tar"] for s in shards):
        assert _read(fs.join(mp_root, "shards", tar)) == _read(fs.join(local_root, "shards", tar)), tar


def test_memory_run_left_nothing_behind_and_nothing_local(runs):
    """No temporary or work directory is left, and no call created a local `memory:` folder
    (what os.makedirs("memory://...") does)."""
    store, root = fs.fs_for(MEMORY_ROOT)
    assert sorted(p.rsplit("/", 1)[-1] for p in store.ls(root, detail=False)) == sorted(STAGES + ["inputs"])
    for base in {Path.cwd(), REPO}:
        assert not (base / "memory:").exists(), base


def test_audit_passes_on_memory_run(runs):
    audits = audit_run(MEMORY_ROOT)
    assert [a.stage for a in audits] == STAGES
    assert all(not a.problems for a in audits), format_table(audits)
    for a in audits:
        if a.manifest.get("produces") != MODEL:
            assert a.kept_files == a.manifest["counts"]["kept"], a.stage


def test_beam_knows_memory_only_while_the_test_filesystem_is_active():
    from apache_beam.io.filesystems import FileSystems
    with pytest.raises(ValueError):
        FileSystems.get_filesystem("memory://x/part.parquet")
    with beam_memory_filesystem():
        assert type(FileSystems.get_filesystem("memory://x/part.parquet")).__name__ == "MemoryFileSystem"
    with pytest.raises(ValueError):
        FileSystems.get_filesystem("memory://x/part.parquet")


def test_remote_checkpoint_copy_follows_a_rewrite():
    """A checkpoint rewritten at the same URL (the scorer run again), even at the same size, is
    copied again, not served from the first copy; the first copy is removed."""
    url = "memory://witcurate-fsspec-weights/scorer/checkpoint.pt"
    try:
        with fsspec.open(url, "wb") as f:
            f.write(b"weights A")
        first = local_weights(url)
        assert Path(first).read_bytes() == b"weights A"
        assert local_weights(url) == first                 # cached: not copied again
        with fsspec.open(url, "wb") as f:
            f.write(b"weights B")
        second = local_weights(url)
        assert Path(second).read_bytes() == b"weights B"
        assert not Path(first).exists()
    finally:
        if fs.exists(url):
            shutil.rmtree(os.path.dirname(local_weights(url)), ignore_errors=True)
        clear("memory://witcurate-fsspec-weights")


def test_evaluation_reads_a_remote_eval_folder_like_a_local_one(tmp_path):
    """train.eval_dir=gs://...: the zero-shot folder comes through fsspec like a local one."""
    import json

    from PIL import Image

    from witcurate.trainer.evaluate import evaluate
    from witcurate.trainer.model import create_model

    local = tmp_path / "eval"
    for c, colour in enumerate(["red", "blue"]):
        (local / "zeroshot" / colour).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (255 * (1 - c), 40 * i, 255 * c)).save(local / "zeroshot" / colour / f"{i}.jpg")
    (local / "zeroshot" / "classnames.json").write_text(json.dumps({"red": "red thing", "blue": "blue thing"}))
    (local / "zeroshot" / "templates.json").write_text(json.dumps(["a photo of a {}."]))
    remote = "memory://witcurate-eval-test/eval"
    mem = fsspec.filesystem("memory")
    for path in local.rglob("*"):
        if path.is_file():
            mem.pipe(f"{remote}/{path.relative_to(local)}", path.read_bytes())
    model, _, preprocess, tokenizer = create_model("witcurate-tiny", "")
    try:
        assert evaluate(model, preprocess, tokenizer, remote) == evaluate(model, preprocess, tokenizer, str(local))
        assert evaluate(model, preprocess, tokenizer, remote)["zeroshot"]["n"] == 4
    finally:
        mem.rm("/witcurate-eval-test", recursive=True)
