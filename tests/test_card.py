"""The dataset card written with the shards: tables read back from the run's manifests, plots
that exist and are real PNGs, and graceful gaps when stage directories are missing."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fake_run import make_run
from PIL import Image

from witcurate import schemas
from witcurate.config import Config
from witcurate.pipeline.card import add_card_section, build_card
from witcurate.pipeline.runner import run_stage
from witcurate.pipeline.shards import ShardsStage

PLOTS = ("pairs_per_query.png", "clip_score.png", "rejects.png", "image_sizes.png")


def _config() -> Config:
    cfg = Config()
    cfg.shards.samples_per_shard = 4
    cfg.cap.per_query = 3
    return cfg


def _run_shards(out):
    stage = ShardsStage()
    return run_stage(stage, _config(), str(out / "shards"), stage.default_inputs(_config(), str(out)),
                     progress=lambda m: None)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    make_run(out)
    _run_shards(out)
    return out


def _row(readme: str, stage: str) -> list[str]:
    (line,) = [ln for ln in readme.splitlines() if ln.startswith(f"| {stage} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_card_ships_with_the_shards(full):
    d = full / "shards"
    readme = (d / "README.md").read_text(encoding="utf-8")
    for name in PLOTS:
        path = d / "card" / name
        with Image.open(path) as img:
            assert img.format == "PNG" and img.size[0] > 300 and img.size[1] > 200
        assert f"(card/{name})" in readme
    # Per-stage rows carry the counts and reasons from each stage's _SUCCESS.json.
    assert _row(readme, "dedupe")[:5] == ["dedupe", "20", "19", "1", "95.0"]
    assert "near_duplicate 1" in _row(readme, "dedupe")[5]
    assert _row(readme, "ingest")[5] == "bad_url 6, junk_caption 4"
    shards = _row(readme, "shards")
    assert shards[1:4] == ["16", "11", "5"]
    assert "image_missing 2" in shards[5]
    for stage in ("queries", "ingest", "match", "balance", "download", "score", "cap"):
        assert "not found" not in " ".join(_row(readme, stage))
    assert "not found in this run" in " ".join(_row(readme, "scorer"))   # the fake run has none
    # The fake run has every record stage but the two optional embedding steps.
    assert "(not applied, or run elsewhere): semdedup, target." in readme
    # The query list: each source's floor, budget and last entry admitted (the queries manifest).
    assert "| bigram | min_bigram_count 30 | 9 | 1 | 1 | 1 | red grass (count 31, pmi 7.25) |" in readme
    assert "| wordnet | – | 2 | none | 2 | 2 | – |" in readme
    assert "The last bigram admitted has PMI 7.25." in readme
    # Summary numbers.
    assert "| candidates in (ingest) | 40 |" in readme
    assert "| final samples | 11 |" in readme
    assert "| queries covered | 3 of 4 |" in readme
    # Pairs per query: before = cap's kept rows + its rejects' records, after = the shards.
    assert "| two | 6 | 4 |" in readme and "| red | 5 | 3 |" in readme
    assert "Threshold: 0.2." in readme
    # Loading instructions name the real pattern and count; the config is embedded.
    assert "--train-data '{00000..00002}.tar'" in readme and "--train-num-samples 11" in readme
    assert "samples_per_shard: 4" in readme


def test_card_is_reproducible(full, tmp_path):
    d = full / "shards"
    before = {p: (d / "card" / p).read_bytes() for p in PLOTS}
    text = (d / "README.md").read_text(encoding="utf-8")
    build_card(str(full), str(d), _config())          # rebuilt after the stage landed
    assert {p: (d / "card" / p).read_bytes() for p in PLOTS} == before
    again = (d / "README.md").read_text(encoding="utf-8")
    # The landed _SUCCESS.json now gives the shards row a wall time; everything else is identical.
    strip = lambda t: "\n".join(ln for ln in t.splitlines() if not ln.startswith("| shards |"))
    assert strip(again) == strip(text)
    assert "(this run)" not in _row(again, "shards")[6]


def test_standalone_run_says_what_is_missing(tmp_path):
    make_run(tmp_path, upstream=False)
    manifest = _run_shards(tmp_path)
    assert manifest["counts"]["kept"] == 11
    d = tmp_path / "shards"
    readme = (d / "README.md").read_text(encoding="utf-8")
    for stage in ("ingest", "match", "balance", "download", "dedupe", "score", "cap"):
        assert "not found in this run" in " ".join(_row(readme, stage))
    assert "| candidates in (ingest) | not in this run |" in readme
    assert "Not in this run (no _SUCCESS.json): ingest, match, balance, download, dedupe, score, semdedup, target, cap." in readme
    assert "The score stage is not in this run" in readme
    # Said before the summary too, so the recipe described above it is not taken as applied.
    intro = readme.split("## Summary")[0]
    assert "(not applied, or run elsewhere): ingest, match, balance, download, dedupe, score, semdedup, target, cap." in intro
    # Plots that only need the shards are still drawn.
    for name in PLOTS:
        assert (d / "card" / name).exists()


def _strip_records(path):
    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["record"] = json.dumps({"uid": r["uid"]})
    pq.write_table(pa.Table.from_pylist(rows, schema=schemas.REJECTS), path)


def test_card_falls_back_when_records_lack_fields(tmp_path):
    """Score rejects without a score; cap rejects without their query (counts fall back to the
    queries each scored pair matches); then a card over an empty shards dir."""
    make_run(tmp_path)
    _strip_records(tmp_path / "score" / "rejects" / "part-00000.parquet")
    _strip_records(tmp_path / "cap" / "rejects" / "part-00000.parquet")
    _run_shards(tmp_path)
    readme = (tmp_path / "shards" / "README.md").read_text(encoding="utf-8")
    assert "rejects carry no score, so only kept pairs are shown" in readme
    assert "Before: pairs matching the query after scoring" in readme
    assert "| grass | 17 | 0 |" in readme       # every scored pair (16 shipped + 1 over the cap) matches query 7
    empty = tmp_path / "empty"
    empty.mkdir()
    build_card(str(tmp_path / "nowhere"), str(empty), _config())
    text = (empty / "README.md").read_text(encoding="utf-8")
    assert "Skipped: no samples." in text and "Skipped: no stage manifests found." in text
    assert not list((empty / "card").glob("*.png"))


def test_add_card_section_inserts_then_replaces(full):
    d = full / "shards"
    add_card_section(str(d), "experiment", "Curation experiment", "| arm | acc |\n|---|---|\n| curated | 0.5 |")
    add_card_section(str(d), "experiment", "Curation experiment", "| arm | acc |\n|---|---|\n| curated | 0.6 |")
    text = (d / "README.md").read_text(encoding="utf-8")
    assert text.count("## Curation experiment") == 1
    assert "| curated | 0.6 |" in text and "| curated | 0.5 |" not in text
    assert text.index("## Curation experiment") < text.index("## Config")
    assert re.search(r"<!-- witcurate:experiment -->", text)


def test_size_scatter_draws_a_bounded_even_sample(monkeypatch):
    # A million-sample dataset must not become a million-point scatter: at most
    # MAX_SCATTER_POINTS are drawn, spread over the whole set, and the count covers every sample.
    from witcurate.pipeline.card import plots
    monkeypatch.setattr(plots, "MAX_SCATTER_POINTS", 10)
    widths = [None, 0] + list(range(1, 99))               # 98 samples with a size
    table = pa.table({"w": pa.array(widths, pa.int32()), "h": pa.array([5] * 100, pa.int32())})
    xs, ys, n = plots._size_points(table, "w", "h")
    assert n == 98 and len(xs) == len(ys) == 10
    assert xs[0] == 1 and xs[-1] >= 90 and ys == [5] * 10
    xs, _, n = plots._size_points(table.slice(0, 7), "w", "h")
    assert n == 5 and xs == [1, 2, 3, 4, 5]
