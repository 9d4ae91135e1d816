"""The demo world's clean sets: trusted pairs (the CLIP scorer's training data) and the
evaluation sets (zero-shot folders by shape, retrieval pairs), disjoint from the pool."""

from __future__ import annotations

import os
import random
import tarfile

from witcurate.config import DemoSection
from witcurate.demo import draw
from witcurate.demo.files import tar_add, write_json
from witcurate.demo.vocab import SHAPES, ZEROSHOT_TEMPLATES, random_caption

SAMPLES_PER_TAR = 1000


def write_pairs_tars(out_dir: str, stem: str, key_prefix: str, n: int, cfg: DemoSection,
                     rng_key: str) -> list[str]:
    """Clean image-caption pairs as WebDataset tars (KEY.jpg + KEY.txt)."""
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
        spec = draw.random_spec(rng)
        w, h = draw.random_size(rng, cfg.image_size)
        img = draw.render(spec, f"{rng_key}:{i}", w, h)
        key = f"{key_prefix}{i + 1:06d}"
        tar_add(tar, f"{key}.jpg", draw.encode(img, "JPEG", 90))
        tar_add(tar, f"{key}.txt", random_caption(spec, rng).encode("utf-8"))
    if tar is not None:
        tar.close()
    return paths


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
