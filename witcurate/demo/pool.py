"""The demo world's candidate pool: noisy (url, caption) pairs whose images the local host
serves, with the ground truth of each (its kind, the caption that fits its image, the original
it duplicates) kept apart in truth/ for judging a run.

One generator seeded from demo.seed draws the plan (kinds, drawings, templates, formats,
duplicates) and then the captions, in that order; each image has a generator of its own. The
same parameters therefore give the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from witcurate.config import DemoSection
from witcurate.demo import crawl, draw, hosts, offtarget, rerender
from witcurate.demo.faults import (HOST_FAULTS, KIND_FRACTIONS, KINDS, NO_IMAGE_KINDS, OVERSIZED,
                                   REDIRECT_LOCATION, SLOW_SECONDS, SPAM_SHARE, TINY)
from witcurate.demo.files import write_json
from witcurate.demo.vocab import CAPTION_TEMPLATES, caption_for, junk_caption

URL_PREFIX = "i/"


@dataclass
class PoolPlan:
    """Pool item i: its kind, what its image shows (off-target items: what their caption
    names), its caption template, its file name, (duplicates only) the clean original it
    copies, and (off-target only) the style of its image."""
    seed: int
    kinds: list[str]
    specs: list[dict]
    templates: list[str]
    names: list[str]
    originals: dict[int, int]
    styles: dict[int, str] = field(default_factory=dict)

    @property
    def clean(self) -> list[int]:
        return [i for i, kind in enumerate(self.kinds) if kind == "clean"]


def _kind_list(n: int, rng: random.Random) -> list[str]:
    kinds: list[str] = []
    for kind, frac in KIND_FRACTIONS.items():
        kinds += [kind] * int(round(frac * n))
    kinds = kinds[:n]
    kinds += ["clean"] * (n - len(kinds))
    rng.shuffle(kinds)
    return kinds


def _other_template(caption_template: str, rng: random.Random) -> str:
    return rng.choice([t for t in CAPTION_TEMPLATES if t != caption_template])


def _plan_specs(kinds: list[str], rng: random.Random) -> list[dict]:
    """What each item shows: the vocabulary's scenes shuffled and dealt to the clean items first,
    then to the rest, so no two clean pairs show the same scene while the vocabulary lasts (1,920
    scenes; a larger pool repeats them). A copy shows its original's (set by plan_pool)."""
    scenes = draw.every_spec()
    rng.shuffle(scenes)
    order = [i for i, k in enumerate(kinds) if k == "clean"] + [i for i, k in enumerate(kinds) if k != "clean"]
    specs: list[dict] = [{}] * len(kinds)
    for pos, i in enumerate(order):
        specs[i] = dict(scenes[pos % len(scenes)])
    return specs


def plan_pool(seed: int, n: int, rng: random.Random) -> PoolPlan:
    kinds = _kind_list(n, rng)
    specs = _plan_specs(kinds, rng)
    templates = [rng.choice(CAPTION_TEMPLATES) for _ in range(n)]
    # Some images are PNG, most JPEG; the oversized ones are always JPEG, the bomb always PNG.
    png = [rng.random() < 0.1 and kinds[i] != "oversized" for i in range(n)]
    clean = [i for i in range(n) if kinds[i] == "clean"]
    originals: dict[int, int] = {}                           # duplicate -> the clean original
    for i in range(n):
        if kinds[i] in ("exact_dup", "near_dup"):
            originals[i] = rng.choice(clean)
    copies = [i for i in range(n) if kinds[i] == "semantic_dup"]
    originals.update(rerender.plan_groups(copies, clean, SPAM_SHARE, rng))
    for i, j in originals.items():
        specs[i] = specs[j]
        templates[i] = _other_template(templates[j], rng)
        png[i] = png[j] if kinds[i] == "exact_dup" else False       # re-encoded copies are JPEGs
    styles = {i: rng.choices(offtarget.STYLES, offtarget.STYLE_WEIGHTS)[0] for i in range(n)
              if kinds[i] == "off_target"}
    # Opaque file names: nothing in a URL tells its kind.
    names = [hashlib.sha1(f"{seed}:pool:{i}".encode()).hexdigest()[:14]
             + (".png" if png[i] or kinds[i] == "bomb" else ".jpg") for i in range(n)]
    return PoolPlan(seed, kinds, specs, templates, names, originals, styles)


def _draw_one(plan: PoolPlan, i: int, image_size: int) -> bytes:
    kind, seed, irng = plan.kinds[i], plan.seed, random.Random(f"pool-item:{plan.seed}:{i}")
    if kind == "oversized":
        w, h = OVERSIZED if irng.random() < 0.5 else OVERSIZED[::-1]
        small = draw.render(plan.specs[i], f"{seed}:pool:{i}", w // 5, h // 5)
        return draw.encode(small.resize((w, h), Image.Resampling.BICUBIC), "JPEG", 85)
    w, h = (TINY, TINY) if kind == "tiny" else draw.random_size(irng, image_size)
    if kind == "off_target":
        img = offtarget.render(plan.specs[i], plan.styles[i], f"{seed}:{i}", w, h)
    else:
        img = draw.render(plan.specs[i], f"{seed}:pool:{i}", w, h)
    if plan.names[i].endswith(".png"):
        return draw.encode(img, "PNG")
    return draw.encode(img, "JPEG", irng.choice((75, 85, 90, 95)))


def draw_images(plan: PoolPlan, image_size: int) -> dict[int, bytes]:
    """The served bytes of every item that has a file; the kinds that serve none are left out."""
    data: dict[int, bytes] = {}
    bomb = None
    for i, kind in enumerate(plan.kinds):
        if i in plan.originals or (kind in NO_IMAGE_KINDS and kind != "bomb"):
            continue                     # duplicates are made below; these serve no file
        if kind == "bomb":
            bomb = bomb or draw.bomb_png()
            data[i] = bomb
        else:
            data[i] = _draw_one(plan, i, image_size)
    for i, j in plan.originals.items():
        if plan.kinds[i] == "semantic_dup":
            size = draw.random_size(random.Random(f"pool-item:{plan.seed}:{j}"), image_size)
            data[i] = rerender.draw_copy(plan.specs[j], f"{plan.seed}:pool:{j}", size, f"{plan.seed}:{i}")
        else:
            data[i] = data[j] if plan.kinds[i] == "exact_dup" else \
                draw.near_duplicate(data[j], random.Random(f"near:{plan.seed}:{i}"))
    return data


def write_captions(plan: PoolPlan, rng: random.Random) -> tuple[list[str], list[str | None]]:
    """(the caption each pair carries, the caption that fits its image or None without one)."""
    clean = plan.clean
    captions: list[str] = []
    true_captions: list[str | None] = []
    for i, kind in enumerate(plan.kinds):
        spec = plan.specs[i]
        true = caption_for(spec, plan.templates[i])
        if kind == "mismatched":
            donors = [j for j in clean if plan.specs[j]["shape"] != spec["shape"]
                      and plan.specs[j]["colour"] != spec["colour"]]
            j = rng.choice(donors) if donors else rng.choice(clean)
            captions.append(caption_for(plan.specs[j], plan.templates[j]))
        elif kind == "junk":
            captions.append(junk_caption(rng))
        else:
            captions.append(true)
        true_captions.append(None if kind in NO_IMAGE_KINDS or kind == "off_target" else true)
    return captions, true_captions


def _write_truth(path: str, plan: PoolPlan, urls: list[str], captions: list[str],
                 true_captions: list[str | None], data: dict[int, bytes]) -> None:
    n, specs = len(urls), plan.specs
    has_image = [kind not in NO_IMAGE_KINDS and kind != "off_target" for kind in plan.kinds]

    def drawn(key: str, arrow_type: pa.DataType) -> pa.Array:
        return pa.array([specs[i][key] if has_image[i] else None for i in range(n)], arrow_type)

    pq.write_table(pa.table({
        "url": pa.array(urls, pa.string()),
        "caption": pa.array(captions, pa.string()),
        "kind": pa.array(plan.kinds, pa.string()),
        "true_caption": pa.array(true_captions, pa.string()),
        "dup_of": pa.array([urls[plan.originals[i]] if i in plan.originals else None for i in range(n)],
                           pa.string()),
        "count": drawn("count", pa.int8()),
        "colour": drawn("colour", pa.string()),
        "shape": drawn("shape", pa.string()),
        "scene": drawn("scene", pa.string()),
        "style": pa.array([plan.styles.get(i) for i in range(n)], pa.string()),
        "sha256": pa.array([hashlib.sha256(data[i]).hexdigest() if i in data else None
                            for i in range(n)], pa.string()),
    }), path)


def place_urls(cfg: DemoSection, plan: PoolPlan) -> tuple[list[str], dict[str, str]]:
    """Each item's URL on the demo's hosts (demo/hosts.py), and the faults the image host acts
    out, by path."""
    addresses = hosts.addresses(cfg.host)
    urls, faults = [], {}
    for name, kind in zip(plan.names, plan.kinds):
        role, prefix = hosts.place(name, kind)
        urls.append(f"http://{addresses[role]}:{cfg.port}{prefix}{name}")
        if kind in HOST_FAULTS:
            faults[f"{prefix}{name}"] = kind
    return urls, faults


def write_pool(cfg: DemoSection, out: str, version: int) -> tuple[dict[str, int], dict[str, int]]:
    """images/, host.json, pool/candidates.parquet, pool/sources/ (the same candidates as a crawl
    delivers them, crawl.py) and truth/truth.parquet under `out`; returns the number of items of
    each kind and the number in each of pool/sources/'s parts."""
    rng = random.Random(f"pool:{cfg.seed}")
    plan = plan_pool(cfg.seed, cfg.pool_size, rng)
    data = draw_images(plan, cfg.image_size)
    captions, true_captions = write_captions(plan, rng)

    images_dir = os.path.join(out, "images")
    os.makedirs(images_dir)
    for i, blob in data.items():
        with open(os.path.join(images_dir, plan.names[i]), "wb") as f:
            f.write(blob)
    urls, faults = place_urls(cfg, plan)
    write_json(os.path.join(out, "host.json"), {
        "version": version, "prefix": f"/{URL_PREFIX}", "slow_seconds": SLOW_SECONDS,
        "redirect_location": REDIRECT_LOCATION, "port": cfg.port, "hosts": hosts.host_table(cfg.host),
        "faults": faults})
    os.makedirs(os.path.join(out, "pool"))
    pq.write_table(pa.table({"url": pa.array(urls, pa.string()), "caption": pa.array(captions, pa.string())}),
                   os.path.join(out, "pool", "candidates.parquet"))
    sources = crawl.write_sources(os.path.join(out, "pool"), urls, captions)
    os.makedirs(os.path.join(out, "truth"))
    _write_truth(os.path.join(out, "truth", "truth.parquet"), plan, urls, captions, true_captions, data)
    return {k: plan.kinds.count(k) for k in KINDS}, sources
