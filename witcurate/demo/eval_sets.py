"""The demo world's clean sets: trusted pairs (the CLIP scorer's training data) and the
evaluation sets (zero-shot folders by shape, retrieval pairs), disjoint from the pool.

The trusted set is mostly scenes, and a share (demo.trusted_named_off_target) of banners,
charts, logos and screenshots captioned as what they are: a curated caption set of the real
kind (CC3M, COCO) holds those too, so a real CLIP model has seen them under their own names.
A scorer that never saw them places them among the scenes whose words they show, and neither
the CLIP score nor the target filter can then tell them apart (docs/semantic.md)."""

from __future__ import annotations

import os
import random
import tarfile
from typing import Callable

from PIL import Image

from witcurate.config import DemoSection
from witcurate.demo import draw, offtarget
from witcurate.demo.files import tar_add, write_json
from witcurate.demo.vocab import SHAPES, ZEROSHOT_TEMPLATES, random_caption

SAMPLES_PER_TAR = 1000
PairMaker = Callable[[random.Random, DemoSection, str], "tuple[Image.Image, str]"]


def scene_pair(rng: random.Random, cfg: DemoSection, key: str) -> tuple[Image.Image, str]:
    """A scene and a caption that describes it."""
    spec = draw.random_spec(rng)
    w, h = draw.random_size(rng, cfg.image_size)
    return draw.render(spec, key, w, h), random_caption(spec, rng)


def named_off_target_pair(rng: random.Random, cfg: DemoSection, key: str) -> tuple[Image.Image, str]:
    """A banner, chart, logo or screenshot in the pool's mix of those styles, captioned as what
    it is ("a bar chart"), not as the scene its words name."""
    spec = draw.random_spec(rng)
    w, h = draw.random_size(rng, cfg.image_size)
    style = rng.choices(offtarget.STYLES, offtarget.STYLE_WEIGHTS)[0]
    return offtarget.render(spec, style, key, w, h), offtarget.named_caption(spec, style, rng)


def write_pairs_tars(out_dir: str, stem: str, key_prefix: str, n: int, cfg: DemoSection,
                     rng_key: str, pair: PairMaker = scene_pair) -> list[str]:
    """Image-caption pairs as WebDataset tars (KEY.jpg + KEY.txt), clean scenes by default."""
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(rng_key)
    paths: list[str] = []
    tar = None
    for i in range(n):
        if i % SAMPLES_PER_TAR == 0:
            if tar is not None:
                tar.close()
            paths.append(os.path.join(out_dir, f"{stem}-{i // SAMPLES_PER_TAR:05d}.tar"))
            tar = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)
        img, caption = pair(rng, cfg, f"{rng_key}:{i}")
        key = f"{key_prefix}{i + 1:06d}"
        tar_add(tar, f"{key}.jpg", draw.encode(img, "JPEG", 90))
        tar_add(tar, f"{key}.txt", caption.encode("utf-8"))
    if tar is not None:
        tar.close()
    return paths


def trusted_split(cfg: DemoSection) -> tuple[int, int]:
    """(scenes, named off-target pairs) of the trusted set's trusted_size pairs."""
    named = round(cfg.trusted_size * cfg.trusted_named_off_target)
    return cfg.trusted_size - named, named


def write_zeroshot(out_dir: str, cfg: DemoSection) -> None:
    """eval_size images, shapes in equal shares, one folder per class (the shape name)."""
    rng = random.Random(f"zeroshot:{cfg.seed}")
    classes = list(SHAPES)
    for c in classes:
        os.makedirs(os.path.join(out_dir, c))
    for i in range(cfg.eval_size):
        spec = draw.random_spec(rng)
        spec["shape"] = classes[i % len(classes)]
        w, h = draw.random_size(rng, cfg.image_size)
        img = draw.render(spec, f"zeroshot:{cfg.seed}:{i}", w, h)
        with open(os.path.join(out_dir, spec["shape"], f"{i:05d}.jpg"), "wb") as f:
            f.write(draw.encode(img, "JPEG", 90))
    write_json(os.path.join(out_dir, "classnames.json"), classes)
    write_json(os.path.join(out_dir, "templates.json"), list(ZEROSHOT_TEMPLATES))
