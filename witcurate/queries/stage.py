"""The `queries` stage: build the WIT query list (or import one) and write it with provenance.

    witcurate queries --dump enwiki-D-pages-articles-multistream.xml.bz2 \
                      --pageviews 'pageviews-*.gz' --out OUT/queries
    witcurate queries --import metadata.json --out OUT/queries

Outputs in the stage directory:
    part-00000.parquet          kept entries (schemas.QUERIES): query_id, query, sources,
                                unigram_count, bigram_count, pmi, views, synsets; the budget
                                report (below) in the file's metadata, key SOURCES_METADATA
    rejects/part-00000.parquet  dropped entries: empty_after_normalisation,
                                duplicate_after_normalisation, over_max_queries,
                                duplicate_in_import
    queries.json                the kept queries as a sorted JSON array of strings (the format of
                                MetaCLIP's metadata.json); query_id is the index in it
    matcher.pkl                 the list's Aho-Corasick automaton, compiled once here so that
                                each match worker loads it instead of building it (a cache:
                                match rebuilds it when it is missing or was made from other bytes)
    _SUCCESS.json               manifest: in = unique entries of the admitted sources (import:
                                list length), kept, rejected by reason; `sources`: per source its
                                floors, count before and after its budget, the last entry
                                admitted (for bigrams its PMI) and its entries in the final list;
                                overlaps, corpus and pageview statistics

Each source offers the entries that pass its floor and gives the first `max_*` of them by its
ranking (see `budgets`); those cut by a floor or a budget are counted in `sources`, not listed
as rejects (they are words of the corpus, not records given to the stage). Counting, floors and
budgets run as a Beam pipeline (see `transforms`); the union and the selection run in the
driver over the admitted entries, which are small (hundreds of thousands).
"""

from __future__ import annotations

import json
import posixpath
import re
import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from witcurate import schemas
from witcurate.config import Config
from witcurate.errors import InputError, UserError
from witcurate.pipeline import fs
from witcurate.pipeline.beam_io import make_pipeline, reject, run_pipeline
from witcurate.pipeline.matcher import COMPILED_NAME, QueryMatcher
from witcurate.pipeline.runner import StageContext, StageResult
from witcurate.pipeline.stages import BaseStage, Option
from witcurate.queries import budgets, counting, dump, lookups, pmi, transforms, wordnet
from witcurate.queries import union as union_mod
from witcurate.queries.union import Selection, SourceData

QUERIES_JSON = "queries.json"
SOURCES_METADATA = "witcurate.queries.sources"     # Parquet metadata key of the budget report
_INDEX_NAME = re.compile(r"multistream-index", re.IGNORECASE)


class QueriesStage(BaseStage):
    name = "queries"
    sections = ("queries",)
    inputs = ()                         # raw files from the config, fingerprinted via default_inputs
    content_skips = (COMPILED_NAME,)     # the compiled matcher: queries.json fixes it
    options = (
        Option("--dump", "queries.dumps",
               "MediaWiki XML dump (*-pages-articles*.xml.bz2, multistream too): path or glob"),
        Option("--pageviews", "queries.pageviews", "Wikimedia pageview files (pageviews-*.gz): path or glob"),
        Option("--import", "queries.import_json",
               "use this query list (a JSON array of strings, MetaCLIP's metadata.json) instead of building one"),
        Option("--max-queries", "queries.max_queries", "keep at most this many entries", int),
        Option("--max-unigrams", "queries.max_unigrams", "unigram budget: the most frequent words (-1: all)", int),
        Option("--max-bigrams", "queries.max_bigrams", "bigram budget: the highest-PMI bigrams (-1: all)", int),
        Option("--max-titles", "queries.max_titles", "title budget: the most viewed titles (-1: all)", int),
        Option("--wordnet-dir", "queries.wordnet_dir", "NLTK data directory holding corpora/wordnet"),
    )

    def default_inputs(self, config: Config, out_root: str) -> dict[str, str]:
        q = config.queries
        if q.import_json:
            return {"import": q.import_json}
        inputs = {f"dump{i}": d for i, d in enumerate(q.dumps)}
        inputs.update({f"pageviews{i}": pv for i, pv in enumerate(q.pageviews)})
        return inputs

    def run(self, ctx: StageContext) -> StageResult:
        cfg = ctx.config.queries
        if cfg.import_json:
            return run_import(ctx, cfg.import_json, cfg.max_queries)
        return run_build(ctx)


# ---------------------------------------------------------------------------------------------
# Building from sources


def resolve_inputs(patterns: list[str], what: str, option: str) -> list[str]:
    """Files named by paths/globs; a missing file or an empty glob is a UserError."""
    out: list[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?["):
            matches = [m for m in fs.glob(pattern)
                       if what != "dump" or not _INDEX_NAME.search(posixpath.basename(m))]
            if not matches:
                raise UserError(f"no {what} files match {pattern!r}",
                                f"check {option} (quote globs so the shell does not expand them)")
            out.extend(matches)
        elif fs.exists(pattern):
            out.append(pattern)
        else:
            raise UserError(f"{what} file not found: {pattern}", f"check {option}")
    return list(dict.fromkeys(out))


def run_build(ctx: StageContext) -> StageResult:
    cfg = ctx.config.queries
    dumps = resolve_inputs(cfg.dumps, "dump", "queries.dumps / --dump")
    pv_files = resolve_inputs(cfg.pageviews, "pageview", "queries.pageviews / --pageviews")
    if not dumps and not pv_files and not cfg.wordnet:
        raise UserError("nothing to build the query list from",
                        "give --dump and/or --pageviews, enable queries.wordnet, or --import a list")
    wordnet_names: dict[str, tuple[str, ...]] = {}
    if cfg.wordnet:
        ctx.progress("[queries] reading WordNet")
        wordnet_names = wordnet.synset_names(cfg.wordnet_dir)
    out_dir, dump_info, seconds = count_sources(ctx, dumps, pv_files, wordnet_names)

    bad = transforms.read_output(out_dir, "bad_inputs")
    if bad and not cfg.skip_bad_inputs:
        raise InputError(f"{len(bad)} unreadable input part(s); first: {bad[0]['error']}",
                         "re-download the file, or set queries.skip_bad_inputs: true to skip "
                         "unreadable parts and report them in the manifest")
    data, admitted = read_sources(out_dir, wordnet_names)
    selection = union_mod.select(union_mod.union(data).values(), cfg.max_queries)
    eligible = dict(transforms.read_output(out_dir, "eligible"))
    sources = budgets.report(cfg, eligible, admitted, len(wordnet_names), in_list(selection))
    write_outputs(ctx.tmp_dir, selection, sources)
    extra = build_manifest(out_dir, cfg, selection, sources, dump_info, pv_files, bad, seconds)
    extra["wordnet"] = {"enabled": cfg.wordnet, "names": len(wordnet_names),
                        "synsets": sum(len(v) for v in wordnet_names.values())}
    return StageResult(n_in=selection.n_in, units="entries", extra=extra)


def count_sources(ctx: StageContext, dumps: list[str], pv_files: list[str],
                  wordnet_names) -> tuple[str, list[dict], float]:
    """Run the counting pipeline; (its output dir, the dumps described, seconds it took)."""
    cfg = ctx.config.queries
    splits, dump_info, namespaces = plan_dumps(dumps, cfg.split_mb)
    ctx.progress(f"[queries] counting {len(dumps)} dump(s) in {len(splits)} split(s), "
                 f"{len(pv_files)} pageview file(s)")
    out_dir = fs.join(ctx.work_dir, "counts")
    fs.rm(out_dir)
    fs.makedirs(out_dir)
    lookup_file = None
    if wordnet_names:
        lookup_file = fs.join(ctx.work_dir, "lookup_keys.json")
        lookups.write_lookup_file(lookup_file, wordnet_names)
    start = time.time()
    p = make_pipeline(ctx.beam_args)
    transforms.build(p, splits, pv_files, lookup_file, cfg, out_dir,
                     extra_namespaces=sorted(namespaces),
                     shards=counting.shard_count(sum(d["size_bytes"] for d in dump_info)),
                     pageview_shards=counting.shard_count(
                         sum(fs.size_and_mtime(f)[0] for f in pv_files)))
    run_pipeline(p)
    return out_dir, dump_info, time.time() - start


def build_manifest(out_dir: str, cfg, selection: Selection, sources: dict, dump_info: list[dict],
                   pv_files: list[str], bad: list, seconds: float) -> dict[str, Any]:
    """The stage's own manifest fields: sources within their budgets, corpus, inputs, speed."""
    page_stats = _single(transforms.read_output(out_dir, "page_stats"))
    pv_stats = _single(transforms.read_output(out_dir, "pageview_stats"))
    corpus = dict(transforms.read_output(out_dir, "corpus"))
    tokens = int(corpus.get("tokens", 0))
    pages = int(page_stats.get("pages", 0))
    dump_bytes = sum(d["size_bytes"] for d in dump_info)
    return {
        "mode": "build",
        "sources": sources,
        "overlaps": selection.overlaps,
        "source_combinations": selection.combinations,
        "corpus": {
            **{k: int(page_stats.get(k, 0)) for k in (
                "splits", "pages", "articles", "redirects", "other_namespace", "non_wikitext",
                "wikitext_errors", "text_chars")},
            **{k: int(corpus.get(k, 0)) for k in (
                "tokens", "distinct_words", "distinct_bigrams", "bigrams_with_pmi")},
            "max_possible_pmi": round(pmi.max_pmi(tokens, cfg.min_bigram_count), 3) if tokens else None,
        },
        "dumps": dump_info,
        "pageviews": {"files": len(pv_files), **{k: v for k, v in pv_stats.items() if k != "files"},
                      "titles_over_min": sources["title"]["before_budget"]},
        "bad_inputs": bad,
        "counting": {"seconds": round(seconds, 3),
                     "pages_per_second": round(pages / seconds, 1) if seconds > 0 else None,
                     "dump_mb_per_second": round(dump_bytes / 1e6 / seconds, 3) if seconds > 0 else None},
        "queries_json": QUERIES_JSON,
    }


def plan_dumps(dumps: list[str], split_mb: int) -> tuple[list, list[dict], set[str]]:
    """The splits of every dump, a description of each dump, and their namespace names."""
    splits = []
    described = []
    namespaces: set[str] = set()
    for path in dumps:
        info, parts = dump.plan_splits(path, "auto", max(1, split_mb) << 20)
        splits.extend(parts)
        namespaces.update(name for key, name in info.namespaces.items() if key != 0 and name)
        described.append({"path": path, "dbname": info.dbname, "schema": info.version,
                          "size_bytes": info.size, "multistream": info.multistream,
                          "index": info.index, "splits": len(parts)})
    return splits, described, namespaces


def read_sources(out_dir: str, wordnet_names) -> tuple[SourceData, dict[str, list]]:
    """The counting pipeline's results: the admitted entries of each source (as SourceData,
    with the corpus counts other sources' entries look up) and the admitted rows per source."""
    admitted = {"unigram": transforms.read_output(out_dir, "unigrams"),
                "bigram": transforms.read_output(out_dir, "bigrams"),
                "title": transforms.read_output(out_dir, "titles")}
    data = SourceData(wordnet=wordnet_names)
    data.unigrams = {word: count for word, count in admitted["unigram"]}
    data.bigrams = {key: (count, value) for key, count, value in admitted["bigram"]}
    data.titles = {title: views for title, views in admitted["title"]}
    data.unigram_counts = {word: count for word, count in transforms.read_output(out_dir, "unigram_lookups")}
    data.unigram_counts.update(data.unigrams)
    data.bigram_counts = {key: (count, value)
                          for key, count, value in transforms.read_output(out_dir, "bigram_lookups")}
    data.bigram_counts.update(data.bigrams)
    return data, admitted


def in_list(selection: Selection) -> Counter:
    """Entries of the final list per source (an entry found by two sources counts for both)."""
    return Counter(source for entry in selection.kept for source in entry.sources)


def _single(rows: list) -> dict:
    return rows[0] if rows else {}


# ---------------------------------------------------------------------------------------------
# Importing a list


def read_import(path: str) -> list[str]:
    """A JSON array of strings from `path` (MetaCLIP's metadata.json), or a UserError."""
    hint = "give a JSON array of strings, e.g. [\"dog\", \"hot dog\"] (MetaCLIP's metadata.json)"
    if not fs.exists(path):
        raise UserError(f"query list not found: {path}", "check queries.import_json / --import")
    try:
        with fs.open_file(path, "rt", encoding="utf-8") as f:
            items = json.load(f)
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text: {e}", hint) from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}", hint) from None
    if not isinstance(items, list):
        raise UserError(f"{path} holds a JSON {type(items).__name__}, not an array", hint)
    for pos, item in enumerate(items):
        if not isinstance(item, str):
            raise UserError(f"{path}: entry {pos} is {item!r}, not a string", hint)
    return items


def run_import(ctx: StageContext, path: str, max_queries: int) -> StageResult:
    items = read_import(path)
    entries, repeats = union_mod.from_import(items)
    selection = union_mod.select(entries, max_queries, pre_rejected=repeats)
    sources = budgets.import_report(len(entries), in_list(selection))
    write_outputs(ctx.tmp_dir, selection, sources)
    extra = {"mode": "import", "import": path, "sources": sources, "overlaps": {},
             "queries_json": QUERIES_JSON}
    return StageResult(n_in=selection.n_in, units="entries", extra=extra)


# ---------------------------------------------------------------------------------------------
# Writing


def write_outputs(tmp_dir: str, selection: Selection, sources: dict) -> None:
    """The kept entries (with `sources`, each source's budget report, in the Parquet file's
    metadata under SOURCES_METADATA), the rejects, and queries.json."""
    rows = []
    for qid, e in enumerate(selection.kept):
        rows.append({"query_id": qid, "query": e.query, "sources": e.sources,
                     "unigram_count": e.unigram_count, "bigram_count": e.bigram_count,
                     "pmi": e.pmi, "views": e.views, "synsets": e.synsets})
    table = pa.Table.from_pylist(rows, schema=schemas.QUERIES).replace_schema_metadata(
        {SOURCES_METADATA: json.dumps(sources, sort_keys=True)})
    _write_parquet(fs.join(tmp_dir, "part-00000.parquet"), table)
    rejects = [reject({"uid": r.entry.query, **r.entry.record()}, r.reason, r.detail)
               for r in selection.rejected]
    fs.makedirs(fs.join(tmp_dir, "rejects"))
    _write_parquet(fs.join(tmp_dir, "rejects", "part-00000.parquet"),
                   pa.Table.from_pylist(rejects, schema=schemas.REJECTS))
    queries = [e.query for e in selection.kept]
    raw = dumps_query_list(queries).encode("utf-8")
    with fs.open_file(fs.join(tmp_dir, QUERIES_JSON), "wb") as f:
        f.write(raw)
    QueryMatcher(queries).save_compiled(tmp_dir, raw)


def dumps_query_list(queries: list[str]) -> str:
    """A JSON array of strings, one per line (valid JSON, readable and diffable)."""
    if not queries:
        return "[]\n"
    return "[\n" + ",\n".join(json.dumps(q, ensure_ascii=False) for q in queries) + "\n]\n"


def _write_parquet(path: str, table: pa.Table) -> None:
    with fs.open_file(path, "wb") as f:
        pq.write_table(table, f)
