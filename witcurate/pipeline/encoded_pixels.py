"""The pixels img2dataset's resizer encodes into each stored image, kept for the shard's checks.

The checks hash every stored image (shard_checks.py). Decoding the stored bytes again for that
was most of the check's cost (0.33 ms an image alone on the download benchmark's 299x224 JPEGs,
0.19 ms from the pixels); the resizer has just had the same picture in memory. `install` wraps
the `cv2` module that img2dataset's resizer calls (and only that reference) so that `imencode`
leaves the array it encodes, with the length of what it encoded, in a thread-local slot; the
sample writer, which img2dataset calls next on the same thread, takes it with `take`. The slot
is emptied by every take, so an image is hashed from recorded pixels only when the bytes written
are the bytes just encoded; any other write (img2dataset keeping the original bytes, an encode
that failed) finds it empty or mismatched and its bytes are decoded as before.
"""

from __future__ import annotations

import threading
import types
from typing import Any

_slot = threading.local()


class RecordingCv2(types.ModuleType):
    """OpenCV as img2dataset's resizer sees it: every attribute is cv2's, and `imencode` also
    records what it encoded for this thread's next `take`."""

    def __init__(self, cv2: types.ModuleType):
        super().__init__(cv2.__name__)
        self._cv2 = cv2

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cv2, name)

    def imencode(self, ext, img, *args, **kwargs):
        ok, buf = self._cv2.imencode(ext, img, *args, **kwargs)
        _slot.recorded = (img, buf.size) if ok else None
        return ok, buf


def install() -> None:
    """Wrap the cv2 of img2dataset's resizer module in this process (idempotent)."""
    import img2dataset.resizer
    if not isinstance(img2dataset.resizer.cv2, RecordingCv2):
        img2dataset.resizer.cv2 = RecordingCv2(img2dataset.resizer.cv2)


def take(encoded: bytes | None):
    """The greyscale pixels `encoded` was encoded from on this thread, or None; empties the slot."""
    recorded = getattr(_slot, "recorded", None)
    _slot.recorded = None
    if recorded is None or encoded is None or recorded[1] != len(encoded):
        return None
    return opencv_greyscale(recorded[0])


def opencv_greyscale(pixels):
    """The greyscale of an array as OpenCV holds images (BGR, or one channel), or None for a
    layout the hash does not take (it is then decoded from the bytes)."""
    import cv2
    import numpy as np
    if pixels.dtype != np.uint8:
        return None
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2GRAY)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[:, :, 0]
    return None
