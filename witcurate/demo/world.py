"""Generate the demo world: dump, pageviews, a noisy candidate pool served by a local image
host, a clean trusted set, evaluation sets and the ground truth.

Layout under `root` (all deterministic from the seed; same parameters, same bytes):

    dump/enwiki-demo-pages-articles-multistream.xml.bz2   (+ -index.txt.bz2)
    pageviews/pageviews-YYYYMMDD-HH0000.gz
    pool/candidates.parquet        url, caption (URLs on the demo's hosts, demo/hosts.py)
    pool/sources/                  the same candidates split over a listed table, a WARC of HTML
                                   pages and a WAT (crawl.py): what the demo config ingests
    images/<name>                  what the host serves at /i/<name> (or /private/i/<name>)
    host.json                      the hosts and their manners, per-path behaviour (faults)
    trusted/trusted-NNNNN.tar      WebDataset: tNNNNNN.jpg + tNNNNNN.txt, scenes, disjoint from the pool
    trusted/named-NNNNN.tar        nNNNNNN.jpg + .txt: banners, charts, logos, screenshots named as such
    eval/zeroshot/<shape>/NNNNN.jpg, eval/zeroshot/classnames.json, eval/zeroshot/templates.json
    eval/retrieval-NNNNN.tar       WebDataset: rNNNNNN.jpg + rNNNNNN.txt
    truth/truth.parquet            url, caption, kind, true_caption, dup_of (+ what the image shows)
    world.json                     parameters, base_url (the first host), hosts, the
                                   download.allow_private entries they need, counts

The world is written to a temporary sibling directory and renamed into place, so an
interrupted generation never leaves a half world behind. It lives on local disk (the image
host serves it), so plain `os` paths are used here.

The parts, one module each: wiki/ (the dump), pageviews, pool (candidates, host.json, truth;
faults says what noise it injects), eval_sets (trusted and evaluation sets).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Callable

from witcurate.config import DemoSection
from witcurate.demo import crawl, hosts, pageviews, wiki
from witcurate.demo.eval_sets import named_off_target_pair, trusted_split, write_pairs_tars, write_zeroshot
# The fault constants are also read as world.X (the host's and the download tests' documentation).
from witcurate.demo.faults import (CONTENT_FAULTS, EXPECTED_DOWNLOAD_REASON, FAULT_KINDS,  # noqa: F401
                                   HOST_FAULTS, KINDS, NO_IMAGE_KINDS, OVERSIZED, REDIRECT_LOCATION,
                                   SLOW_SECONDS, TINY)
from witcurate.demo.files import write_json
from witcurate.demo.pool import write_pool
from witcurate.errors import UserError

VERSION = 5                  # 2: many hosts (demo/hosts.py) and the politeness faults;
                             # 3: semantic duplicates and off-target images;
                             # 4: the pool also as a crawl delivers it (pool/sources/, crawl.py);
                             # 5: named off-target pairs in the trusted set (eval_sets.py)


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
    hosts.addresses(cfg.host)                # a loopback IPv4 address with room for the hosts
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
        write_json(os.path.join(tmp, "world.json"), world)
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
    counts, sources = write_pool(cfg, out, VERSION)

    scenes, named = trusted_split(cfg)
    progress(f"demo world: drawing the trusted set ({scenes} scenes, {named} named off-target pairs)")
    trusted = write_pairs_tars(os.path.join(out, "trusted"), "trusted", "t", scenes, cfg, f"trusted:{seed}")
    trusted += write_pairs_tars(os.path.join(out, "trusted"), "named", "n", named, cfg,
                                f"trusted-named:{seed}", named_off_target_pair)
    progress(f"demo world: drawing the evaluation sets ({cfg.eval_size} images each)")
    write_zeroshot(os.path.join(out, "eval", "zeroshot"), cfg)
    retrieval = write_pairs_tars(os.path.join(out, "eval"), "retrieval", "r", cfg.eval_size, cfg,
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
        "sources": {"files": [rel(p) for p in crawl.source_globs(out)], "candidates": sources},
        "truth": "truth/truth.parquet",
        "trusted": [rel(p) for p in trusted],
        "retrieval": [rel(p) for p in retrieval],
        "zeroshot": "eval/zeroshot",
        "host": {"slow_seconds": SLOW_SECONDS, "redirect_location": REDIRECT_LOCATION},
        "hosts": {role["address"]: role["name"] for role in hosts.host_table(cfg.host)},
        "allow_private": hosts.allow_private(cfg.host, cfg.port),
    }
