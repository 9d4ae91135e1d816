"""Image checks: sizes, content types, safe decoding of bombs and broken files, the hashes, and
img2dataset's error messages as reason codes."""

from __future__ import annotations

import hashlib
import io
import random
import resource

import imagehash
import pytest
from PIL import Image, ImageDraw

from witcurate.demo.draw import bomb_png   # the demo world's decompression bomb
from witcurate.filters import images
from witcurate.filters.base import Drop


def jpeg_bytes(w=120, h=90) -> bytes:
    img = Image.new("RGB", (w, h), (30, 90, 160))
    ImageDraw.Draw(img).ellipse([10, 10, w // 2, h // 2], fill=(240, 200, 20))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_size_checks_on_the_original_size():
    assert images.size_ok(640, 480, 64, 3.0, 10**8) is True
    assert images.size_ok(63, 480, 64, 10.0, 10**8) == Drop("image_too_small")
    assert images.size_ok(1000, 300, 64, 3.0, 10**8) == Drop("aspect_ratio")
    assert images.size_ok(300, 900, 64, 3.0, 10**8) is True                # exactly 3:1
    assert images.size_ok(20000, 20000, 64, 3.0, 89_478_485) == Drop("too_many_pixels")
    assert images.size_ok(None, 10, 64, 3.0, 10**8) == Drop("decode_error")


def test_content_types():
    assert images.content_type_ok("image/jpeg") is True
    assert images.content_type_ok("application/octet-stream") is True      # left to the decoder
    assert images.content_type_ok("") is True
    assert images.content_type_ok("text/html; charset=utf-8") == Drop("not_an_image")
    assert images.content_type_ok("application/json") == Drop("not_an_image")


def test_inspect_image_hashes_what_imagehash_and_hashlib_would():
    data = jpeg_bytes()
    facts = images.inspect_image(data, 10**8)
    assert (facts.width, facts.height) == (120, 90)
    assert facts.sha256 == hashlib.sha256(data).hexdigest()
    assert f"{facts.phash:016x}" == str(imagehash.phash(Image.open(io.BytesIO(data))))
    assert 0 <= facts.phash < 2**64


def test_phash64_equals_imagehash_on_every_kind_of_image():
    # Flat and two-tone images put many equal DCT values at the median, where a different
    # median rule would flip bits; palette, alpha and 16-bit greyscale go through convert("L").
    rng = random.Random(11)
    cases = [Image.new("RGB", (64, 48), (90, 90, 90)), Image.new("L", (10, 300), 0),
             Image.new("RGBA", (50, 50), (255, 0, 0, 128)), Image.new("I;16", (40, 30), 3000)]
    two_tone = Image.new("RGB", (64, 64), (0, 0, 0))
    ImageDraw.Draw(two_tone).rectangle([0, 0, 31, 63], fill=(255, 255, 255))
    cases += [two_tone, two_tone.convert("P")]
    for _ in range(40):
        img = Image.new("RGB", (rng.randrange(8, 300), rng.randrange(8, 300)),
                        tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randrange(0, 8)):
            x, y = rng.randrange(img.width), rng.randrange(img.height)
            draw.rectangle([x, y, x + rng.randrange(1, 80), y + rng.randrange(1, 80)],
                           fill=tuple(rng.randrange(256) for _ in range(3)))
        cases.append(img)
    for img in cases:
        assert f"{images.phash64(img):016x}" == str(imagehash.phash(img)), (img.mode, img.size)


def test_a_large_jpeg_is_hashed_from_a_reduced_decode_close_to_the_full_one():
    rng = random.Random(3)
    big = Image.new("RGB", (800, 600), (200, 180, 40))
    draw = ImageDraw.Draw(big)
    for _ in range(30):
        x, y = rng.randrange(800), rng.randrange(600)
        draw.ellipse([x, y, x + rng.randrange(20, 300), y + rng.randrange(20, 200)],
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    facts = images.inspect_image(data, 10**8)
    assert (facts.width, facts.height) == (800, 600)           # the header's size, not the draft's
    reduced = Image.open(io.BytesIO(data))
    reduced.draft("L", (images.PHASH_DECODE_SIDE, images.PHASH_DECODE_SIDE))
    assert reduced.size == (100, 75)                            # decoded at 1/8
    assert f"{facts.phash:016x}" == str(imagehash.phash(reduced))
    full = imagehash.phash(Image.open(io.BytesIO(data)))
    assert full - imagehash.phash(reduced) <= 2                 # bits apart from a full decode


def test_decompression_bomb_is_refused_from_its_header_without_decoding():
    data = bomb_png()
    assert len(data) < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert images.inspect_image(data, 89_478_485) == Drop("too_many_pixels")
    assert images.inspect_image(bomb_png(12000, 12000), 50_000_000) == Drop("too_many_pixels")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"peak memory grew by {grown_mb:.0f} MB"
    assert images.header_size(data) in ((20000, 20000), Drop("too_many_pixels"))


@pytest.mark.parametrize("data", [b"", b"<html>hello</html>", b"\xff\xd8\xff\xe0garbage", jpeg_bytes()[:400]])
def test_broken_data_is_a_decode_error(data):
    assert images.inspect_image(data, 10**8) == Drop("decode_error")


@pytest.mark.parametrize("status,message,reason", [
    ("failed_to_download", "HTTP Error 404: Not Found", "http_404"),
    ("failed_to_download", "HTTP Error 503: Service Unavailable", "http_503"),
    ("failed_to_download", "<urlopen error timed out>", "timeout"),
    ("failed_to_download", "The read operation timed out", "timeout"),
    ("failed_to_download", "[Errno 104] Connection reset by peer", "connection_error"),
    ("failed_to_download", "<urlopen error [Errno 111] Connection refused>", "connection_error"),
    ("failed_to_download", "Remote end closed connection without response", "connection_error"),
    ("failed_to_download", "IncompleteRead(1178 bytes read, 2358 more expected)", "truncated"),
    ("failed_to_download", "<urlopen error [Errno -2] Name or service not known>", "dns_error"),
    ("failed_to_download", "Use of image disallowed by X-Robots-Tag directive", "opt_out_header"),
    ("failed_to_download", "<urlopen error not an image: Content-Type 'text/html'>", "not_an_image"),
    ("failed_to_download", "<urlopen error redirect to http://10.0.0.1/ refused: refused address 10.0.0.1 (private)>",
     "private_address"),
    ("failed_to_download", "<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed>", "ssl_error"),
    ("failed_to_resize", "Image decoding error", "decode_error"),
    ("failed_to_resize", "OpenCV(4.14.0) .../loadsave.cpp:1310: error: (-215:Assertion failed) !buf.empty() "
                         "in function 'imdecode_'", "empty_body"),
    ("failed_to_resize", "image too small", "image_too_small"),
    ("failed_to_resize", "aspect ratio too large", "aspect_ratio"),
    ("failed_to_resize", "image area too large", "too_many_pixels"),
    ("failed_to_resize", "OpenCV(4.14.0) ... error: (-215:Assertion failed) pixels <= CV_IO_MAX_IMAGE_PIXELS",
     "too_many_pixels"),
    ("failed_to_resize", "something nobody has seen", "resize_error"),
    ("failed_to_download", "something nobody has seen", "download_error"),
])
def test_img2dataset_errors_become_reason_codes(status, message, reason):
    assert images.classify_error(status, message) == reason
