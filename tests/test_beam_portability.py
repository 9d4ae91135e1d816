"""The pure-Beam stages give the same result in worker processes and on other filesystems.

Multi-process mode (`--direct_num_workers=2 --direct_running_mode=multi_processing`) is where
unpicklable DoFns, driver-only state and non-deterministic keys show up before Dataflow does.
Paths: driver-side helpers go through fsspec (any protocol), the stages' parquet IO through
Beam's FileSystems (local, gs://, s3://); a run directory that Beam cannot use fails before
any pipeline starts, with a clear error.
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_chain import PURE_BEAM, outcome, run_chain, tiny_config, write_inputs
from beam_modes import MULTI_PROCESS
from witcurate.errors import UserError
from witcurate.pipeline import fs
from witcurate.pipeline.runner import StageResult, run_stage
from witcurate.pipeline.tables import count_rows
from witcurate.pipeline.stages import get_stage


@pytest.fixture(scope="module")
def in_process(beam_chain_run):
    """The chain in this process, run once per session (conftest.py)."""
    return beam_chain_run


def test_chain_in_worker_processes_matches_in_process(in_process, tmp_path):
    base_root, base = in_process
    root = str(tmp_path / "run")
    manifests = run_chain(root, MULTI_PROCESS)
    for name in PURE_BEAM:
        assert manifests[name]["counts"] == base[name]["counts"], name
        assert outcome(fs.join(root, name)) == outcome(fs.join(base_root, name)), name
    # Every stage kept and rejected something, so the comparison covers both sides.
    assert all(base[n]["counts"]["kept"] and base[n]["counts"]["rejected"] for n in PURE_BEAM)
    # Two workers really ran: Beam wrote one part per worker bundle for some stage.
    assert any(len(fs.glob(fs.join(root, n, "part-*.parquet"))) > 1 for n in PURE_BEAM)


def test_worker_processes_are_other_interpreters_each_with_its_own_hash_seed(monkeypatch):
    """What the multi-process tests rely on (beam_modes.py, whichever way workers start): two
    worker processes, neither this one, each hashing strings with its own seed, and each seeing
    the environment Beam starts it with."""
    import os

    import apache_beam as beam
    from apache_beam.testing.util import assert_that

    from witcurate.pipeline.beam_io import make_pipeline
    monkeypatch.setenv("WITCURATE_PROBE", "from-the-driver")
    driver = (os.getpid(), hash("witcurate"))

    def identity(_):             # defined here: pickled by value, as a worker cannot import tests/
        import os
        return os.getpid(), hash("witcurate"), os.environ.get("WITCURATE_PROBE", "")

    def check(seen):
        by_pid = {pid: (h, probe) for pid, h, probe in seen}
        assert len(by_pid) == 2 and driver[0] not in by_pid, by_pid
        hashes = {h for h, _ in by_pid.values()}
        assert len(hashes) == 2 and driver[1] not in hashes, by_pid
        assert {probe for _, probe in by_pid.values()} == {"from-the-driver"}

    with make_pipeline(MULTI_PROCESS) as p:
        seen = (p | beam.Create(range(64)) | beam.Reshuffle() | beam.Map(identity)
                | beam.Distinct())
        assert_that(seen, check)


def test_file_url_run_directory(in_process, tmp_path):
    """`--out file:///...` is a local run: Beam's IO gets the plain path."""
    base_root, _ = in_process
    manifests = run_chain(f"file://{tmp_path}/run", [], stop_after="balance")
    for name in ["ingest", "match", "balance"]:
        assert outcome(str(tmp_path / "run" / name)) == outcome(fs.join(base_root, name)), name
        assert not manifests[name]["inputs"]["in"]["path"].startswith("file://")


def test_beam_stage_on_a_filesystem_beam_cannot_use_fails_clearly():
    root = "memory://beam-refuses/run"
    paths = write_inputs(root)
    with pytest.raises(UserError, match="Beam's file IO cannot use memory://") as e:
        run_stage(get_stage("ingest"), tiny_config(), fs.join(root, "ingest"),
                  {"in": paths["sources"]}, [], progress=lambda m: None)
    assert "gs://" in e.value.hint
    assert not fs.exists(fs.join(root, "ingest"))       # nothing half-written landed


class CopyRows:
    """A driver-side stage (no Beam) that keeps rows with a caption and rejects the rest,
    writing through witcurate.pipeline.fs only."""

    name = "copy"
    sections = ("ingest",)

    def run(self, ctx):
        with fs.open_file(ctx.input("in")) as f:
            rows = pq.read_table(f).to_pylist()
        kept = [{"uid": str(i), **r} for i, r in enumerate(rows) if r["caption"]]
        rejects = [{"uid": str(i), "reason": "missing_caption", "detail": "", "record": json.dumps(r)}
                   for i, r in enumerate(rows) if not r["caption"]]
        with fs.open_file(fs.join(ctx.tmp_dir, "part-00000.parquet"), "wb") as f:
            pq.write_table(pa.Table.from_pylist(kept), f)
        with fs.open_file(fs.join(ctx.tmp_dir, "rejects", "part-00000.parquet"), "wb") as f:
            pq.write_table(pa.Table.from_pylist(rejects), f)
        return StageResult(n_in=len(rows))


def test_runner_contracts_on_an_fsspec_filesystem():
    """Manifest, accounting, tmp -> final rename and skip-on-rerun on memory://, as on gs://."""
    root = "memory://runner-contracts/run"
    paths = write_inputs(root)
    final = fs.join(root, "copy")
    manifest = run_stage(CopyRows(), tiny_config(), final, {"in": paths["sources"]},
                         progress=lambda m: None)
    assert manifest["counts"]["kept"] == count_rows(final) > 0
    assert manifest["counts"]["reasons"] == {"missing_caption": 1}
    found = fs.glob(fs.join(root, "copy", "*.parquet"))     # the protocol is kept in matches
    assert [p.rsplit("/", 1)[-1] for p in found] == ["part-00000.parquet"]
    assert all(p.startswith("memory://") for p in found)
    assert fs.read_json(fs.join(final, "_SUCCESS.json"))["fingerprint"] == manifest["fingerprint"]
    assert not fs.exists(fs.join(root, ".tmp-copy")) and not fs.exists(fs.join(root, ".work-copy"))
    again = run_stage(CopyRows(), tiny_config(), final, {"in": paths["sources"]},
                      progress=lambda m: None)
    assert again.get("skipped")
