"""The card's README.md: its markdown, and named sections added to a finished card."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import yaml

import witcurate
from witcurate.config import Config
from witcurate.pipeline import fs
from witcurate.pipeline.card.manifests import RECORD_STAGES, TABLE_STAGES, CardData
from witcurate.pipeline.card.plots import CARD_DIR

README = "README.md"


def fmt(n: Any) -> str:
    """A count or number as the card prints it: thousands separated, – for unknown."""
    if n is None:
        return "–"
    if isinstance(n, float):
        return f"{n:,.1f}"
    return f"{n:,}" if isinstance(n, int) else str(n)


def _top_reasons(reasons: dict[str, int], k: int = 4) -> str:
    if not reasons:
        return ""
    items = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    text = ", ".join(f"{r} {n:,}" for r, n in items[:k])
    return text + (f", +{len(items) - k} more" if len(items) > k else "")


def _stage_table(data: CardData) -> list[str]:
    lines = ["| stage | in | kept | rejected | kept % | reject reasons | wall s | throughput |",
             "|---|---:|---:|---:|---:|---|---:|---:|"]
    for name in TABLE_STAGES:
        m = data.manifests.get(name)
        if m is None:
            lines.append(f"| {name} | – | – | – | – | not found in this run (no {name}/_SUCCESS.json) | – | – |")
            continue
        tp = m.get("throughput") or {}
        rate = f"{tp['per_second']:,.1f} {tp.get('units', '')}/s" if tp.get("per_second") else "–"
        wall = fmt(m.get("wall_seconds")) if m.get("wall_seconds") is not None else "(this run)"
        c = m.get("counts")
        if c is None:                      # a stage that produced a model: files, no records
            lines.append(f"| {name} | – | – | – | – | model: {', '.join(sorted(m.get('outputs', {})))} "
                         f"| {wall} | {rate} |")
            continue
        pct = f"{100 * c['kept'] / c['in']:.1f}" if c["in"] else "–"
        lines.append(f"| {name} | {fmt(c['in'])} | {fmt(c['kept'])} | {fmt(c['rejected'])} | {pct} | "
                     f"{_top_reasons(c.get('reasons') or {})} | {wall} | {rate} |")
    return lines


def _loading(manifest: dict[str, Any] | None) -> list[str]:
    pattern = (manifest or {}).get("pattern") or "00000.tar"
    total = ((manifest or {}).get("totals") or {}).get("samples", 0)
    return [
        "## How to load", "",
        "Paths below are relative to this directory; samples are `UID.jpg` (the downloaded image),",
        "`UID.txt` (the caption) and `UID.json` (metadata), keyed by the stable uid.", "",
        "webdataset:", "", "```python", "import webdataset as wds",
        f"ds = wds.WebDataset(\"{pattern}\", shardshuffle=False).decode(\"pil\").to_tuple(\"jpg\", \"txt\", \"json\")",
        "for image, caption, meta in ds:", "    ...", "```", "",
        "open_clip_train (reads `sizes.json` here, or pass the count):", "", "```sh",
        f"python -m open_clip_train.main --dataset-type webdataset --train-data '{pattern}' \\",
        f"    --train-num-samples {total} --model ViT-B-32 --batch-size 256 --warmup 500 --epochs 10",
        "```", "",
        "The bundled trainer:", "", "```sh",
        f"witcurate train --data '{pattern}' --model witcurate-tiny --out RUN", "```", "",
        "Hugging Face datasets:", "", "```python", "from datasets import load_dataset",
        "ds = load_dataset(\"webdataset\", data_files={\"train\": \"*.tar\"}, split=\"train\")", "```", "",
        "duckdb over the sidecars (one row a sample, no image bytes):", "", "```python", "import duckdb",
        "duckdb.sql(\"select query, count(*) n, avg(clip_score) from '*.parquet' group by query order by n desc\")",
        "```", "",
    ]


@dataclass
class Section:
    """One plotted section of the README: its plot (a file under card/), a note, extra lines."""
    heading: str
    plot: str | None = None
    note: str = ""
    extra: list[str] = field(default_factory=list)


def _summary(out_root: str, config: Config, data: CardData) -> list[str]:
    m = data.shards_manifest or {}
    totals = m.get("totals") or {}
    first = next((data.manifests[s] for s in RECORD_STAGES if data.manifests.get(s)), None)
    candidates = data.manifests["ingest"]["counts"]["in"] if data.manifests.get("ingest") else None
    queries = data.manifests.get("queries")
    n_queries = queries["counts"]["kept"] if queries else None
    title = posixpath.basename(out_root.rstrip("/")) or "dataset"
    missing = [name for name in RECORD_STAGES if not data.manifests.get(name)]
    lines = [f"# witcurate dataset: {title}", "",
             "WIT-style image-text pairs (the WebImageText recipe CLIP was trained on): candidate",
             "alt-text pairs matched against a query list, balanced, downloaded, deduplicated, CLIP-score",
             f"filtered and capped per query, written by witcurate {witcurate.__version__}."]
    if missing:
        lines.append(f"No output of these stages beside the shards (not applied, or run elsewhere): "
                     f"{', '.join(missing)}.")
    lines += ["", "## Summary", "", "| | |", "|---|---:|",
              f"| candidates in (ingest) | {fmt(candidates) if candidates is not None else 'not in this run'} |"]
    if candidates is None and first is not None:
        lines.append(f"| records in (first stage found) | {fmt(first['counts']['in'])} |")
    for name in RECORD_STAGES[:-1]:
        if data.manifests.get(name):
            lines.append(f"| kept after {name} | {fmt(data.manifests[name]['counts']['kept'])} |")
    return lines + [
        f"| final samples | {fmt(totals.get('samples'))} |",
        f"| tar files | {fmt(totals.get('shards'))} (up to {fmt(m.get('samples_per_shard'))} samples each) |",
        f"| total size | {fmt(round((totals.get('bytes') or 0) / 2**20, 1))} MiB |",
        f"| queries covered | {fmt(totals.get('queries'))}" + (f" of {fmt(n_queries)}" if n_queries else "") + " |",
        f"| cap per query | {fmt(config.cap.per_query)} |", ""]


def _section(section: Section) -> list[str]:
    lines = [f"## {section.heading}", ""]
    if section.plot:
        lines += [f"![{section.heading}]({CARD_DIR}/{section.plot})", ""]
    if section.note:
        lines += [section.note, ""]
    return lines + section.extra


def _shard_list(manifest: dict[str, Any]) -> list[str]:
    if not manifest.get("shards"):
        return []
    lines = ["## Shards", "", "| tar | samples | MiB | sha256 |", "|---|---:|---:|---|"]
    for s in manifest["shards"][:20]:
        lines.append(f"| {s['tar']} | {fmt(s['samples'])} | {s['bytes'] / 2**20:.2f} | `{s['sha256']}` |")
    if len(manifest["shards"]) > 20:
        lines.append(f"| … {len(manifest['shards']) - 20} more in manifest.json | | | |")
    return lines + [""]


def render_readme(out_root: str, config: Config, data: CardData, sections: list[Section]) -> str:
    lines = _summary(out_root, config, data)
    lines += ["## Stages", "",
              "Counts come from each stage's `_SUCCESS.json`; for every stage in = kept + rejected,",
              "and every rejected record is kept with its reason in that stage's `rejects/`.", ""]
    lines += _stage_table(data) + [""]
    for section in sections:
        lines += _section(section)
    lines += _loading(data.shards_manifest)
    lines += _shard_list(data.shards_manifest or {})
    lines += ["## Config", "", "The full configuration of the run (also in `manifest.json`):", "",
              "```yaml", yaml.safe_dump(config.to_dict(), sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def add_card_section(shards_dir: str, key: str, title: str, markdown: str) -> None:
    """Add or replace a named section of a finished card (e.g. the curation experiment's table).

    The section sits between markers, so running the experiment again replaces it in place.
    """
    path = fs.join(shards_dir, README)
    with fs.open_file(path, "r", encoding="utf-8") as f:
        text = f.read()
    begin, end = f"<!-- witcurate:{key} -->", f"<!-- /witcurate:{key} -->"
    block = f"{begin}\n## {title}\n\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + block + tail
    else:
        marker = "## Config"
        if marker in text:
            head, tail = text.split(marker, 1)
            text = head + block + "\n\n" + marker + tail
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    with fs.open_file(path, "w", encoding="utf-8") as f:
        f.write(text)
