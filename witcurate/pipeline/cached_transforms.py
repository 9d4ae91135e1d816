"""albumentations transforms built once per thread for img2dataset's resizer, not once per image.

img2dataset's Resizer builds a new albumentations transform (SmallestMaxSize, LongestMaxSize,
CenterCrop, PadIfNeeded) for every image it resizes. Building one validates its arguments and
seeds a numpy generator: 120 us an image, on top of a resize of about 1.3 ms, about as much as
the shard's check of the image costs. The transforms it asks for depend only on the Resizer's
settings and, applied with p=1, only on the image, so the same object can serve every image:
`install` wraps the `A` (albumentations) that img2dataset's resizer module calls, and only that
reference, so that those four constructors hand back the transform built earlier on the same
thread with the same arguments. The stored bytes are the same (tests/test_shard_checks.py).
"""

from __future__ import annotations

import threading
import types
from typing import Any

CACHED = ("SmallestMaxSize", "LongestMaxSize", "CenterCrop", "PadIfNeeded")

_built = threading.local()


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class CachedTransforms(types.ModuleType):
    """albumentations as img2dataset's resizer sees it: the CACHED constructors build once per
    thread and arguments; everything else is albumentations'."""

    def __init__(self, albumentations: types.ModuleType):
        super().__init__(albumentations.__name__)
        self._albumentations = albumentations
        for name in CACHED:
            setattr(self, name, self._builder(name))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._albumentations, name)

    def _builder(self, name: str):
        cls = getattr(self._albumentations, name)

        def build(**kwargs):
            cache = getattr(_built, "transforms", None)
            if cache is None:
                cache = _built.transforms = {}
            key = (name, tuple(sorted((k, _frozen(v)) for k, v in kwargs.items())))
            transform = cache.get(key)
            if transform is None:
                transform = cache[key] = cls(**kwargs)
            return transform
        return build


def install() -> None:
    """Wrap the albumentations of img2dataset's resizer module in this process (idempotent)."""
    import img2dataset.resizer
    if not isinstance(img2dataset.resizer.A, CachedTransforms):
        img2dataset.resizer.A = CachedTransforms(img2dataset.resizer.A)
