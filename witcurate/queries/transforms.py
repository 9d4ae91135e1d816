"""The queries stage's Beam pipeline: dump splits -> counts -> sources within their budgets.

    splits --ReadPages--> article wikitext --CountPages--> (shard, {word: n}), (shard, {"w1 w2": n})
        --CombinePerKey(MergeCounts)--> unigram and bigram totals; N = sum of unigram totals
    bigrams with c >= min_bigram_count --join c(x), join c(y), N--> PMI
    pageview files --ReadPageviews--> (shard, {title: views}) --CombinePerKey(MergeCounts)--> views
    each source: floor (min_*) --Top(max_*) by its ranking--> admitted entries (see `budgets`)

Every count is a Beam combine, so a dump far larger than one machine's memory is counted on
many workers (Dataflow) exactly as on the local runner (see `counting`); so is every budget
(`Top.Of`: each worker keeps its bundle's best `budget` entries, then those are merged), so the
driver only ever reads what is admitted. Results that are small by construction (admitted
entries, the corpus counts of other sources' entries (`lookups`), statistics) are written as
JSON lines under `out_dir` for the driver to read back (`read_output`):

    unigrams, bigrams, titles     admitted entries: [word, n], ["w1 w2", n, pmi], [title, views]
    unigram_lookups, bigram_lookups   corpus counts of WordNet names and admitted titles
    eligible                      [source, entries passing its floor] (the count before the budget)
    corpus, page_stats, pageview_stats, bad_inputs
"""

from __future__ import annotations

import json
from typing import Iterable

import apache_beam as beam

from witcurate.pipeline import fs
from witcurate.pipeline.table_sink import WriteTables, json_lines_table
from witcurate.queries import budgets, lookups, pmi
from witcurate.queries.counting import (BAD, BI, FLUSH_KEYS, MIN_SHARDS, STATS, UNI, CountPages,
                                        MergeCounts, MergeStats, ReadPages, ReadPageviews)
from witcurate.queries.dump import Split


def build(p: beam.Pipeline, splits: list[Split], pageview_files: list[str],
          lookup_file: str | None, cfg, out_dir: str, extra_namespaces: Iterable[str] = (),
          shards: int = MIN_SHARDS, pageview_shards: int = MIN_SHARDS,
          flush_keys: int = FLUSH_KEYS) -> None:
    """Wire the counting pipeline into `p`; outputs land in `out_dir/<name>-*.jsonl`.

    cfg: the `queries` config section (floors, budgets, projects). lookup_file: a JSON list of
    lookup keys (`lookups.write_lookup_file`) of entries known before the pipeline (WordNet
    names) whose corpus counts are wanted, or None.
    shards / pageview_shards: hash shards of the word and title counts (`counting.shard_count`).
    """
    pages, counted, uni, bi = _count_dump(p, splits, shards, flush_keys)
    views, title_views = _sum_pageviews(p, pageview_files, cfg, pageview_shards, extra_namespaces,
                                        flush_keys)
    n_tokens = (uni | "ShardTokens" >> beam.Map(_shard_total)
                    | "Tokens" >> beam.CombineGlobally(sum).without_defaults())
    scored = _score_bigrams(uni, bi, n_tokens, cfg.min_bigram_count)

    eligible = {
        "unigram": uni | "UnigramFloor" >> beam.FlatMap(_over, cfg.min_unigram_count),
        "bigram": scored | "BigramFloor" >> beam.Filter(_passes_bigram_floor, cfg.min_bigram_count,
                                                       cfg.min_pmi),
        "title": title_views | "TitleFloor" >> beam.FlatMap(_over, cfg.min_title_views),
    }
    admitted = {source: eligible[source] | f"Admit{source.capitalize()}s" >> Admit(
                    budgets.budget_of(cfg, source), budgets.RANK[source])
                for source in budgets.BUDGETED}
    lookup_side = beam.pvalue.AsSingleton(_lookup_set(p, lookup_file, admitted["title"]))
    unigram_lookups = uni | "UnigramLookups" >> beam.FlatMap(_looked_up, "u", lookup_side)
    bigram_lookups = ((scored | "ScoredLookups" >> beam.Filter(_scored_looked_up, lookup_side),
                       bi | "RareLookups" >> beam.FlatMap(_rare_looked_up, cfg.min_bigram_count,
                                                          lookup_side))
                      | "BigramLookups" >> beam.Flatten())
    totals = _totals(uni, bi, scored, eligible)

    page_stats = ((pages[STATS], counted[STATS]) | "PageStatsAll" >> beam.Flatten()
                  | "PageStats" >> beam.CombineGlobally(MergeStats()).without_defaults())
    outputs = {
        "unigrams": admitted["unigram"], "bigrams": admitted["bigram"], "titles": admitted["title"],
        "unigram_lookups": unigram_lookups, "bigram_lookups": bigram_lookups,
        "eligible": totals | "EligibleRows" >> beam.FlatMap(_total_of, "eligible"),
        "corpus": ((n_tokens | "TokensRow" >> beam.Map(lambda n: ("tokens", n)),
                    totals | "TotalRows" >> beam.FlatMap(_total_of, "corpus"))
                   | "CorpusRows" >> beam.Flatten()),
        "page_stats": page_stats,
        "pageview_stats": views[STATS] | "PageviewStats" >> beam.CombineGlobally(MergeStats()).without_defaults(),
        "bad_inputs": (pages[BAD], views[BAD]) | "BadInputs" >> beam.Flatten(),
    }
    ({name: pcoll | f"Json_{name}" >> beam.Map(_to_json) for name, pcoll in outputs.items()}
     | "Write" >> WriteTables(out_dir, {name: json_lines_table(fs.join(out_dir, name)) for name in outputs}))


def _count_dump(p, splits, shards, flush_keys):
    """Dump splits -> pages -> summed unigram and bigram counts (shard, {key: n})."""
    pages = (p | "Splits" >> beam.Create(splits)
               | "SpreadSplits" >> beam.Reshuffle()
               | "ReadPages" >> beam.ParDo(ReadPages()).with_outputs(STATS, BAD, main="pages"))
    counted = pages.pages | "CountPages" >> beam.ParDo(CountPages(shards, flush_keys)).with_outputs(
        UNI, BI, STATS, main="unused")
    uni = counted[UNI] | "SumUnigrams" >> beam.CombinePerKey(MergeCounts())
    bi = counted[BI] | "SumBigrams" >> beam.CombinePerKey(MergeCounts())
    return pages, counted, uni, bi


def _sum_pageviews(p, files, cfg, shards, extra_namespaces, flush_keys):
    """Pageview files -> summed views of every title, (shard, {title: views})."""
    views = (p | "PageviewFiles" >> beam.Create(files)
               | "SpreadFiles" >> beam.Reshuffle()
               | "ReadPageviews" >> beam.ParDo(ReadPageviews(
                   cfg.pageview_projects, shards, extra_namespaces, flush_keys)
               ).with_outputs(STATS, BAD, main="views"))
    title_views = views.views | "SumViews" >> beam.CombinePerKey(MergeCounts())
    return views, title_views


def _score_bigrams(uni, bi, n_tokens, min_bigram_count):
    """("w1 w2", n, PMI) of every bigram counted >= min_bigram_count.

    Each bigram is joined with c(x), then c(y). c(x) >= c(xy), so only words counted
    >= min_bigram_count take part in the joins.
    """
    uni_join = uni | "JoinableWords" >> beam.FlatMap(_over, min_bigram_count)
    bi_join = bi | "FrequentBigrams" >> beam.FlatMap(_frequent_bigrams, min_bigram_count)
    with_first = ({"c": uni_join, "b": bi_join} | "JoinFirst" >> beam.CoGroupByKey()
                  | "AttachFirst" >> beam.FlatMap(_attach_first))
    with_both = ({"c": uni_join, "b": with_first} | "JoinSecond" >> beam.CoGroupByKey()
                 | "AttachSecond" >> beam.FlatMap(_attach_second))
    return with_both | "PMI" >> beam.Map(_score, beam.pvalue.AsSingleton(n_tokens, default_value=0))


def _lookup_set(p, lookup_file, admitted_titles):
    """One set of the lookup keys of WordNet names (read from a file the driver wrote) and of
    the admitted titles."""
    return ((p | "LookupFile" >> beam.Create([lookup_file] if lookup_file else [])
               | "ReadLookupFile" >> beam.Map(lookups.read_lookup_file),
             admitted_titles | "TitleLookupKeys" >> beam.FlatMap(
                 lambda row: lookups.entry_lookup_keys(row[0])))
            | "AllLookups" >> beam.Flatten()
            | "LookupSet" >> beam.CombineGlobally(lookups.KeySet()))


def _totals(uni, bi, scored, eligible):
    """((group, name), n): the corpus's distinct words, bigrams and bigrams with a PMI, and the
    entries passing each source's floor, summed in one combine (a global combine of each cost
    two of the local runner's bundles: 12 of the 53 a small dump's graph ran). A total with
    nothing to count is absent, which the reader takes for 0."""
    return ((uni | "ShardWords" >> beam.Map(lambda sc: (("corpus", "distinct_words"), len(sc[1]))),
             bi | "ShardBigrams" >> beam.Map(lambda sc: (("corpus", "distinct_bigrams"), len(sc[1]))),
             scored | "ScoredOne" >> beam.Map(lambda _: (("corpus", "bigrams_with_pmi"), 1)),
             *[eligible[s] | f"Eligible{s.capitalize()}One" >> beam.Map(lambda _, s=s: (("eligible", s), 1))
               for s in budgets.BUDGETED])
            | "AllTotals" >> beam.Flatten()
            | "Totals" >> beam.CombinePerKey(sum))


def _total_of(total, group):
    (total_group, name), n = total
    if total_group == group:
        yield name, n


class Admit(beam.PTransform):
    """The first `budget` elements by `rank` (smallest first); all of them when budget < 0."""

    def __init__(self, budget: int, rank):
        super().__init__()
        self.budget = budget
        self.rank = rank

    def expand(self, pcoll):
        if self.budget < 0:
            return pcoll
        return (pcoll | "Top" >> beam.combiners.Top.Of(self.budget, key=self.rank, reverse=True)
                      | "Each" >> beam.FlatMap(lambda rows: rows))


def _over(shard_counts, minimum):
    for key, n in shard_counts[1].items():
        if n >= minimum:
            yield key, n


def _passes_bigram_floor(row, min_bigram_count, min_pmi):
    return pmi.keep_bigram(row[1], row[2], min_bigram_count, min_pmi)


def _looked_up(shard_counts, kind, lookup_set):
    for key, n in shard_counts[1].items():
        if f"{kind}\t{key}" in lookup_set:
            yield key, n


def _scored_looked_up(row, lookup_set):
    return f"b\t{row[0]}" in lookup_set


def _rare_looked_up(shard_counts, min_count, lookup_set):
    for key, n in shard_counts[1].items():
        if n < min_count and f"b\t{key}" in lookup_set:
            yield key, n, None


def _frequent_bigrams(shard_counts, min_count):
    for key, n in shard_counts[1].items():
        if n >= min_count:
            yield key.split(" ", 1)[0], (key, n)


def _shard_total(shard_counts):
    return sum(shard_counts[1].values())


def _attach_first(joined):
    _, groups = joined
    c_x = next(iter(groups["c"]), None)
    if c_x is None:
        return
    for key, n in groups["b"]:
        yield key.split(" ", 1)[1], (key, n, c_x)


def _attach_second(joined):
    _, groups = joined
    c_y = next(iter(groups["c"]), None)
    if c_y is None:
        return
    for key, n, c_x in groups["b"]:
        yield key, n, c_x, c_y


def _score(row, n_tokens):
    key, n, c_x, c_y = row
    return key, n, pmi.pmi(n, c_x, c_y, n_tokens)


def _to_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def read_output(out_dir: str, name: str) -> list:
    """The JSON values a `build` pipeline wrote under `name`."""
    rows = []
    for path in fs.glob(fs.join(out_dir, f"{name}-*.jsonl")):
        with fs.open_file(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rows.append(json.loads(line))
    return rows
