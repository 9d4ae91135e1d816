"""Generate the demo world: dump, pageviews, a noisy candidate pool served by a local image
host, a clean trusted set, evaluation sets and the ground truth.

Layout under `root` (all deterministic from the seed; same parameters, same bytes):

    dump/enwiki-demo-pages-articles-multistream.xml.bz2   (+ -index.txt.bz2)
    pageviews/pageviews-YYYYMMDD-HH0000.gz
    pool/candidates.parquet        url, caption
    images/<name>                  what the host serves at /i/<name>
    host.json                      per-path behaviour of the host (faults)
    trusted/trusted-NNNNN.tar      WebDataset: tNNNNNN.jpg + tNNNNNN.txt, disjoint from the pool
    eval/zeroshot/<shape>/NNNNN.jpg, eval/zeroshot/classnames.json, eval/zeroshot/templates.json
    eval/retrieval-NNNNN.tar       WebDataset: rNNNNNN.jpg + rNNNNNN.txt
    truth/truth.parquet            url, caption, kind, true_caption, dup_of (+ what the image shows)
    world.json                     parameters, base_url, counts

The world is written to a temporary sibling directory and renamed into place, so an
interrupted generation never leaves a half world behind. It lives on local disk (the image
host serves it), so plain `os` paths are used here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import time
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from witcurate.config import DemoSection
from witcurate.demo import draw, pageviews, wiki
from witcurate.demo.vocab import SHAPES, ZEROSHOT_TEMPLATES, caption_for, CAPTION_TEMPLATES, \
    junk_caption, random_caption
from witcurate.errors import UserError

VERSION = 1

# Faults the host acts out (listed in host.json), and faults in the content it serves.
HOST_FAULTS = ("http_404", "http_500", "slow", "reset", "truncated", "html", "redirect_private", "noai")
CONTENT_FAULTS = ("bomb", "oversized", "tiny")
FAULT_KINDS = HOST_FAULTS + CONTENT_FAULTS
FAULT_FRACTION = 0.0125
# Share of the pool for each noise kind; "clean" takes the rest (about 60%).
KIND_FRACTIONS: dict[str, float] = {
    "mismatched": 0.12, "junk": 0.06, "exact_dup": 0.04, "near_dup": 0.04,
    **{k: FAULT_FRACTION for k in FAULT_KINDS},
}
KINDS = ("clean", *KIND_FRACTIONS)
# Kinds whose URL yields no drawing at all (true_caption is null for them).
NO_IMAGE_KINDS = ("http_404", "http_500", "reset", "html", "redirect_private", "bomb")

# The reject reason the download stage gives each injected fault under the demo's download
# settings (None: the image is kept, resized); every other kind is kept by that stage. `tiny`
# (24 px) is below min_side 48; `oversized` (3000x2000) is within max_pixels and the aspect limit.
EXPECTED_DOWNLOAD_REASON: dict[str, str | None] = {
    "http_404": "http_404", "http_500": "http_500", "slow": "timeout", "reset": "connection_error",
    "truncated": "truncated", "html": "not_an_image", "redirect_private": "private_address",
    "noai": "opt_out_header", "bomb": "too_many_pixels", "tiny": "image_too_small", "oversized": None,
}

SLOW_SECONDS = 4.0                                   # longer than the demo's 2 s download timeout
REDIRECT_LOCATION = "http://127.0.0.2:9/x.jpg"       # loopback, but not the allowlisted host:port
OVERSIZED = (3000, 2000)
TINY = 24
URL_PREFIX = "i/"
SAMPLES_PER_TAR = 1000


def world_params(cfg: DemoSection) -> dict:
    """What determines the world's bytes (the root does not)."""
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "root"}
    params["version"] = VERSION
    return params


def base_url(cfg: DemoSection) -> str:
    return f"http://{cfg.host}:{cfg.port}/"


def load_world(root: str) -> dict | None:
    path = os.path.join(root, "world.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def generate_world(cfg: DemoSection, root: str | None = None,
                   progress: Callable[[str], None] = print, force: bool = False) -> dict:
    """Write the demo world into `root` (default cfg.root); returns world.json's contents.

    Idempotent: an existing world generated with the same parameters is returned untouched.
    """
    root = root or cfg.root
    params = world_params(cfg)
    existing = load_world(root)
    if existing is not None and existing.get("params") == params and not force:
        progress(f"demo world at {root} is up to date")
        return existing
    if os.path.exists(root) and existing is None and os.listdir(root):
        raise UserError(f"{root} exists and is not a demo world (no world.json)",
                        "choose another demo.root or remove that directory")
    for name, value in (("pool_size", cfg.pool_size), ("trusted_size", cfg.trusted_size),
                        ("eval_size", cfg.eval_size)):
        if value < 1:
            raise UserError(f"demo.{name} must be at least 1, got {value}", f"set demo.{name}")
    if cfg.image_size < 32:
        raise UserError(f"demo.image_size must be at least 32, got {cfg.image_size}",
                        "set demo.image_size (96 by default)")

    start = time.time()
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(root))}.tmp-{os.getpid()}")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        world = _generate_into(cfg, tmp, params, progress)
        world["generated_seconds"] = round(time.time() - start, 2)
        _write_json(os.path.join(tmp, "world.json"), world)
        if os.path.exists(root):
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    progress(f"demo world written to {root} in {world['generated_seconds']:.1f} s")
    return world


def _generate_into(cfg: DemoSection, out: str, params: dict, progress) -> dict:
    seed = cfg.seed
    progress("demo world: writing the Wikipedia dump")
    pages = wiki.build_pages(seed)
    dump_info = wiki.write_dump(os.path.join(out, "dump"), pages)
    titles = [p.title for p in pages if p.ns == 0]
    views = pageviews.plan_views(titles, wiki.demo_titles(), seed)
    pv_paths = pageviews.write_pageviews(os.path.join(out, "pageviews"), views, seed)

    progress(f"demo world: drawing the pool ({cfg.pool_size} candidates)")
    counts = _write_pool(cfg, out)

    progress(f"demo world: drawing the trusted set ({cfg.trusted_size} pairs)")
    trusted = _write_pairs_tars(os.path.join(out, "trusted"), "trusted", "t", cfg.trusted_size,
                                cfg, f"trusted:{seed}")
    progress(f"demo world: drawing the evaluation sets ({cfg.eval_size} images each)")
    _write_zeroshot(os.path.join(out, "eval", "zeroshot"), cfg)
    retrieval = _write_pairs_tars(os.path.join(out, "eval"), "retrieval", "r", cfg.eval_size, cfg,
                                  f"retrieval:{seed}")

    rel = lambda p: os.path.relpath(p, out)  # noqa: E731
    return {
        "version": VERSION,
        "params": params,
        "base_url": base_url(cfg),
        "counts": counts,
        "dump": {**{k: v for k, v in dump_info.items() if k not in ("dump", "index")},
                 "path": rel(dump_info["dump"]), "index": rel(dump_info["index"])},
        "pageviews": [rel(p) for p in pv_paths],
        "pool": "pool/candidates.parquet",
        "truth": "truth/truth.parquet",
        "trusted": [rel(p) for p in trusted],
        "retrieval": [rel(p) for p in retrieval],
        "zeroshot": "eval/zeroshot",
        "host": {"slow_seconds": SLOW_SECONDS, "redirect_location": REDIRECT_LOCATION},
    }


# --------------------------------------------------------------------------- the pool

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


def _write_pool(cfg: DemoSection, out: str) -> dict[str, int]:
    seed, n = cfg.seed, cfg.pool_size
    rng = random.Random(f"pool:{seed}")
    kinds = _kind_list(n, rng)
    base = base_url(cfg)
    images_dir = os.path.join(out, "images")
    os.makedirs(images_dir)

    specs = [draw.random_spec(rng) for _ in range(n)]
    templates = [rng.choice(CAPTION_TEMPLATES) for _ in range(n)]
    # Some images are PNG, most JPEG; the oversized ones are always JPEG, the bomb always PNG.
    png = [rng.random() < 0.1 and kinds[i] != "oversized" for i in range(n)]
    clean = [i for i in range(n) if kinds[i] == "clean"]
    originals: dict[int, int] = {}                           # duplicate -> the clean original
    for i in range(n):
        if kinds[i] in ("exact_dup", "near_dup"):
            originals[i] = j = rng.choice(clean)
            specs[i] = specs[j]
            templates[i] = _other_template(templates[j], rng)
            png[i] = png[j] if kinds[i] == "exact_dup" else False   # a near duplicate is a JPEG
    # Opaque file names: nothing in a URL tells its kind.
    names = [hashlib.sha1(f"{seed}:pool:{i}".encode()).hexdigest()[:14]
             + (".png" if png[i] or kinds[i] == "bomb" else ".jpg") for i in range(n)]

    data: dict[int, bytes] = {}
    bomb = None
    for i in range(n):
        kind, irng = kinds[i], random.Random(f"pool-item:{seed}:{i}")
        if i in originals or (kind in NO_IMAGE_KINDS and kind != "bomb"):
            continue                     # duplicates are made below; these serve no file
        if kind == "bomb":
            bomb = bomb or draw.bomb_png()
            data[i] = bomb
            continue
        if kind == "oversized":
            w, h = OVERSIZED if irng.random() < 0.5 else OVERSIZED[::-1]
            small = draw.render(specs[i], f"{seed}:pool:{i}", w // 5, h // 5)
            img = small.resize((w, h), Image.Resampling.BICUBIC)
            data[i] = draw.encode(img, "JPEG", 85)
            continue
        if kind == "tiny":
            w = h = TINY
        else:
            w, h = draw.random_size(irng, cfg.image_size)
        img = draw.render(specs[i], f"{seed}:pool:{i}", w, h)
        data[i] = draw.encode(img, "PNG") if names[i].endswith(".png") else \
            draw.encode(img, "JPEG", irng.choice((75, 85, 90, 95)))
    for i, j in originals.items():
        data[i] = data[j] if kinds[i] == "exact_dup" else \
            draw.near_duplicate(data[j], random.Random(f"near:{seed}:{i}"))

    captions, true_captions = [], []
    for i in range(n):
        true = caption_for(specs[i], templates[i])
        kind = kinds[i]
        if kind == "mismatched":
            donors = [j for j in clean if specs[j]["shape"] != specs[i]["shape"]
                      and specs[j]["colour"] != specs[i]["colour"]]
            j = rng.choice(donors) if donors else rng.choice(clean)
            captions.append(caption_for(specs[j], templates[j]))
        elif kind == "junk":
            captions.append(junk_caption(rng))
        else:
            captions.append(true)
        true_captions.append(None if kind in NO_IMAGE_KINDS else true)

    for i, blob in data.items():
        with open(os.path.join(images_dir, names[i]), "wb") as f:
            f.write(blob)

    urls = [f"{base}{URL_PREFIX}{name}" for name in names]
    faults = {f"/{URL_PREFIX}{names[i]}": kinds[i] for i in range(n) if kinds[i] in HOST_FAULTS}
    _write_json(os.path.join(out, "host.json"), {
        "version": VERSION, "prefix": f"/{URL_PREFIX}", "slow_seconds": SLOW_SECONDS,
        "redirect_location": REDIRECT_LOCATION, "faults": faults})

    os.makedirs(os.path.join(out, "pool"))
    pq.write_table(pa.table({"url": pa.array(urls, pa.string()),
                             "caption": pa.array(captions, pa.string())}),
                   os.path.join(out, "pool", "candidates.parquet"))
    has_image = [kinds[i] not in NO_IMAGE_KINDS for i in range(n)]
    os.makedirs(os.path.join(out, "truth"))
    pq.write_table(pa.table({
        "url": pa.array(urls, pa.string()),
        "caption": pa.array(captions, pa.string()),
        "kind": pa.array(kinds, pa.string()),
        "true_caption": pa.array(true_captions, pa.string()),
        "dup_of": pa.array([urls[originals[i]] if i in originals else None for i in range(n)],
                           pa.string()),
        "count": pa.array([specs[i]["count"] if has_image[i] else None for i in range(n)], pa.int8()),
        "colour": pa.array([specs[i]["colour"] if has_image[i] else None for i in range(n)], pa.string()),
        "shape": pa.array([specs[i]["shape"] if has_image[i] else None for i in range(n)], pa.string()),
        "scene": pa.array([specs[i]["scene"] if has_image[i] else None for i in range(n)], pa.string()),
        "sha256": pa.array([hashlib.sha256(data[i]).hexdigest() if i in data else None
                            for i in range(n)], pa.string()),
    }), os.path.join(out, "truth", "truth.parquet"))
    return {k: kinds.count(k) for k in KINDS}


# --------------------------------------------------------------------------- trusted and eval

def _tar_add(tar: tarfile.TarFile, name: str, blob: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(blob), 1_700_000_000, 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(blob))


def _write_pairs_tars(out_dir: str, stem: str, key_prefix: str, n: int, cfg: DemoSection,
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
        _tar_add(tar, f"{key}.jpg", draw.encode(img, "JPEG", 90))
        _tar_add(tar, f"{key}.txt", random_caption(spec, rng).encode("utf-8"))
    if tar is not None:
        tar.close()
    return paths


def _write_zeroshot(out_dir: str, cfg: DemoSection) -> None:
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
    _write_json(os.path.join(out_dir, "classnames.json"), classes)
    _write_json(os.path.join(out_dir, "templates.json"), list(ZEROSHOT_TEMPLATES))


def _write_json(path: str, obj) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=isinstance(obj, dict))
        f.write("\n")
