"""Image checks with reasons, the image hashes, and img2dataset's errors as reason codes.

Every check is a pure function returning True or a Drop naming the reason. Sizes are judged on the
ORIGINAL image (what the web served), not on the stored, resized copy. The pixel limit is the
guard against decompression bombs: a 40 kB PNG can claim 20000x20000 pixels and need 1.2 GB once
decoded, so the claimed size is read from the header (Pillow reads headers without decoding)
and checked before any pixel is decoded.
"""

from __future__ import annotations

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


# The perceptual hash is taken of a 32x32 thumbnail, so a JPEG need not be decoded at full size:
# the decoder's DCT scaling (Pillow's draft mode) hands over greyscale at 1/2, 1/4 or 1/8 of the
# size, never under PHASH_DECODE_SIDE. On 300 mixed JPEGs (96 px to 1600x1200, quality 75-95)
# the hash moves by 0.23 bits on average against a full decode, at most 2 of 64 (0.21 and 2
# with 64 here), well inside dedupe's Hamming radius. A stored 299x224 image decodes at 1/4
# (75x56) instead of 1/2 as with 64: the check 0.61 -> 0.38 ms alone, the download workers'
# CPU 18.0 -> 16.7 s per 2,000 images. At 32, 64 px images were hashed from 32 px and the
# planted near-duplicates' recall fell under 0.98 (tests/test_dedupe.py).
PHASH_DECODE_SIDE = 48


def phash64(image: Image.Image) -> int:
    """imagehash.phash (8x8 DCT bits of a 32x32 greyscale thumbnail) as an unsigned 64-bit int,
    first bit most significant, so `f"{h:016x}"` equals `str(imagehash.phash(image))`.

    The same steps as imagehash 4.3 (LANCZOS thumbnail, scipy.fftpack's DCT, bits above the
    median), without its wrapper object, and the median of the 64 values taken as numpy.median
    takes it (the mean of the middle two): 0.28 ms -> 0.13 ms an image, the same bits."""
    import numpy as np
    import scipy.fftpack
    pixels = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS))
    low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
    ordered = np.sort(low, axis=None)
    bits = low > (ordered[31] + ordered[32]) / 2
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


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
    opened once), so a bomb costs a header read, never its decoded size in memory. A JPEG is
    decoded at reduced scale for the hash (PHASH_DECODE_SIDE); width and height are the
    header's, the full size.
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
                img.draft("L", (PHASH_DECODE_SIDE, PHASH_DECODE_SIDE))   # JPEG only; others as they are
                img.load()
                value = phash64(img)
    except Image.DecompressionBombError:
        return Drop(TOO_MANY_PIXELS)
    except Exception:  # noqa: BLE001 - unreadable header, truncated or corrupt data
        return Drop(DECODE_ERROR)
    return ImageFacts(width, height, sha256_hex(data), value)


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
