"""The shards stage on a small fake run: accounting, determinism, and the readers users rely on
(webdataset, open_clip_train, duckdb) reading the shards unchanged."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_run import make_run, uid_of, write_img2dataset_tar
from PIL import Image
from webdataset.tariterators import tar_file_expander

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import ConfigError, InputError
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import count_rows
from witcurate.pipeline.shards import SIDECAR, ShardsStage, index_image_tar, verify_manifest
from witcurate.pipeline.tar_writer import TarWriter, sha256_file, write_tar

REPO = Path(__file__).resolve().parents[1]
PER_SHARD = 4


def _config() -> Config:
    cfg = Config()
    cfg.shards.samples_per_shard = PER_SHARD
    cfg.cap.per_query = 3
    return cfg


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    fake = make_run(out)
    stage = ShardsStage()
    inputs = stage.default_inputs(_config(), str(out))
    manifest = run_stage(stage, _config(), str(out / "shards"), inputs, progress=lambda m: None)
    return out, fake, manifest, inputs


def _tars(d: Path) -> list[Path]:
    return sorted(d.glob("[0-9]*.tar"))


def test_counts_balance_and_rejects_have_reasons(run):
    out, fake, manifest, _ = run
    c = manifest["counts"]
    assert c["in"] == fake["rows"].num_rows == c["kept"] + c["rejected"]
    assert c["kept"] == fake["n_good"] == count_rows(str(out / "shards"), "[0-9]*.parquet")
    assert c["reasons"] == fake["rejects"]
    rej = pq.read_table(out / "shards" / "rejects").to_pylist()
    missing = {r["uid"] for r in rej if r["reason"] == "image_missing"}
    assert missing == {uid_of(100), uid_of(101)}
    details = " ".join(r["detail"] for r in rej)
    assert "000000999" in details and "00009.tar" in details
    assert all(json.loads(r["record"])["uid"] == r["uid"] for r in rej)


def test_shards_are_sorted_split_and_listed_in_manifest(run, tmp_path):
    out, fake, _, _ = run
    d = out / "shards"
    tars = _tars(d)
    assert [t.name for t in tars] == ["00000.tar", "00001.tar", "00002.tar"]
    m = json.loads((d / "manifest.json").read_text())
    assert [s["samples"] for s in m["shards"]] == [4, 4, 3]
    assert m["totals"]["samples"] == 11 and m["totals"]["shards"] == 3
    assert m["pattern"] == "{00000..00002}.tar"
    assert m["config"]["shards"]["samples_per_shard"] == PER_SHARD
    assert m["code_version"]
    assert json.loads((d / "sizes.json").read_text()) == {"00000.tar": 4, "00001.tar": 4, "00002.tar": 3}
    assert verify_manifest(str(d)) == []
    copy = tmp_path / "copy"
    shutil.copytree(d, copy)
    blob = bytearray((copy / "00001.tar").read_bytes())
    blob[700] ^= 1                                  # one flipped bit inside a member
    (copy / "00001.tar").write_bytes(bytes(blob))
    (copy / "00002.tar").unlink()
    problems = verify_manifest(str(copy))
    assert len(problems) == 2 and "00001.tar: sha256" in problems[0] and "00002.tar: missing" in problems[1]
    keys = []
    for t in tars:
        with tarfile.open(t) as tar:
            for mem in tar:
                assert (mem.mtime, mem.uid, mem.gid, mem.uname, mem.gname, mem.mode) == (0, 0, 0, "", "", 0o644)
                keys.append(mem.name.split(".")[0])
    uids = list(dict.fromkeys(keys))
    assert uids == sorted(fake["expect"])          # globally sorted by uid, each exactly once
    # A sidecar per tar, one row per sample, pointing back at its tar.
    for t in tars:
        side = pq.read_table(t.with_suffix(".parquet"))
        assert side.schema.equals(SIDECAR)
        with tarfile.open(t) as tar:
            in_tar = sorted({mem.name.split(".")[0] for mem in tar})
        assert side.column("uid").to_pylist() == in_tar
        assert set(side.column("shard").to_pylist()) == {t.name}


def test_same_input_gives_identical_bytes(run):
    out, _, manifest, inputs = run
    again = run_stage(ShardsStage(), _config(), str(out / "shards_again"), inputs, progress=lambda m: None)
    assert again["counts"] == manifest["counts"]
    a, b = _tars(out / "shards"), _tars(out / "shards_again")
    assert [p.name for p in a] == [p.name for p in b]
    for x, y in zip(a, b):
        assert x.read_bytes() == y.read_bytes()
    ma = json.loads((out / "shards" / "manifest.json").read_text())
    mb = json.loads((out / "shards_again" / "manifest.json").read_text())
    assert ma["shards"] == mb["shards"]
    assert [s["sha256"] for s in ma["shards"]] == [sha256_file(str(p)) for p in a]


def test_webdataset_reads_every_sample_intact(run):
    import webdataset as wds
    out, fake, _, _ = run
    d = out / "shards"
    jpgs = str(d / "{00000..00002}.tar")
    seen = {}
    ds = wds.WebDataset(jpgs, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg", "txt")
    for key, image, caption in ds:
        seen[key] = (image, caption)
    assert set(seen) == set(fake["expect"])
    for uid, (image, caption) in seen.items():
        data, want_caption, _ = fake["expect"][uid]
        assert caption == want_caption
        assert image.size == Image.open(io.BytesIO(data)).size
    # Raw bytes and metadata, every sample, every extension.
    raw = {s["__key__"]: s for s in wds.WebDataset(jpgs, shardshuffle=False)}
    assert set(raw) == set(fake["expect"])
    for uid, (data, caption, ext) in fake["expect"].items():
        s = raw[uid]
        assert s[ext] == data and s["txt"].decode("utf-8") == caption
        meta = json.loads(s["json"])
        assert meta["uid"] == uid and meta["caption"] == caption
        assert meta["sha256"] == hashlib.sha256(data).hexdigest()
        assert {"url", "query", "query_ids", "clip_score", "width", "height",
                "original_width", "original_height"} <= set(meta)


def test_duckdb_queries_the_sidecars(run):
    import duckdb
    out, fake, _, _ = run
    n, distinct, queries = duckdb.sql(
        f"select count(*), count(distinct uid), count(distinct query) from '{out / 'shards'}/*.parquet'").fetchall()[0]
    assert n == distinct == fake["n_good"]
    assert queries == 3


def test_open_clip_train_trains_on_the_shards(run, tmp_path):
    out, _, _, _ = run
    d = out / "shards"
    from open_clip_train.data import get_dataset_size
    assert get_dataset_size(str(d / "{00000..00002}.tar")) == (11, 3)   # found through sizes.json
    model_dir = tmp_path / "tiny"
    model_dir.mkdir()
    cfg = json.loads((REPO / "witcurate/trainer/model_configs/witcurate-tiny.json").read_text())
    (model_dir / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "open_clip_train.main"]
    if "eof_value" in inspect.signature(tar_file_expander).parameters:
        # webdataset >= 0.2.96 ends every shard with an empty dict that open_clip_train 3.3.0's
        # own grouping cannot take (KeyError 'fname', open_clip issue #935) on ANY tar, not just
        # ours; with webdataset <= 0.2.86 the plain command runs. Restore the old default only.
        cmd = [sys.executable, "-c", "import functools, sys, open_clip_train.data as d; "
               "d.tar_file_expander = functools.partial(d.tar_file_expander, eof_value=None); "
               "from open_clip_train.main import main; main(sys.argv[1:])"]
    cmd += ["--dataset-type", "webdataset",
           "--train-data", str(d / "{00000..00002}.tar"), "--train-num-samples", "8",
           "--model", f"local-dir:{model_dir}", "--batch-size", "4", "--epochs", "1", "--warmup", "1",
           "--workers", "0", "--precision", "fp32", "--device", "cpu", "--save-frequency", "0",
           "--zeroshot-frequency", "0", "--log-every-n-steps", "1", "--logs", str(tmp_path / "logs"),
           "--name", "shards-test", "--seed", "0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "logs" / "shards-test" / "out.log").read_text() if (tmp_path / "logs" / "shards-test" / "out.log").exists() else ""
    assert proc.returncode == 0, proc.stderr[-3000:] + log[-2000:]
    steps = [line for line in log.splitlines() if "Train Epoch: 0" in line and "Loss:" in line]
    assert len(steps) >= 2, log[-2000:]


def test_image_index_reads_img2dataset_layout(tmp_path):
    p = tmp_path / "src.tar"
    write_img2dataset_tar(p, {"a.jpg": b"1", "a.txt": b"t", "b.png": b"22", "b.webp": b"333",
                               "c.JPEG": b"4444", "d.txt": b"only text"})
    idx = index_image_tar(str(p))
    assert set(idx) == {"a", "b", "c"}
    assert idx["a"][3] == hashlib.sha256(b"1").hexdigest()
    assert idx["b"][0] == "b.png"                # preferred over webp
    with open(p, "rb") as f:
        name, offset, size, _ = idx["c"]
        f.seek(offset)
        assert f.read(size) == b"4444"


def test_tar_writer_is_deterministic_and_refuses_bad_keys(tmp_path):
    samples = [("k1", {"txt": "é".encode(), "jpg": b"\xff\xd8x"}), ("k2", {"txt": b"b"})]
    s1 = write_tar(str(tmp_path / "a.tar"), samples)
    s2 = write_tar(str(tmp_path / "b.tar"), samples)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert s1 == s2 and s1.samples == 2 and s1.bytes == (tmp_path / "a.tar").stat().st_size
    assert s1.sha256 == sha256_file(str(tmp_path / "a.tar"))
    with tarfile.open(tmp_path / "a.tar") as tar:
        assert tar.getnames() == ["k1.jpg", "k1.txt", "k2.txt"]
    w = TarWriter(io.BytesIO())
    for bad in ("a.b", "", "x/y"):
        with pytest.raises(ValueError):
            w.write_sample(bad, {"txt": b"t"})


def _tarfile_reference(samples) -> bytes:
    """The same samples written by tarfile itself (PAX format, the pinned header fields)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, fields in samples:
            for ext in sorted(fields):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode, info.uid, info.gid = len(fields[ext]), 0, 0o644, 0, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(fields[ext]))
    return buf.getvalue()


def test_tar_writer_writes_what_tarfile_writes(tmp_path):
    # Headers are built directly for speed; they must be tarfile's bytes, including the cases
    # that need PAX records (a name over 100 bytes, a non-ASCII name) and every padding length.
    samples = [(f"s{size}", {"bin": bytes(range(256)) * (size // 256) + b"x" * (size % 256)})
               for size in (0, 1, 511, 512, 513, 10_240, 10_241)]
    samples += [("k" * 96, {"txt": b"a name of exactly 100 bytes"}),
                ("k" * 97, {"txt": b"101 bytes: a PAX path record"}),
                ("café", {"txt": "non-ASCII key".encode()}),
                ("0123abcd" * 4, {"jpg": b"\xff\xd8" * 700, "json": b"{}", "txt": b"a caption"})]
    for n in range(1, len(samples) + 1):
        buf = io.BytesIO()
        writer = TarWriter(buf)
        for key, fields in samples[:n]:
            writer.write_sample(key, fields)
        summary = writer.close()
        assert buf.getvalue() == _tarfile_reference(samples[:n]), samples[n - 1][0]
        assert summary.bytes == len(buf.getvalue()) and summary.samples == n


def test_non_jpeg_images_keep_their_bytes_and_extension(tmp_path):
    """img2dataset with encode_format=png: the bytes ship untouched under UID.png."""
    fake = make_run(tmp_path, png=True)
    stage = ShardsStage()
    manifest = run_stage(stage, _config(), str(tmp_path / "shards"), stage.default_inputs(_config(), str(tmp_path)),
                         progress=lambda m: None)
    assert manifest["counts"]["kept"] == fake["n_good"]
    (uid,) = [u for u, (_, _, ext) in fake["expect"].items() if ext == "png"]
    members = {}
    for t in _tars(tmp_path / "shards"):
        with tarfile.open(t) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar})
    assert members[f"{uid}.png"] == fake["expect"][uid][0]
    assert f"{uid}.jpg" not in members


def test_nothing_to_ship_gives_a_valid_empty_dataset(tmp_path):
    (tmp_path / "cap").mkdir()
    (tmp_path / "download").mkdir()
    pq.write_table(schemas.CAPPED.empty_table(), tmp_path / "cap" / "part-00000.parquet")
    stage = ShardsStage()
    m = run_stage(stage, _config(), str(tmp_path / "shards"), stage.default_inputs(_config(), str(tmp_path)),
                  progress=lambda m: None)
    assert m["counts"] == {"in": 0, "kept": 0, "rejected": 0, "reasons": {}}
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["shards"] == [] and manifest["totals"]["samples"] == 0
    assert (tmp_path / "shards" / "README.md").exists()


def test_bad_settings_fail_fast_with_a_hint(tmp_path):
    make_run(tmp_path)
    stage = ShardsStage()
    inputs = dict(stage.default_inputs(_config(), str(tmp_path)), images=str(tmp_path / "nope"))
    with pytest.raises(InputError, match="images directory"):
        run_stage(stage, _config(), str(tmp_path / "shards"), inputs, progress=lambda m: None)
    cfg = _config()
    cfg.shards.samples_per_shard = 0
    with pytest.raises(ConfigError, match="samples_per_shard"):
        run_stage(stage, cfg, str(tmp_path / "shards"), stage.default_inputs(cfg, str(tmp_path)),
                  progress=lambda m: None)
    assert not (tmp_path / "shards").exists()


def test_hugging_face_datasets_reads_the_shards(run, tmp_path, monkeypatch):
    """The shards load unchanged with `datasets`' webdataset builder (offline)."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    shards_dir = run[0] / "shards"
    ds = datasets.load_dataset("webdataset", data_files={"train": str(shards_dir / "*.tar")},
                               split="train", cache_dir=str(tmp_path / "hf-cache"))
    sidecars = pq.read_table(sorted(shards_dir.glob("[0-9]*.parquet"))).to_pylist()
    assert len(ds) == len(sidecars)
    by_uid = {r["uid"]: r["caption"] for r in sidecars}
    for row in ds:
        assert row["txt"] == by_uid[row["__key__"]] == row["json"]["caption"]


def test_score_and_cap_columns_are_optional_but_typed_when_present(tmp_path):
    """Download rows ship as they are (the experiment's raw arm); a mistyped clip_score is refused."""
    (tmp_path / "download").mkdir()
    stage = ShardsStage()
    inputs = {"in": str(tmp_path / "download"), "images": str(tmp_path / "download")}
    pq.write_table(schemas.DOWNLOADED.empty_table(), tmp_path / "download" / "part-00000.parquet")
    m = run_stage(stage, _config(), str(tmp_path / "shards"), inputs, progress=lambda m: None)
    assert m["counts"]["in"] == 0
    bad = schemas.DOWNLOADED.append(pa.field("clip_score", pa.string()))
    pq.write_table(bad.empty_table(), tmp_path / "download" / "part-00000.parquet")
    with pytest.raises(InputError, match="column 'clip_score' is string, expected float"):
        run_stage(stage, _config(), str(tmp_path / "shards-bad"), inputs, progress=lambda m: None)
