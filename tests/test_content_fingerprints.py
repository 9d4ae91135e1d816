"""Fingerprints by content: a stage whose inputs hold the same content is skipped even when an
upstream stage was rerun, and redone as soon as any row, side file or model file it reads differs."""

from __future__ import annotations

import io
import json
import random

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from witcurate import schemas
from witcurate.config import Config
from witcurate.demo.host import ImageHost
from witcurate.pipeline import download_worker, fs
from witcurate.pipeline.audit import audit_run
from witcurate.pipeline.balance import BalanceStage
from witcurate.pipeline.content import table_digest
from witcurate.pipeline.download import DownloadStage
from witcurate.pipeline.runner import MODEL, StageResult, run_stage
from witcurate.pipeline.tables import read_table
from witcurate.schemas import REJECTS


def _quiet(_msg: str) -> None:
    pass


# --- the digest of a table ------------------------------------------------------------------------

def _scored_rows(n: int) -> list[dict]:
    return [{"uid": f"{i:032x}", "url": f"http://img.example.com/{i}.jpg", "caption": f"caption {i}",
             "source": "pool.parquet", "query_ids": [i % 3, i % 7], "keep_probability": 1.0 / (1 + i % 4),
             "shard": "images/00000.tar", "key": f"{i:09d}", "width": 64, "height": 48,
             "original_width": 640, "original_height": None if i % 5 == 0 else 480,
             "sha256": f"{i:064x}", "phash": 2**63 + i, "clip_score": i / 1000, "clip_model": "m"}
            for i in range(n)]


def _write_parts(directory: str, rows: list[dict], n_parts: int) -> list[str]:
    fs.makedirs(directory)
    paths = []
    for k in range(n_parts):
        path = fs.join(directory, f"part-{k:05d}.parquet")
        with fs.open_file(path, "wb") as f:
            pq.write_table(pa.Table.from_pylist(rows[k::n_parts], schemas.SCORED), f)
        paths.append(path)
    return paths


def test_a_tables_digest_is_its_rows_whatever_the_parts_and_order(tmp_path):
    rows = _scored_rows(500)
    one = table_digest(_write_parts(str(tmp_path / "one"), rows, 1))
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    assert table_digest(_write_parts(str(tmp_path / "three"), shuffled, 3)) == one == {
        "rows": 500, "digest": one["digest"]}
    # a non-local filesystem (streamed through fsspec) gives the same digest as duckdb's own reader
    memory = "memory://content-digest-test"
    try:
        assert table_digest(_write_parts(memory, shuffled, 4)) == one
    finally:
        fsspec.filesystem("memory").rm("/content-digest-test", recursive=True)

    changed = [dict(r) for r in rows]
    changed[123]["keep_probability"] = 0.3          # one value of one row
    assert table_digest(_write_parts(str(tmp_path / "changed"), changed, 2))["digest"] != one["digest"]
    doubled = rows[:-1] + [rows[0]]                  # same count, a row twice, one gone
    assert table_digest(_write_parts(str(tmp_path / "doubled"), doubled, 2))["digest"] != one["digest"]
    assert table_digest([]) == table_digest(_write_parts(str(tmp_path / "empty"), [], 2))


@pytest.mark.parametrize("layout", ["bytes", "list<float16>"])
def test_float16_embeddings_digest_the_same_on_any_filesystem(tmp_path, layout):
    """The score stage's embeddings (float16 bytes) and the list layout of older score
    directories digest the same through duckdb's parquet reader (local) and Arrow (memory://)."""
    from witcurate.pipeline.score_outputs import embeddings_table
    values = np.array([[0.5, -0.25], [1.0, 0.125]], dtype=np.float16)
    table = embeddings_table(["a", "b"], values, values)
    if layout != "bytes":
        vectors = pa.array(values.tolist(), pa.list_(pa.float16()))
        table = pa.table({"uid": ["a", "b"], "image_embedding": vectors, "text_embedding": vectors})
    pq.write_table(table, tmp_path / "part-0.parquet")
    with fsspec.open("memory://content-f16/part-0.parquet", "wb") as f:
        pq.write_table(table, f)
    try:
        local = table_digest([str(tmp_path / "part-0.parquet")])
        assert table_digest(["memory://content-f16/part-0.parquet"]) == local and local["rows"] == 2
    finally:
        fsspec.filesystem("memory").rm("/content-f16", recursive=True)


# --- balance reruns, download does not (real stages, images from a loopback host) -------------------

N_URLS = 12


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    root = tmp_path_factory.mktemp("host")
    (root / "images").mkdir()
    (root / "host.json").write_text(json.dumps({"faults": {}, "prefix": "/i/"}))
    for i in range(N_URLS):
        buf = io.BytesIO()
        Image.new("RGB", (80 + i, 60), ((i * 40) % 256, 90, 200 - i * 10)).save(buf, "JPEG", quality=90)
        (root / "images" / f"{i}.jpg").write_bytes(buf.getvalue())
    with ImageHost(str(root)) as running:
        yield running
    download_worker.close_pools()


def _matched(directory, base_url: str) -> None:
    """Query 0 in every caption (12 pairs), query 1 in the first half, query 2 in the second."""
    rows = [{"uid": f"{i:032x}", "url": f"{base_url}i/{i}.jpg", "caption": f"picture {i}",
             "source": "pool", "query_ids": [0, 1 if i < N_URLS // 2 else 2]} for i in range(N_URLS)]
    directory.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schemas.MATCHED), directory / "part-00000.parquet")


def _config(port: int, per_query: int) -> Config:
    cfg = Config()
    cfg.balance.per_query, cfg.balance.oversample = per_query, 1.0
    d = cfg.download
    d.image_size, d.timeout, d.retries, d.min_side = 48, 5, 0, 32
    d.processes_count, d.thread_count, d.urls_per_shard = 1, 4, N_URLS
    d.allow_private = [f"127.0.0.1:{port}"]
    return cfg


def test_a_balance_rerun_that_keeps_the_same_rows_does_not_redo_the_download(host, tmp_path):
    _matched(tmp_path / "match", host.base_url)
    balance, download = BalanceStage(), DownloadStage()
    lines: list[str] = []

    def chain(per_query: int) -> tuple[dict, dict]:
        cfg = _config(host.port, per_query)
        b = run_stage(balance, cfg, str(tmp_path / "balance"), {"in": str(tmp_path / "match")}, progress=lines.append)
        d = run_stage(download, cfg, str(tmp_path / "download"), {"in": str(tmp_path / "balance")},
                      progress=lines.append)
        return b, d

    b1, d1 = chain(per_query=100)            # t = 100 >= every query's count: every pair kept at p = 1
    assert b1["counts"]["kept"] == N_URLS and d1["counts"]["kept"] == N_URLS
    b2, d2 = chain(per_query=200)            # balance reruns and keeps the same rows
    assert not b2.get("skipped") and b2["fingerprint"] != b1["fingerprint"]
    assert b2["content"]["hash"] == b1["content"]["hash"]
    assert d2.get("skipped") and any(line.startswith("[download] already done") for line in lines)
    assert d2["finished_at"] == d1["finished_at"]
    assert all(not a.problems for a in audit_run(str(tmp_path)))

    b3, d3 = chain(per_query=1)              # t = 1: balance keeps fewer pairs, download reruns
    assert b3["counts"]["kept"] < N_URLS and not d3.get("skipped")
    assert d3["counts"]["in"] == b3["counts"]["kept"]
    kept = set(read_table(str(tmp_path / "balance"), ["uid"]).column("uid").to_pylist())
    assert set(read_table(str(tmp_path / "download"), ["uid"]).column("uid").to_pylist()) <= kept


# --- side files, model files, reports: fake stages --------------------------------------------------

class Upstream:
    """Kept rows 0..n-1, and a side table and a side file a later stage reads; `layout` splits the
    side table over parts in another order, which is no change of content."""
    name = "upstream"
    sections = ("cap",)
    content_skips = ("notes.txt",)

    def __init__(self):
        self.n, self.side_value, self.layout, self.note, self.calls = 4, 1, 1, "a", 0

    def run(self, ctx):
        self.calls += 1
        pq.write_table(pa.table({"uid": [str(i) for i in range(self.n)]}), fs.join(ctx.tmp_dir, "part-0.parquet"))
        pq.write_table(pa.Table.from_pylist([], REJECTS), fs.join(ctx.tmp_dir, "rejects", "part-0.parquet"))
        side = [{"query_id": q, "pool_count": q * self.side_value} for q in range(6)]
        random.Random(self.layout).shuffle(side)
        fs.makedirs(fs.join(ctx.tmp_dir, "counts"))
        for k in range(self.layout):
            pq.write_table(pa.Table.from_pylist(side[k::self.layout], schemas.QUERY_COUNTS),
                           fs.join(ctx.tmp_dir, "counts", f"part-{k}.parquet"))
        with open(fs.join(ctx.tmp_dir, "notes.txt"), "w") as f:       # read by no stage
            f.write(self.note)
        return StageResult(n_in=self.n)


class Weights:
    name = "weights"
    sections = ("train",)
    produces = MODEL

    def __init__(self):
        self.weights, self.calls = b"w1", 0

    def run(self, ctx):
        self.calls += 1
        with open(fs.join(ctx.tmp_dir, "model.pt"), "wb") as f:
            f.write(self.weights)
        return StageResult()


class Downstream:
    """Reads the upstream stage directory and one file of the model stage."""
    name = "downstream"
    sections = ()

    def __init__(self):
        self.calls = 0

    def run(self, ctx):
        self.calls += 1
        pq.write_table(read_table(ctx.input("in")), fs.join(ctx.tmp_dir, "part-0.parquet"))
        return StageResult()


def test_side_files_and_model_files_count_by_content(tmp_path):
    up, weights, down = Upstream(), Weights(), Downstream()
    cfg = Config()
    inputs = {"in": str(tmp_path / "upstream"), "weights": str(tmp_path / "weights" / "model.pt")}

    def rerun(stage):
        cfg.cap.per_query += 1 if stage is up else 0
        cfg.train.epochs += 1 if stage is weights else 0
        run_stage(stage, cfg, str(tmp_path / stage.name), {}, progress=_quiet)
        return run_stage(down, cfg, str(tmp_path / "downstream"), inputs, progress=_quiet)

    rerun(up)
    rerun(weights)
    assert down.calls == 2                               # the first time, with both inputs there
    up.layout, up.note = 3, "b"                          # the side table split and shuffled; an unread file
    rerun(up)
    weights.calls = 0
    m = rerun(weights)                                   # the same weights, written again
    assert up.calls == 2 and weights.calls == 1 and down.calls == 2 and m["skipped"]
    assert m["inputs"]["weights"]["fingerprint"].startswith("content:model.pt:sha256:")

    up.side_value = 2                                    # same kept rows, another side table
    rerun(up)
    assert down.calls == 3
    weights.weights = b"w2"                              # other weights
    rerun(weights)
    assert down.calls == 4
    assert all(not a.problems for a in audit_run(str(tmp_path)))
    up.n = 5                                             # upstream changes after downstream ran
    run_stage(up, cfg, str(tmp_path / "upstream"), {}, force=True, progress=_quiet)
    problems = {a.stage: a.problems for a in audit_run(str(tmp_path))}
    assert problems["downstream"] == [f"input in ({tmp_path / 'upstream'}) changed since this stage ran: rerun it"]


class Report(Downstream):
    """Like the shards stage: ships its input's rows and writes a report on every stage of the run."""
    name = "report"
    reports_on = ("upstream", "report")
    content_skips = ("README.md",)

    def run(self, ctx):
        with open(fs.join(ctx.tmp_dir, "README.md"), "w") as f:
            f.write(json.dumps(fs.read_json(fs.join(ctx.out_root, "upstream", "_SUCCESS.json"))["counts"]))
        return super().run(ctx)


def test_a_report_is_redone_when_a_stage_it_reports_on_lands_again(tmp_path):
    up, report, consumer = Upstream(), Report(), Downstream()
    cfg = Config()
    for _ in range(2):
        cfg.cap.per_query += 1                           # upstream reruns, same content
        run_stage(up, cfg, str(tmp_path / "upstream"), {}, progress=_quiet)
        r = run_stage(report, cfg, str(tmp_path / "report"), {"in": str(tmp_path / "upstream")}, progress=_quiet)
        c = run_stage(consumer, cfg, str(tmp_path / "consumer"), {"in": str(tmp_path / "report")}, progress=_quiet)
    assert report.calls == 2 and consumer.calls == 1 and c["skipped"]
    again = run_stage(report, cfg, str(tmp_path / "report"), {"in": str(tmp_path / "upstream")}, progress=_quiet)
    assert again["skipped"] and report.calls == 2 and r["content"]["skips"] == ["README.md"]
