"""The checks a download worker writes beside each shard: every stored image hashed, from the pixels
img2dataset's resizer just encoded where it has them, from the stored bytes otherwise."""

from __future__ import annotations

import io
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageDraw

from witcurate.filters import images, urls
from witcurate.pipeline import download_worker, encoded_pixels
from witcurate.pipeline.shard_checks import CheckingWriterClass


def drawn_jpeg(w: int, h: int) -> bytes:
    img = Image.new("RGB", (w, h), (40, 120, 200))
    draw = ImageDraw.Draw(img)
    draw.ellipse([w // 5, h // 6, w // 2, h // 2], fill=(250, 220, 30))
    draw.rectangle([w // 2, h // 2, w - 10, h - 5], fill=(180, 20, 60))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def worker(monkeypatch):
    """This process set up as a download worker is (its resizer's OpenCV recording), undone after."""
    import img2dataset.resizer
    monkeypatch.setattr(img2dataset.resizer, "cv2", img2dataset.resizer.cv2)
    monkeypatch.setattr(img2dataset.resizer, "SuppressStdoutStderr", img2dataset.resizer.SuppressStdoutStderr)
    monkeypatch.setattr(download_worker, "_installed", None)
    download_worker.install(download_worker.WorkerSettings(urls.AddressPolicy(), 10**8))
    decoded = []
    real = images.inspect_image
    monkeypatch.setattr(images, "inspect_image", lambda data, limit: decoded.append(data) or real(data, limit))
    return decoded


def write_shard(tmp_path, resizer, samples: list[tuple[str, bytes]]):
    """Resize each sample and write it as img2dataset's Downloader does: resize, then write, on
    one thread; a failed resize is written as None."""
    from img2dataset.writer import ParquetSampleWriter
    import pyarrow as pa
    schema = pa.schema([("key", pa.string()), ("caption", pa.string()), ("status", pa.string())])
    writer = CheckingWriterClass(ParquetSampleWriter, 10**8)(0, str(tmp_path), True, 5, schema, "jpg")
    stored = {}
    for key, data in samples:
        img_str, *_, error = resizer(io.BytesIO(data))
        writer.write(img_str, key, "a caption", {"key": key, "caption": "a caption",
                                                 "status": "success" if error is None else "failed"})
        stored[key] = img_str
    writer.close()
    rows = pq.read_table(tmp_path / "00000.checks.parquet").to_pylist()
    return {row["key"]: row for row in rows}, stored


def test_resized_images_are_hashed_from_the_pixels_encoded_without_decoding_them(worker, tmp_path):
    from img2dataset.resizer import Resizer
    resizer = Resizer(image_size=96, resize_mode="keep_ratio", resize_only_if_bigger=True,
                      encode_format="jpg", encode_quality=95)
    checks, stored = write_shard(tmp_path, resizer, [("a", drawn_jpeg(300, 200)), ("b", drawn_jpeg(140, 260))])
    assert worker == []                                      # no stored image decoded again
    for key in "ab":
        from_bytes = images.inspect_image(stored[key], 10**8)
        assert (checks[key]["width"], checks[key]["height"]) == (from_bytes.width, from_bytes.height)
        assert min(from_bytes.width, from_bytes.height) == 96         # keep_ratio: the short side
        assert checks[key]["sha256"] == from_bytes.sha256
        assert bin(checks[key]["phash"] ^ from_bytes.phash).count("1") <= 2
        assert checks[key]["reason"] == ""


def test_bytes_the_resizer_did_not_encode_are_decoded_and_a_failure_leaves_no_stale_pixels(worker, tmp_path):
    from img2dataset.resizer import Resizer
    encoding = Resizer(image_size=96, resize_mode="keep_ratio", resize_only_if_bigger=True,
                       encode_format="jpg", encode_quality=95)
    keeping = Resizer(image_size=96, resize_mode="no", resize_only_if_bigger=True,
                      encode_format="jpg", encode_quality=95, skip_reencode=True)
    original = drawn_jpeg(120, 90)
    encoding(io.BytesIO(drawn_jpeg(300, 200)))               # pixels recorded, then never written
    checks, stored = write_shard(tmp_path, keeping, [("broken", b"not an image"), ("kept", original)])
    assert stored["kept"] == original and stored["broken"] is None
    assert worker == [original]                              # decoded: no pixels were encoded for it
    assert checks["kept"]["phash"] == images.inspect_image(original, 10**8).phash
    assert (checks["kept"]["width"], checks["kept"]["height"]) == (120, 90)
    assert "broken" not in checks


def test_take_hands_over_pixels_once_and_only_for_the_bytes_encoded():
    recording = encoded_pixels.RecordingCv2(cv2)
    bgr = np.zeros((30, 40, 3), np.uint8)
    bgr[:, 20:] = (255, 0, 0)
    ok, buf = recording.imencode(".png", bgr)
    assert ok and recording.INTER_AREA == cv2.INTER_AREA
    assert encoded_pixels.take(b"x" * (buf.size + 1)) is None          # other bytes: not these pixels
    recording.imencode(".png", bgr)
    grey = encoded_pixels.take(buf.tobytes())
    assert grey.shape == (30, 40) and grey[0, 0] == 0 and grey[0, 39] == 29   # blue's share of grey
    assert encoded_pixels.take(buf.tobytes()) is None                   # handed over once
    recording.imencode(".png", bgr)
    assert encoded_pixels.take(None) is None                            # a failed sample's write
    assert encoded_pixels.take(buf.tobytes()) is None                   # empties the slot too
    assert encoded_pixels.opencv_greyscale(np.zeros((4, 4, 4), np.uint8)) is None
    assert encoded_pixels.opencv_greyscale(np.zeros((4, 4), np.uint16)) is None


@pytest.mark.parametrize("mode", ["keep_ratio", "center_crop", "border", "keep_ratio_largest"])
def test_transforms_built_once_resize_to_the_same_bytes(mode, monkeypatch):
    """The workers' resizer builds each albumentations transform once (cached_transforms.py);
    what it stores must be byte for byte what img2dataset's own would store."""
    import albumentations
    import img2dataset.resizer
    from img2dataset.resizer import Resizer
    from witcurate.pipeline import cached_transforms
    samples = [drawn_jpeg(300, 200), drawn_jpeg(140, 260), drawn_jpeg(64, 50), drawn_jpeg(500, 90)]
    resizer = Resizer(image_size=96, resize_mode=mode, resize_only_if_bigger=False, encode_format="jpg",
                      encode_quality=95, max_aspect_ratio=10)
    monkeypatch.setattr(img2dataset.resizer, "A", albumentations)
    plain = [resizer(io.BytesIO(data))[:5] for data in samples * 2]
    cached_transforms.install()
    built = []
    real = albumentations.SmallestMaxSize.__init__
    monkeypatch.setattr(albumentations.SmallestMaxSize, "__init__",
                        lambda self, *a, **kw: built.append(kw) or real(self, *a, **kw))
    cached = [resizer(io.BytesIO(data))[:5] for data in samples * 2]
    assert cached == plain
    assert all(out[0] for out in cached)
    if mode in ("keep_ratio", "center_crop"):                # built once per setting (down or
        distinct = {tuple(sorted(kw.items())) for kw in built}  # upscaling), not once per image
        assert len(built) == len(distinct) <= 2, built
