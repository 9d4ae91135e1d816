"""The pool's semantic duplicates: clean scenes drawn again, which a perceptual hash does not
catch and an image embedding does.

A copy keeps its original's layout (count, positions, sizes, rotations, fill) and moves it: the
objects shifted and rescaled, another background texture of the same scene, other pixel noise,
another image size and JPEG quality (draw.Variant). Groups range from one copy of a scene to the
template spam, one scene copied SPAM_SHARE of all the copies over (a few hundred in a large
pool); the others' sizes follow a heavy tail.
"""

from __future__ import annotations

import random

from witcurate.demo import draw

MAX_GROUP = 20          # copies of one scene outside the template spam


def plan_groups(copies: list[int], clean: list[int], spam_share: float, rng: random.Random) -> dict[int, int]:
    """copy -> the clean original it re-renders: the first spam_share of `copies` copy one scene,
    the rest come in groups of 1..MAX_GROUP copies, each of another original where there are
    enough."""
    if not copies or not clean:
        return {}
    originals: dict[int, int] = {}
    pool = list(clean)
    rng.shuffle(pool)
    spam = round(len(copies) * spam_share)
    for i in copies[:spam]:
        originals[i] = pool[0]
    pos, next_original = spam, 1
    while pos < len(copies):
        size = min(MAX_GROUP, int(rng.paretovariate(1.2)), len(copies) - pos)
        original = pool[next_original % len(pool)]
        next_original += 1
        for i in copies[pos:pos + size]:
            originals[i] = original
        pos += size
    return originals


def draw_copy(spec: dict, original_seed: str, original_size: tuple[int, int], key: str) -> bytes:
    """A JPEG of the scene `spec` drawn from `original_seed` at `original_size`, re-rendered."""
    rng = random.Random(f"rerender:{key}")
    variant = draw.random_variant(rng, key)
    factor = rng.uniform(0.85, 1.25)
    w, h = (max(1, round(side * factor)) for side in original_size)
    img = draw.render(spec, original_seed, w, h, variant)
    return draw.encode(img, "JPEG", rng.choice((55, 65, 75, 85, 95)))
