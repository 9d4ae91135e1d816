"""Procedural images: 1-4 objects of one shape and one colour on a textured scene.

Large, outlined shapes so that a tiny CLIP at 64 px can tell them apart; positions, sizes,
rotations, textures and pixel noise are random, so no two drawings are alike and a
near-duplicate (the same drawing re-encoded or resized) is a meaningful notion. Everything is
deterministic from the seed passed in.
"""

from __future__ import annotations

import functools
import io
import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from witcurate.demo.vocab import COLOURS, SCENES, SHAPES

LIGHTING = 10            # brightness swing of a background's uneven light
SUPERSAMPLE = 2          # draw at twice the size, then downscale: smooth edges for little cost

# (base RGB, second RGB for texture/gradient)
_SCENE_COLOURS = {
    "grass": ((70, 145, 50), (40, 105, 30)),
    "sky": ((95, 155, 235), (185, 218, 250)),
    "water": ((25, 85, 155), (80, 150, 205)),
    "sand": ((226, 200, 142), (190, 160, 105)),
    "snow": ((238, 242, 248), (190, 200, 215)),
    "night": ((10, 14, 42), (35, 40, 85)),
}

# Object size (fraction of the short side) by count: large and clear.
_SIZE_RANGE = {1: (0.48, 0.66), 2: (0.34, 0.44), 3: (0.29, 0.36), 4: (0.26, 0.32)}

_ASPECTS = ((1, 1), (1, 1), (5, 4), (4, 5), (4, 3), (3, 4), (3, 2))


def every_spec() -> list[dict]:
    """Every scene the vocabulary can describe (count x colour x shape x scene), in a fixed order."""
    return [{"count": n, "colour": c, "shape": s, "scene": sc}
            for n in range(1, 5) for c in COLOURS for s in SHAPES for sc in SCENES]


def random_spec(rng: random.Random) -> dict:
    """What a drawing shows: count, colour, shape, scene."""
    return {"count": rng.randint(1, 4), "colour": rng.choice(list(COLOURS)),
            "shape": rng.choice(list(SHAPES)), "scene": rng.choice(list(SCENES))}


def random_size(rng: random.Random, short_side: int) -> tuple[int, int]:
    """(width, height) with the given short side and a mildly varying aspect ratio."""
    a, b = rng.choice(_ASPECTS)
    if a >= b:
        return round(short_side * a / b), short_side
    return short_side, round(short_side * b / a)


def _background(scene: str, w: int, h: int, rng: random.Random, nprng: np.random.Generator) -> Image.Image:
    """The scene at w x h: a base colour or vertical gradient, coarse blotches and a texture
    (grass blades, clouds, waves, sand grains, snowflakes, stars), mostly drawn with numpy."""
    base, second = (np.array(c, dtype=np.int16) for c in _SCENE_COLOURS[scene])
    if scene in ("sky", "snow", "night"):
        t = np.linspace(0.0, 0.8, h, dtype=np.float32)[:, None]
        rows = (base * (1 - t) + second * t).astype(np.int16)        # vertical gradient
    else:
        rows = np.broadcast_to(base, (h, 3))
    blotch = nprng.integers(-9, 10, size=(h // 4 + 1, w // 4 + 1, 1), dtype=np.int16)
    arr = rows[:, None, :] + blotch.repeat(4, 0).repeat(4, 1)[:h, :w]
    if scene == "grass":                                      # blades: short vertical streaks
        for density, length, shade in ((1 / 30, max(3, h // 16), second), (1 / 60, max(4, h // 10),
                                       second + 25)):
            seeds = nprng.random((h, w)) < density
            streak = seeds.copy()
            for k in range(1, length):
                streak[:-k] |= seeds[k:]
            arr[streak] = shade
    elif scene == "sand":                                     # grains
        arr[nprng.random((h, w)) < 1 / 15] = second
    elif scene in ("snow", "night"):                          # flakes / stars
        dots = nprng.random((h, w)) < (1 / 40 if scene == "snow" else 1 / 120)
        if scene == "snow":
            arr[dots] = second
        else:
            arr[dots] = nprng.integers(170, 256, size=(int(dots.sum()), 1), dtype=np.int16)
    arr = arr + _lighting(w, h, nprng)[:, :, None]
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
    if scene == "sky":                                        # a few soft clouds
        d = ImageDraw.Draw(img)
        for _ in range(rng.randint(1, 3)):
            cx, cy = rng.randrange(w), rng.randrange(h // 2)
            rw, rh = rng.randint(w // 8, w // 4), rng.randint(h // 20, h // 10)
            for k in range(3):
                ox = (k - 1) * rw // 2
                d.ellipse([cx + ox - rw // 2, cy - rh, cx + ox + rw // 2, cy + rh], fill=(225, 235, 248))
    elif scene == "water":                                    # waves
        d = ImageDraw.Draw(img)
        sec = tuple(int(c) for c in second)
        for y0 in range(rng.randrange(4), h, max(3, h // 14)):
            phase, amp = rng.random() * 6.28, rng.uniform(0.8, 1.8) * h / 96
            step = max(4, w // 24)
            pts = [(x, y0 + amp * math.sin(phase + x / (w / 9))) for x in range(0, w + step, step)]
            d.line(pts, fill=sec, width=max(1, h // 96))
    return img


def _lighting(w: int, h: int, nprng: np.random.Generator) -> np.ndarray:
    """Soft uneven light over the scene: a 3 x 3 grid of brightness offsets (up to +-LIGHTING)
    smoothly interpolated. Two backgrounds of one scene differ in it, as two photos would."""
    grid = ((nprng.random((3, 3)) * 2 - 1) * 127 + 128).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(grid).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
    return np.round((smooth - 128) / 127 * LIGHTING).astype(np.int16)


def scene_background(scene: str, w: int, h: int, rng: random.Random) -> Image.Image:
    """A scene's textured background alone, from `rng` (what banners in the pool are drawn on)."""
    return _background(scene, w, h, rng, np.random.default_rng(rng.getrandbits(64)))


def _rotate(points: list[tuple[float, float]], angle: float, cx: float, cy: float):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _shape_polygon(shape: str, r: float) -> list[tuple[float, float]]:
    """Outline of a shape centred on (0, 0), radius r (half the object size)."""
    if shape == "square":
        k = r * 0.85
        return [(-k, -k), (k, -k), (k, k), (-k, k)]
    if shape == "triangle":
        return [(0, -r), (r * 0.95, r * 0.72), (-r * 0.95, r * 0.72)]
    if shape == "diamond":
        return [(0, -r), (r * 0.62, 0), (0, r), (-r * 0.62, 0)]
    if shape == "star":
        pts = []
        for i in range(10):
            rad = r if i % 2 == 0 else r * 0.42
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return pts
    if shape == "heart":
        pts = []
        for i in range(36):
            t = 2 * math.pi * i / 36
            x = 16 * math.sin(t) ** 3
            y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
            pts.append((x * r / 17, -y * r / 17 - r * 0.1))
        return pts
    if shape == "cross":
        a, k = r * 0.95, r * 0.32
        return [(-k, -a), (k, -a), (k, -k), (a, -k), (a, k), (k, k), (k, a), (-k, a),
                (-k, k), (-a, k), (-a, -k), (-k, -k)]
    raise ValueError(f"no polygon for shape {shape!r}")


def _outline_for(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    lum = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (25, 25, 25) if lum > 110 else (225, 225, 225)


def _draw_object(d: ImageDraw.ImageDraw, shape: str, fill, cx: float, cy: float, r: float,
                 angle: float, line: int) -> None:
    outline = _outline_for(fill)
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline, width=line)
    elif shape == "ring":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], outline=outline, width=int(r * 0.42) + line)
        d.ellipse([cx - r + line, cy - r + line, cx + r - line, cy + r - line], outline=fill,
                  width=int(r * 0.42) - line)
    else:
        d.polygon(_rotate(_shape_polygon(shape, r), angle, cx, cy), fill=fill, outline=outline,
                  width=line)


def _place(count: int, w: int, h: int, r: float, rng: random.Random) -> list[tuple[float, float]]:
    """Centres for `count` objects of radius r, not overlapping where that fits."""
    centres: list[tuple[float, float]] = []
    for _ in range(count):
        best, best_gap = None, -1.0
        for _ in range(40):
            c = (rng.uniform(r, w - r), rng.uniform(r, h - r))
            gap = min((math.dist(c, o) for o in centres), default=1e9)
            if gap >= 2.1 * r:
                best = c
                break
            if gap > best_gap:
                best, best_gap = c, gap
        centres.append(best)
    return centres


@dataclass(frozen=True)
class Variant:
    """How a re-render of a scene differs from the first drawing: the objects shifted (fractions
    of the short side) and rescaled about the image centre, another background texture, other
    pixel noise. The layout itself (count, positions, sizes, rotations, fill) is the same."""
    shift: tuple[float, float] = (0.0, 0.0)
    scale: float = 1.0
    background_seed: str = ""
    noise_seed: str = ""


def random_variant(rng: random.Random, key: str) -> Variant:
    """A re-render: another background texture and light, other noise, the objects nudged (up
    to 1% of the short side) and rescaled (up to 2%). A 64-bit perceptual hash tells most such
    copies from their original; an image embedding puts them next to it."""
    return Variant(shift=(rng.uniform(-0.01, 0.01), rng.uniform(-0.01, 0.01)),
                   scale=rng.uniform(0.98, 1.02), background_seed=f"{key}:bg", noise_seed=f"{key}:noise")


def _layout(spec: dict, seed: int | str, aspect: float) -> tuple[float, tuple, list]:
    """The scene's objects in units of the short side (frame aspect x 1 or 1 x aspect): the
    radius, the fill, and (centre, size factor, angle) per object. The same at any pixel size."""
    rng = random.Random(f"objects:{seed}")
    w, h = (aspect, 1.0) if aspect >= 1 else (1.0, 1 / aspect)
    lo, hi = _SIZE_RANGE[spec["count"]]
    r = rng.uniform(lo, hi) / 2
    jitter = [rng.randint(-12, 12) for _ in range(3)]
    fill = tuple(int(min(255, max(0, c + j))) for c, j in zip(COLOURS[spec["colour"]], jitter))
    limit = 0.2 if spec["shape"] in ("square", "diamond") else 0.35
    objects = [(c, rng.uniform(0.9, 1.0), rng.uniform(-limit, limit)) for c in _place(spec["count"], w, h, r, rng)]
    return r, fill, objects


def render(spec: dict, seed: int | str, width: int, height: int, variant: Variant | None = None) -> Image.Image:
    """Draw `spec` at width x height, deterministically from `seed` (and `variant`).

    The background is drawn at full size; the objects on a transparent layer at twice the
    size, downscaled (smooth edges) and pasted over it; then a little pixel noise. The layout
    is fixed by the seed in units of the short side, so a variant redraws the same scene."""
    variant = variant or Variant()
    rng = random.Random(f"draw:{variant.background_seed or seed}")
    nprng = np.random.default_rng(rng.getrandbits(64))
    img = _background(spec["scene"], width, height, rng, nprng)
    ss = SUPERSAMPLE if width * height <= 400_000 else 1
    w, h = width * ss, height * ss
    unit = min(w, h)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    r, fill, objects = _layout(spec, seed, width / height)
    line = max(2, round(unit / 60))
    (sx, sy), k = variant.shift, variant.scale
    for (cx, cy), size, angle in objects:
        radius = r * unit * k * size
        x = w / 2 + ((cx + sx) * unit - w / 2) * k
        y = h / 2 + ((cy + sy) * unit - h / 2) * k
        x, y = min(max(x, 0.7 * radius), w - 0.7 * radius), min(max(y, 0.7 * radius), h - 0.7 * radius)
        _draw_object(d, spec["shape"], fill, x, y, radius, angle, line)
    if ss != 1:
        layer = layer.resize((width, height), Image.Resampling.BOX)
    img.paste(layer, (0, 0), layer)
    noise = np.random.default_rng(random.Random(f"noise:{variant.noise_seed or seed}").getrandbits(64))
    arr = np.asarray(img, dtype=np.int16) + noise.integers(-5, 6, size=(height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def encode(img: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    else:
        img.save(buf, fmt)
    return buf.getvalue()


def near_duplicate(data: bytes, rng: random.Random) -> bytes:
    """The same drawing, decoded, slightly resized and re-encoded at another JPEG quality."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    f = rng.choice((0.9, 0.95, 1.05, 1.1))
    img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))),
                     Image.Resampling.BILINEAR)
    return encode(img, "JPEG", rng.choice((60, 70, 80)))


@functools.lru_cache(maxsize=2)
def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG whose header claims width x height pixels: about 50 kB on disk, but
    width*height pixels (400 million by default) once a decoder expands it. Compressing the
    zeros takes half a second and the bytes never change, so a process makes them once."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = (width + 7) // 8 + 1                      # filter byte + packed bits
    comp = zlib.compressobj(9)
    zero_rows = bytes(row * 1000)
    body = b"".join(comp.compress(zero_rows) for _ in range(height // 1000))
    body += comp.compress(bytes(row * (height % 1000))) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
