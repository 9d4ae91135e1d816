"""The score stage end to end on tiny data: scores equal a plain open_clip computation, rejects
carry reasons, both keep rules, the standalone img2dataset mode, and clear user errors."""

from __future__ import annotations

import hashlib
import io
import os
import json
import random
import shutil
import sys
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image, ImageDraw

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import InputError, UserError
from witcurate.pipeline import image_source
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.tables import read_table
from witcurate.pipeline.score import EMBEDDINGS, ScoreStage
from witcurate.pipeline.score_decode import prepare_image
from witcurate.pipeline.score_inputs import runs_locally
from witcurate.trainer.model import create_model

MODEL = "witcurate-tiny"
COLOURS = ["red", "blue", "green", "yellow"]
SHAPES = ["circles", "squares"]


def draw(i: int) -> tuple[bytes, str]:
    """A small JPEG of coloured shapes and a caption that may or may not describe it."""
    rnd = random.Random(i)
    w, h = rnd.choice([(64, 64), (96, 72), (72, 90)])
    img = Image.new("RGB", (w, h), tuple(rnd.randint(0, 255) for _ in range(3)))
    d = ImageDraw.Draw(img)
    colour = rnd.randrange(len(COLOURS))
    fill = [(220, 30, 30), (30, 30, 220), (30, 200, 30), (230, 220, 30)][colour]
    for _ in range(rnd.randint(1, 3)):
        x, y = rnd.randint(0, w - 24), rnd.randint(0, h - 24)
        (d.ellipse if i % 2 else d.rectangle)([x, y, x + 20, y + 20], fill=fill)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    caption = f"{rnd.choice(['one', 'two', 'three'])} {COLOURS[colour if i % 3 else (colour + 1) % 4]} {SHAPES[i % 2]}"
    return buf.getvalue(), caption


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def reference_scores(checkpoint: str, images: dict[str, bytes], captions: dict[str, str]) -> dict[str, float]:
    """The plain computation: open_clip model, its preprocess_val on the PIL image, its tokenizer,
    L2-normalise, dot."""
    model, _, preprocess, tokenizer = create_model(MODEL, checkpoint)
    model.eval()
    out = {}
    with torch.no_grad():
        for uid, data in images.items():
            image = preprocess(Image.open(io.BytesIO(data))).unsqueeze(0)
            i = model.encode_image(image)
            t = model.encode_text(tokenizer([captions[uid]]))
            i = i / i.norm(dim=-1, keepdim=True)
            t = t / t.norm(dim=-1, keepdim=True)
            out[uid] = float((i @ t.T).item())
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dedupe stage dir + download dir with two image shards, one corrupt image, one row whose
    image is missing from its shard; a random-init tiny checkpoint; reference scores."""
    root = tmp_path_factory.mktemp("score")
    model, *_ = create_model(MODEL, "")
    checkpoint = str(root / "scorer.pt")
    torch.save(model.state_dict(), checkpoint)

    (root / "dedupe").mkdir()
    (root / "download" / "images").mkdir(parents=True)
    rows, images, captions = [], {}, {}
    for s in range(2):
        with tarfile.open(root / "download" / "images" / f"{s:05d}.tar", "w") as tar:
            for j in range(7):
                i = s * 7 + j
                uid, key = f"uid{i:03d}", f"{s:05d}{j:04d}"
                data, caption = draw(i)
                if i == 3:
                    data = b"\xff\xd8\xff\xe0 this is not really a jpeg"
                if i != 10:                      # uid010: listed in the rows, absent from the tar
                    add_member(tar, f"{key}.jpg", data)
                    add_member(tar, f"{key}.txt", caption.encode())
                if i not in (3, 10):
                    images[uid], captions[uid] = data, caption
                rows.append(dict(uid=uid, url=f"http://img.test/{i}.jpg", caption=caption, source="t",
                                 query_ids=[i % 4], keep_probability=1.0, shard=f"images/{s:05d}.tar",
                                 key=key, width=64, height=64, original_width=64, original_height=64,
                                 sha256=hashlib.sha256(data).hexdigest(), phash=i))
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.DEDUPED), root / "dedupe" / "part-00000.parquet")
    return {"root": root, "checkpoint": checkpoint, "rows": rows,
            "reference": reference_scores(checkpoint, images, captions)}


def config(checkpoint: str, threshold=None, top_fraction=None) -> Config:
    c = Config()
    c.score.model = MODEL
    c.score.pretrained = checkpoint
    c.score.threshold = threshold
    c.score.top_fraction = top_fraction
    c.score.batch_size = 4
    c.score.device = "cpu"
    return c


def run(world, name, **rule):
    root = world["root"]
    manifest = run_stage(ScoreStage(), config(world["checkpoint"], **rule), str(root / name),
                         {"in": str(root / "dedupe"), "images": str(root / "download")},
                         progress=lambda m: None)
    kept = read_table(str(root / name))
    rejects = read_table(str(root / name / "rejects"))
    return manifest, kept, rejects


def test_scores_equal_plain_open_clip_and_unreadable_images_are_rejects(world):
    manifest, kept, rejects = run(world, "keep_all", threshold=-1.0)
    ref = world["reference"]
    got = dict(zip(kept.column("uid").to_pylist(), kept.column("clip_score").to_pylist()))
    assert set(got) == set(ref)
    assert max(abs(got[u] - ref[u]) for u in ref) < 1e-4
    assert kept.schema.field("clip_score").type == pa.float32()
    (label,) = set(kept.column("clip_model").to_pylist())
    digest = hashlib.sha256(open(world["checkpoint"], "rb").read()).hexdigest()[:12]
    assert label == f"{MODEL}:{os.path.basename(world['checkpoint'])}@sha256:{digest}"
    schemas.validate(schemas.SCORED, kept.schema, "kept")

    reasons = dict(zip(rejects.column("uid").to_pylist(), rejects.column("reason").to_pylist()))
    assert reasons == {"uid003": "image_unreadable", "uid010": "image_unreadable"}
    details = dict(zip(rejects.column("uid").to_pylist(), rejects.column("detail").to_pylist()))
    assert "missing_in_shard" in details["uid010"]
    assert json.loads(rejects.column("record").to_pylist()[0])["uid"] in reasons

    counts = manifest["counts"]
    assert counts["in"] == len(world["rows"]) == counts["kept"] + counts["rejected"]
    assert manifest["model"] == label
    assert manifest["threshold_used"] == -1.0
    assert manifest["images_per_second"] > 0

    # Embeddings: float16, one row per scored uid, L2-normalised, and their dot is the score.
    emb = pq.read_table(str(world["root"] / "keep_all" / "embeddings"))
    assert emb.schema.equals(EMBEDDINGS)
    for name in ("image_embedding", "text_embedding"):    # each vector float16 bytes, the field says so
        assert emb.schema.field(name).metadata[b"encoding"].startswith(b"float16 little-endian")
    assert sorted(emb.column("uid").to_pylist()) == sorted(ref)
    # read as a user would, one value at a time, as the field's metadata says
    image = np.array([np.frombuffer(v, "<f2") for v in emb.column("image_embedding").to_pylist()], dtype=np.float32)
    text = np.array([np.frombuffer(v, "<f2") for v in emb.column("text_embedding").to_pylist()], dtype=np.float32)
    assert image.shape == text.shape == (len(ref), 128)
    assert np.allclose(np.linalg.norm(image, axis=1), 1.0, atol=2e-3)
    dots = (image * text).sum(axis=1)
    assert np.allclose(dots, [ref[u] for u in emb.column("uid").to_pylist()], atol=3e-3)
    # Stored as plain values: a dictionary of vectors would only be undone on every read.
    for path in (world["root"] / "keep_all" / "embeddings").glob("*.parquet"):
        meta = pq.ParquetFile(path).metadata
        for group in range(meta.num_row_groups):
            for column in range(meta.num_columns):
                chunk = meta.row_group(group).column(column)
                if "embedding" in chunk.path_in_schema:
                    assert not chunk.has_dictionary_page, (path.name, chunk.path_in_schema, chunk.encodings)


def test_threshold_keeps_exactly_the_pairs_at_or_above_it(world):
    ref = world["reference"]
    threshold = float(np.median(list(ref.values())))
    manifest, kept, rejects = run(world, "threshold", threshold=threshold)
    expected = {u for u, s in ref.items() if np.float32(s) >= threshold}
    assert set(kept.column("uid").to_pylist()) == expected
    assert all(s >= threshold for s in kept.column("clip_score").to_pylist())
    below = [d for r, d in zip(rejects.column("reason").to_pylist(), rejects.column("detail").to_pylist())
             if r == "clip_score_below"]
    assert len(below) == len(ref) - len(expected)
    assert all(f"threshold {threshold:.4f}" in d for d in below)
    assert manifest["threshold_used"] == threshold


def test_top_fraction_keeps_the_best_scored_fraction(world):
    ref = world["reference"]
    manifest, kept, rejects = run(world, "top", top_fraction=0.5)
    ranked = sorted(ref, key=lambda u: -ref[u])
    k = round(0.5 * len(ref))
    assert set(kept.column("uid").to_pylist()) == set(ranked[:k])
    assert manifest["threshold_used"] == pytest.approx(min(ref[u] for u in ranked[:k]), abs=1e-4)
    assert manifest["counts"]["reasons"] == {"clip_score_below": len(ref) - k, "image_unreadable": 2}
    detail = [d for r, d in zip(rejects.column("reason").to_pylist(), rejects.column("detail").to_pylist())
              if r == "clip_score_below"][0]
    assert "top_fraction 0.5" in detail


def test_standalone_img2dataset_folder(world, tmp_path):
    """A plain img2dataset output folder: shard 00000 in webdataset form (00000.tar with
    KEY.jpg/txt/json beside 00000.parquet), shard 00001 in parquet form (image bytes in a jpg
    column). Only status == success rows are samples; uids are made from url and caption."""
    folder = tmp_path / "i2d"
    folder.mkdir()
    images, captions = {}, {}
    for shard in range(2):
        meta = []
        for j in range(4):
            data, caption = draw(100 + 10 * shard + j)
            key, url = f"{shard:05d}{j:04d}", f"http://example.test/{shard}/{j}.jpg"
            ok = j != 3
            meta.append({"url": url, "caption": caption, "key": key,
                         "status": "success" if ok else "failed_to_download",
                         "error_message": None if ok else "404", "width": 64, "height": 64})
            if shard == 1:
                meta[-1]["jpg"] = data if ok else None
            if ok:
                uid = image_source.standalone_uid(url, caption)
                images[uid], captions[uid] = data, caption
        if shard == 0:
            with tarfile.open(folder / "00000.tar", "w") as tar:
                for m in meta[:3]:
                    add_member(tar, f"{m['key']}.jpg", images[image_source.standalone_uid(m["url"], m["caption"])])
                    add_member(tar, f"{m['key']}.txt", m["caption"].encode())
                    add_member(tar, f"{m['key']}.json", json.dumps(m).encode())
        pq.write_table(pa.Table.from_pylist(meta), folder / f"{shard:05d}.parquet")
    (folder / "00000_stats.json").write_text("{}")

    manifest = run_stage(ScoreStage(), config(world["checkpoint"], threshold=-1.0), str(tmp_path / "out"),
                         {"in": str(folder)}, progress=lambda m: None)
    kept = read_table(str(tmp_path / "out"))
    ref = reference_scores(world["checkpoint"], images, captions)
    got = dict(zip(kept.column("uid").to_pylist(), kept.column("clip_score").to_pylist()))
    assert set(got) == set(ref) and len(ref) == 6
    assert max(abs(got[u] - ref[u]) for u in ref) < 1e-4
    assert sorted(set(kept.column("shard").to_pylist())) == ["00000.tar", "00001.parquet"]
    assert manifest["counts"] == {"in": 6, "kept": 6, "rejected": 0, "reasons": {}}
    assert manifest["input_mode"] == "img2dataset"


def test_empty_input_is_fine(world, tmp_path):
    empty = tmp_path / "dedupe"
    empty.mkdir()
    pq.write_table(schemas.DEDUPED.empty_table(), empty / "part-00000.parquet")
    manifest = run_stage(ScoreStage(), config(world["checkpoint"], top_fraction=0.3), str(tmp_path / "out"),
                         {"in": str(empty), "images": str(world["root"] / "download")}, progress=lambda m: None)
    assert manifest["counts"]["in"] == manifest["counts"]["kept"] == manifest["counts"]["rejected"] == 0
    assert manifest["threshold_used"] is None


def _run_expecting(tmp_path, inputs, cfg):
    with pytest.raises(UserError) as err:
        run_stage(ScoreStage(), cfg, str(tmp_path / "out"), inputs, progress=lambda m: None)
    assert "\n" not in str(err.value)
    return err.value


def test_bad_model_checkpoint_and_input_are_one_line_user_errors(world, tmp_path):
    root = world["root"]
    inputs = {"in": str(root / "dedupe"), "images": str(root / "download")}
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"definitely not a torch checkpoint")
    assert "cannot load checkpoint" in str(_run_expecting(tmp_path, inputs, config(str(corrupt), threshold=0.2)))

    cfg = config(world["checkpoint"], threshold=0.2)
    cfg.score.model = "no-such-model"
    assert "unknown open_clip model" in str(_run_expecting(tmp_path, inputs, cfg))

    assert "exactly one" in str(_run_expecting(tmp_path, inputs, config(world["checkpoint"])))
    assert "exactly one" in str(_run_expecting(tmp_path, inputs, config(world["checkpoint"], 0.2, 0.3)))

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    err = _run_expecting(tmp_path, {"in": str(tmp_path / "junk")}, config(world["checkpoint"], threshold=0.2))
    assert isinstance(err, InputError) and "img2dataset" in str(err)

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    pq.write_table(pa.table({"uid": ["a"], "caption": ["b"]}), wrong / "part-00000.parquet")
    err = _run_expecting(tmp_path, {"in": str(wrong), "images": str(root / "download")},
                         config(world["checkpoint"], threshold=0.2))
    assert isinstance(err, InputError) and "missing column 'shard'" in str(err)

    cfg = config("run:scorer", threshold=0.2)
    assert "checkpoint" in str(_run_expecting(tmp_path, inputs, cfg))

    if not torch.cuda.is_available():
        cfg = config(world["checkpoint"], threshold=0.2)
        cfg.score.device = "cuda"
        assert "no CUDA device" in str(_run_expecting(tmp_path, inputs, cfg))


def test_default_inputs_use_the_runs_scorer_checkpoint_only_when_asked():
    stage = ScoreStage()
    c = Config()
    c.score.pretrained = "run:scorer"
    assert stage.default_inputs(c, "runs/demo") == {
        "in": "runs/demo/dedupe", "images": "runs/demo/download",
        "checkpoint": "runs/demo/scorer/checkpoint.pt"}
    c.score.pretrained = "openai"
    assert "checkpoint" not in stage.default_inputs(c, "runs/demo")


def test_the_device_is_checked_only_where_this_machine_runs_the_workers():
    assert runs_locally([]) and runs_locally(["--runner", "DirectRunner"])
    assert runs_locally(["--direct_num_workers=2", "--runner=PrismRunner"])
    assert not runs_locally(["--runner=DataflowRunner", "--project=p"])


def test_large_jpegs_are_decoded_at_reduced_size():
    seen = []

    def preprocess(img):
        seen.append(img.size)
        return torch.zeros(3, 64, 64)

    buf = io.BytesIO()
    Image.new("RGB", (1024, 768), (200, 10, 10)).save(buf, "JPEG")
    prepare_image(buf.getvalue(), preprocess, 64)
    small = io.BytesIO()
    Image.new("RGB", (200, 150), (200, 10, 10)).save(small, "JPEG")
    prepare_image(small.getvalue(), preprocess, 64)
    # 1024x768 is >= 4x the 64px input: decoded at 1/4 (still >= 2x the input); 200x150 in full.
    assert seen == [(256, 192), (200, 150)]


def test_image_source_reads_each_shard_once_and_returns_every_row(tmp_path):
    """read_shard/iter_images (shared with the shards stage): found images come back with their
    bytes and extension, everything else with an error, each row exactly once."""
    payloads = {f"k{i}": draw(i)[0] for i in range(6)}
    with tarfile.open(tmp_path / "a.tar", "w") as tar:
        add_member(tar, "k0.txt", b"caption only first")
        for key in ("k0", "k1", "k2"):
            add_member(tar, f"{key}.jpg", payloads[key])
    with tarfile.open(tmp_path / "b.tar", "w") as tar:
        for key in ("k3", "k4", "k5"):
            add_member(tar, f"{key}.png", payloads[key])
    whole = (tmp_path / "b.tar").read_bytes()
    (tmp_path / "b_cut.tar").write_bytes(whole[:512 + 512 * ((len(payloads["k3"]) + 511) // 512) + 700])

    rows = ([{"shard": "a.tar", "key": k} for k in ("k2", "k0", "k9")]
            + [{"shard": "b_cut.tar", "key": k} for k in ("k3", "k4", "k5")]
            + [{"shard": "gone.tar", "key": "k1"}])
    reads = list(image_source.iter_images(str(tmp_path), rows))
    assert sorted((r.row["shard"], r.row["key"]) for r in reads) == sorted((r["shard"], r["key"]) for r in rows)
    by = {(r.row["shard"], r.row["key"]): r for r in reads}
    assert by["a.tar", "k0"].data == payloads["k0"] and by["a.tar", "k0"].ext == "jpg"
    assert by["a.tar", "k2"].data == payloads["k2"]
    assert by["a.tar", "k9"].data is None and by["a.tar", "k9"].error.startswith("missing_in_shard")
    assert by["b_cut.tar", "k3"].data == payloads["k3"] and by["b_cut.tar", "k3"].ext == "png"
    for key in ("k4", "k5"):        # k4 is cut in the middle: an error, never partial bytes
        assert by["b_cut.tar", key].data is None and by["b_cut.tar", key].error.startswith("shard_unreadable")
    assert by["gone.tar", "k1"].data is None and "does not exist" in by["gone.tar", "k1"].error
    # A shard's found images come out in the shard's own order, not the rows' order.
    assert [r.row["key"] for r in reads if r.row["shard"] == "a.tar" and r.data] == ["k0", "k2"]


_watched: dict[str, int] = {}          # realpath -> opens seen while a test watches it


def _count_opens(event: str, args: tuple) -> None:
    if event == "open" and _watched and isinstance(args[0], (str, bytes, os.PathLike)):
        path = os.path.realpath(os.fsdecode(args[0]))
        if path in _watched:
            _watched[path] += 1


sys.addaudithook(_count_opens)         # hooks cannot be removed: it only counts watched paths


@pytest.fixture
def checkpoint_reads(world, tmp_path):
    """A fresh copy of the world's checkpoint (so no earlier test has hashed it in this process)
    and a function returning how many times it has been opened so far."""
    path = str(tmp_path / "scorer-copy.pt")
    shutil.copyfile(world["checkpoint"], path)
    _watched[os.path.realpath(path)] = 0
    yield path, lambda: _watched[os.path.realpath(path)]
    _watched.clear()


def test_scoring_n_images_reads_the_checkpoint_once_not_per_image(world, checkpoint_reads):
    """The handler hashes the checkpoint for its label once and loads it once, however many
    images and batches it scores (it used to hash the whole file for every prediction)."""
    from witcurate.pipeline.inference import ClipScoreModelHandler
    from witcurate.pipeline.score_decode import decode_batch, load_tokenizer, split_preprocess

    path, reads = checkpoint_reads
    handler = ClipScoreModelHandler(MODEL, path, device="cpu", max_batch_size=4)
    loaded = handler.load_model()
    assert reads() == 1
    _, _, preprocess, tokenizer = create_model(MODEL, world["checkpoint"])
    steps = split_preprocess(preprocess)
    samples = [draw(i) for i in range(12)]
    batches = [decode_batch([({"uid": f"u{i}", "caption": c}, d) for i, (d, c) in enumerate(samples[s:s + 4], s)],
                            steps, 64, load_tokenizer(MODEL), pin=False)[0] for s in range(0, 12, 4)]
    results = [r for b in batches for r in handler.run_inference([b], loaded)]
    assert sum(len(r.example) for r in results) == 12
    assert {r.model_id for r in results} == {handler.label}
    assert reads() == 2                    # the load, and the one hash for the label


def test_a_stage_run_reads_the_checkpoint_a_fixed_number_of_times(world, checkpoint_reads):
    """One run over 14 rows in batches of 4: the launcher hashes the checkpoint once (its label,
    recorded in the manifest) and loads it once to check it; the worker loads it once."""
    path, reads = checkpoint_reads
    root = world["root"]
    manifest = run_stage(ScoreStage(), config(path, threshold=-1.0), str(root / "reads"),
                         {"in": str(root / "dedupe"), "images": str(root / "download")}, progress=lambda m: None)
    assert manifest["images_scored"] == 12
    same_bytes = hashlib.sha256(open(world["checkpoint"], "rb").read()).hexdigest()[:12]
    assert manifest["model"] == f"{MODEL}:scorer-copy.pt@sha256:{same_bytes}"
    assert reads() == 3


def test_batched_pixels_are_the_reference_preprocessing_value_for_value(world):
    """The PIL steps per image into one uint8 batch, then ToTensor + Normalize once per batch:
    exactly open_clip's own transform applied image by image (a bad image is left out)."""
    from witcurate.pipeline.score_decode import decode_batch, split_preprocess, to_model_input

    _, _, preprocess, tokenizer = create_model(MODEL, world["checkpoint"])
    samples = [draw(i) for i in range(6)]
    samples[2] = (b"not an image", "broken")
    items = [({"uid": f"u{i}", "caption": c}, d) for i, (d, c) in enumerate(samples)]
    batch, failed = decode_batch(items, split_preprocess(preprocess), 64, tokenizer, pin=False)
    assert [row["uid"] for row, _ in failed] == ["u2"] and "UnidentifiedImageError" in failed[0][1]
    assert [row["uid"] for row in batch.rows] == ["u0", "u1", "u3", "u4", "u5"]
    assert batch.images.dtype == torch.uint8
    expected = torch.stack([preprocess(Image.open(io.BytesIO(d))) for i, (d, _) in enumerate(samples) if i != 2])
    assert torch.equal(to_model_input(batch, torch.device("cpu")), expected)
    assert torch.equal(batch.tokens, tokenizer([c for i, (_, c) in enumerate(samples) if i != 2]))
