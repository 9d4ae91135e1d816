"""Image checks with reasons, the image hashes, and img2dataset's errors as reason codes.

Every check is a pure function returning True or a Drop naming the reason. Sizes are judged on the
ORIGINAL image (what the web served), not on the stored, resized copy. The pixel limit is the
guard against decompression bombs: a 40 kB PNG can claim 20000x20000 pixels and need 1.2 GB once
decoded, so the claimed size is read from the header (Pillow reads headers without decoding)
and checked before any pixel is decoded.
"""

from __future__ import annotations

import functools
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from PIL import Image

from witcurate.filters.base import Decision, Drop, first_drop

# Reason codes (stable strings, counted in every manifest).
DECODE_ERROR = "decode_error"
NOT_AN_IMAGE = "not_an_image"
IMAGE_TOO_SMALL = "image_too_small"
ASPECT_RATIO = "aspect_ratio"
TOO_MANY_PIXELS = "too_many_pixels"
OPT_OUT_HEADER = "opt_out_header"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
DNS_ERROR = "dns_error"
TRUNCATED = "truncated"
SSL_ERROR = "ssl_error"
REDIRECT_ERROR = "redirect_error"
HASH_MISMATCH = "hash_mismatch"
DOWNLOAD_ERROR = "download_error"
RESIZE_ERROR = "resize_error"
EMPTY_BODY = "empty_body"

# ---------------------------------------------------------------- size checks ----------------


def min_side_ok(width: int, height: int, min_side: int) -> Decision:
    if min(width, height) < min_side:
        return Drop(IMAGE_TOO_SMALL)
    return True


def aspect_ratio_ok(width: int, height: int, max_aspect_ratio: float) -> Decision:
    if min(width, height) <= 0:
        return Drop(IMAGE_TOO_SMALL)
    if max(width, height) / min(width, height) > max_aspect_ratio:
        return Drop(ASPECT_RATIO)
    return True


def pixels_ok(width: int, height: int, max_pixels: int) -> Decision:
    if width * height > max_pixels:
        return Drop(TOO_MANY_PIXELS)
    return True


def size_ok(width: int | None, height: int | None, min_side: int, max_aspect_ratio: float,
            max_pixels: int) -> Decision:
    """All size checks on an original size, the pixel limit first (it is the safety one)."""
    if not width or not height:
        return Drop(DECODE_ERROR)
    return first_drop((pixels_ok(width, height, max_pixels), min_side_ok(width, height, min_side),
                       aspect_ratio_ok(width, height, max_aspect_ratio)))


# Content types that are never an image, whatever the bytes say (an HTML page served with 200).
# Anything else, including a missing or generic type (application/octet-stream), is left to the
# decoder: plenty of image hosts label images wrongly.
_NON_IMAGE_TYPES = {"application/json", "application/xml", "application/xhtml+xml",
                    "application/javascript", "application/x-javascript", "application/ld+json",
                    "application/rss+xml", "application/atom+xml"}


def content_type_ok(content_type: str) -> Decision:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media.startswith("text/") or media in _NON_IMAGE_TYPES:
        return Drop(NOT_AN_IMAGE)
    return True


# ---------------------------------------------------------------- hashes ---------------------


# The perceptual hash: the 8x8 lowest frequencies of the 2-D DCT of a 32x32 greyscale thumbnail,
# one bit each, set where the value is above their median (the pHash of Zauner and of imagehash).
# The thumbnail is an area average (OpenCV's INTER_AREA) of the full-resolution greyscale, so it
# can be taken from pixels already decoded: the download's checks hash the array img2dataset's
# resizer encodes into the stored image (encoded_pixels.py), never decoding the stored image
# again; images read as bytes (the evaluation set, a stored image with no recorded pixels) are
# decoded to greyscale first. On 326 stored images (the demo world's and drawn ones, 96 to 256 px
# stored) the two routes differ by 0.10 bits on average, at most 2; either is 0.45 bits on average
# from imagehash.phash (a LANCZOS thumbnail) of the stored image, where the reduced JPEG decode
# this replaced was 0.77. A JPEG is decoded at no less than HASH_DECODE_SIDE a side (its DCT
# scaling), so a large evaluation image need not be decoded in full.
HASH_DECODE_SIDE = 256


@functools.lru_cache(maxsize=1)
def _dct_rows():
    """The first 8 rows of the unnormalised DCT-II matrix for 32 samples (scipy.fftpack's dct)."""
    import numpy as np
    n, k = np.arange(32), np.arange(8)[:, None]
    return 2 * np.cos(np.pi * k * (2 * n + 1) / 64)


def phash64(grey) -> int:
    """The 64-bit perceptual hash of a 2-D greyscale array (any size; see above) as an unsigned
    int, first bit most significant; the median of the 64 values is numpy.median's (the mean of
    the middle two)."""
    import cv2
    import numpy as np
    thumb = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    rows = _dct_rows()
    # Rounded so that values equal in exact arithmetic (a flat image's zeros, a symmetric image's
    # pairs) compare equal, whatever the float error of the product: ties stay ties.
    low = np.round(rows @ thumb @ rows.T, 6)
    ordered = np.sort(low, axis=None)
    bits = low > (ordered[31] + ordered[32]) / 2
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def greyscale(image: Image.Image):
    """An image's greyscale pixels as a uint8 array, as the hash wants them."""
    import numpy as np
    return np.asarray(image if image.mode == "L" else image.convert("L"))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class ImageFacts:
    width: int
    height: int
    sha256: str
    phash: int


def header_size(data: bytes) -> tuple[int, int] | Drop:
    """(width, height) from the image header without decoding pixels, or a Drop."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError:
        return Drop(TOO_MANY_PIXELS)
    except Exception:  # noqa: BLE001 - any unreadable header is a decode error
        return Drop(DECODE_ERROR)


def inspect_image(data: bytes, max_pixels: int) -> ImageFacts | Drop:
    """Decode `data` safely and hash it: ImageFacts, or a Drop naming why not.

    The header's claimed size is checked against `max_pixels` before decoding (the image is
    opened once), so a bomb costs a header read, never its decoded size in memory. Width and
    height are the header's, the full size, whatever scale a JPEG is decoded at for the hash.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if not width or not height:
                    return Drop(DECODE_ERROR)
                if pixels_ok(width, height, max_pixels) is not True:
                    return Drop(TOO_MANY_PIXELS)
                img.draft("L", (HASH_DECODE_SIDE, HASH_DECODE_SIDE))   # JPEG only; others as they are
                img.load()
                value = phash64(greyscale(img))
    except Image.DecompressionBombError:
        return Drop(TOO_MANY_PIXELS)
    except Exception:  # noqa: BLE001 - unreadable header, truncated or corrupt data
        return Drop(DECODE_ERROR)
    return ImageFacts(width, height, sha256_hex(data), value)


def inspect_pixels(data: bytes, grey, max_pixels: int) -> ImageFacts | Drop:
    """ImageFacts of an image whose greyscale pixels are in hand (`grey`, the array `data`
    encodes), without decoding `data`."""
    height, width = grey.shape[:2]
    if not width or not height:
        return Drop(DECODE_ERROR)
    if pixels_ok(width, height, max_pixels) is not True:
        return Drop(TOO_MANY_PIXELS)
    return ImageFacts(width, height, sha256_hex(data), phash64(grey))


# ------------------------------------------------- img2dataset errors as reason codes ---------

_HTTP_STATUS = re.compile(r"HTTP Error (\d{3})")

# Ordered: the first pattern found in the (lower-cased) message wins.
_ERROR_PATTERNS: tuple[tuple[str, str], ...] = (
    ("refused address", "private_address"),
    ("refused scheme", "unsupported_scheme"),
    ("not an image", NOT_AN_IMAGE),
    ("x-robots-tag", OPT_OUT_HEADER),
    ("cv_io_max_image_pixels", TOO_MANY_PIXELS),
    ("image area too large", TOO_MANY_PIXELS),
    ("decompression bomb", TOO_MANY_PIXELS),
    ("image too small", IMAGE_TOO_SMALL),
    ("aspect ratio too large", ASPECT_RATIO),
    ("!buf.empty()", EMPTY_BODY),                 # OpenCV's imdecode given zero bytes
    ("image decoding error", DECODE_ERROR),
    ("hash mismatch", HASH_MISMATCH),
    ("incompleteread", TRUNCATED),
    ("incomplete read", TRUNCATED),
    ("timed out", TIMEOUT),
    ("timeout", TIMEOUT),
    ("name or service not known", DNS_ERROR),
    ("nodename nor servname", DNS_ERROR),
    ("temporary failure in name resolution", DNS_ERROR),
    ("no address associated", DNS_ERROR),
    ("getaddrinfo failed", DNS_ERROR),
    ("certificate", SSL_ERROR),
    ("ssl", SSL_ERROR),
    ("redirect", REDIRECT_ERROR),
    ("connection reset", CONNECTION_ERROR),
    ("connection refused", CONNECTION_ERROR),
    ("connection aborted", CONNECTION_ERROR),
    ("remote end closed connection", CONNECTION_ERROR),
    ("broken pipe", CONNECTION_ERROR),
    ("network is unreachable", CONNECTION_ERROR),
    ("no route to host", CONNECTION_ERROR),
    ("badstatusline", CONNECTION_ERROR),
    ("remotedisconnected", CONNECTION_ERROR),
    ("unknown url type", "invalid_url"),
    ("no host given", "invalid_url"),
)


def classify_error(status: str | None, message: str | None) -> str:
    """A stable reason code for one img2dataset per-sample result (its `status` and
    `error_message`): http_404, timeout, decode_error, opt_out_header, ..."""
    text = message or ""
    match = _HTTP_STATUS.search(text)
    if match:
        return f"http_{match.group(1)}"
    low = text.lower()
    for needle, reason in _ERROR_PATTERNS:
        if needle in low:
            return reason
    if status == "failed_to_resize":
        return RESIZE_ERROR
    return DOWNLOAD_ERROR
