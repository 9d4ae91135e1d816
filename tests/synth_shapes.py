"""A tiny synthetic image-text world for the trainer tests: coloured shapes drawn with Pillow,
captions that say what is drawn ("two red circles on grass"), written as WebDataset tars and as
a zero-shot folder. Small and deterministic for a given seed."""

from __future__ import annotations

import io
import json
import math
import os
import random
import tarfile

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "yellow": (240, 220, 30),
           "white": (250, 250, 250), "purple": (140, 40, 170)}
SHAPES = ("circle", "square", "triangle", "star")
SCENES = {"grass": (60, 150, 60), "sand": (210, 190, 140), "sky": (120, 180, 240),
          "night": (20, 20, 40)}
COUNTS = {1: "one", 2: "two", 3: "three"}


def draw(shape: str, colour: str, count: int, scene: str, size: int, rng: random.Random) -> Image.Image:
    img = Image.new("RGB", (size, size), SCENES[scene])
    d = ImageDraw.Draw(img)
    r = size // 7
    slots = [(size * (i + 1) // (count + 1), size // 2 + rng.randint(-size // 8, size // 8))
             for i in range(count)]
    for cx, cy in slots:
        fill = COLOURS[colour]
        if shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif shape == "square":
            d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif shape == "triangle":
            d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        else:
            pts = []
            for k in range(10):
                rad = r if k % 2 == 0 else r * 0.45
                a = -math.pi / 2 + k * math.pi / 5
                pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
            d.polygon(pts, fill=fill)
    return img


def caption(shape: str, colour: str, count: int, scene: str) -> str:
    noun = shape if count == 1 else shape + "s"
    return f"{COUNTS[count]} {colour} {noun} on {scene}"


def sample(rng: random.Random, size: int):
    shape = rng.choice(SHAPES)
    colour = rng.choice(list(COLOURS))
    count = rng.choice(list(COUNTS))
    scene = rng.choice(list(SCENES))
    return draw(shape, colour, count, scene, size, rng), caption(shape, colour, count, scene), shape


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: str, n: int, seed: int = 0, size: int = 64, start: int = 0,
              corrupt: tuple[int, ...] = (), tag_keys: bool = False) -> list[str]:
    """n samples KEY.jpg/KEY.txt/KEY.json; indices in `corrupt` get bytes that are not an image;
    `tag_keys` appends the key to each caption (unique captions). Returns the captions in order."""
    rng = random.Random(seed)
    captions = []
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            img, text, shape = sample(rng, size)
            key = f"{start + i:08d}"
            if tag_keys:
                text = f"{text} #{key}"
            data = b"not an image at all" if i in corrupt else jpeg(img)
            _add(tar, key + ".jpg", data)
            _add(tar, key + ".txt", text.encode())
            _add(tar, key + ".json", json.dumps({"uid": key, "shape": shape}).encode())
            captions.append(text)
    return captions


def write_zeroshot(root: str, per_class: int = 4, seed: int = 1, size: int = 64) -> None:
    """eval/zeroshot/<shape>/*.jpg with classnames.json and templates.json."""
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    for shape in SHAPES:
        os.makedirs(os.path.join(root, shape), exist_ok=True)
        for i in range(per_class):
            img = draw(shape, rng.choice(list(COLOURS)), rng.choice([1, 2, 3]),
                       rng.choice(list(SCENES)), size, rng)
            img.save(os.path.join(root, shape, f"{i:03d}.jpg"), quality=90)
    with open(os.path.join(root, "classnames.json"), "w") as f:
        json.dump(list(SHAPES), f)
    with open(os.path.join(root, "templates.json"), "w") as f:
        json.dump(["a photo of a {}.", "a {} on grass."], f)
