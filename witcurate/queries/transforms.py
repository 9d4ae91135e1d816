"""The queries stage's Beam pipeline: dump splits -> pages -> text -> counts -> thresholded sources.

    splits --ReadPages--> article wikitext --CountPages--> (shard, {word: n}), (shard, {"w1 w2": n})
        --CombinePerKey(MergeCounts)--> unigram and bigram totals; N = sum of unigram totals
    bigrams with c >= min_bigram_count --join c(x), join c(y), N--> PMI
    pageview files --ReadPageviews--> (shard, {title: views}) --CombinePerKey(MergeCounts)-->
        titles with views >= min_title_views

Every count is a Beam combine, so a dump far larger than one machine's memory is counted on
many workers (Dataflow) exactly as on the local runner (see `counting`). Results that are small
by construction (thresholded entries, the corpus counts of the other sources' entries
(`lookups`), statistics) are written as JSON lines under `out_dir` for the driver to read back.
"""

from __future__ import annotations

import json
from typing import Iterable

import apache_beam as beam

from witcurate.pipeline import fs
from witcurate.queries import lookups, pmi
from witcurate.queries.counting import (BAD, BI, FLUSH_KEYS, MIN_SHARDS, STATS, UNI, CountPages,
                                        MergeCounts, MergeStats, ReadPages, ReadPageviews)
from witcurate.queries.dump import Split


def _over(shard_counts, minimum):
    for key, n in shard_counts[1].items():
        if n >= minimum:
            yield key, n


def _unigrams_out(shard_counts, min_count, lookups):
    for word, n in shard_counts[1].items():
        if n >= min_count or f"u\t{word}" in lookups:
            yield word, n


def _frequent_bigrams(shard_counts, min_count):
    for key, n in shard_counts[1].items():
        if n >= min_count:
            yield key.split(" ", 1)[0], (key, n)


def _rare_lookup_bigrams(shard_counts, min_count, lookups):
    for key, n in shard_counts[1].items():
        if n < min_count and f"b\t{key}" in lookups:
            yield key, n, None


def _shard_total(shard_counts):
    return sum(shard_counts[1].values())


def _shard_size(shard_counts):
    return len(shard_counts[1])


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


def _keep_scored(row, min_pmi, lookups):
    return row[2] >= min_pmi or f"b\t{row[0]}" in lookups


def _to_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


class _Write(beam.PTransform):
    def __init__(self, out_dir: str, name: str):
        super().__init__()
        self.out_dir = out_dir
        self.name = name

    def expand(self, pcoll):
        return (pcoll | "Json" >> beam.Map(_to_json)
                      | "Text" >> beam.io.WriteToText(fs.join(self.out_dir, self.name),
                                                      file_name_suffix=".jsonl", num_shards=1))


def build(p: beam.Pipeline, splits: list[Split], pageview_files: list[str],
          lookup_file: str | None, cfg, out_dir: str, extra_namespaces: Iterable[str] = (),
          shards: int = MIN_SHARDS, pageview_shards: int = MIN_SHARDS,
          flush_keys: int = FLUSH_KEYS) -> None:
    """Wire the counting pipeline into `p`; outputs land in `out_dir/<name>-*.jsonl`.

    cfg: the `queries` config section (thresholds, projects). lookup_file: a JSON list of lookup
    keys (`lookups.write_lookup_file`) of entries known before the pipeline (WordNet names) whose
    corpus counts are wanted, or None.
    shards / pageview_shards: hash shards of the word and title counts (see `counting.shard_count`).
    """
    # Dump: splits -> pages -> counts.
    pages = (p | "Splits" >> beam.Create(splits)
               | "SpreadSplits" >> beam.Reshuffle()
               | "ReadPages" >> beam.ParDo(ReadPages()).with_outputs(STATS, BAD, main="pages"))
    counted = pages.pages | "CountPages" >> beam.ParDo(CountPages(shards, flush_keys)).with_outputs(
        UNI, BI, STATS, main="unused")
    uni = counted[UNI] | "SumUnigrams" >> beam.CombinePerKey(MergeCounts())
    bi = counted[BI] | "SumBigrams" >> beam.CombinePerKey(MergeCounts())
    n_tokens = uni | "ShardTokens" >> beam.Map(_shard_total) | "Tokens" >> beam.CombineGlobally(sum)

    # Pageviews: files -> {title: views} -> sums -> titles over the threshold.
    views = (p | "PageviewFiles" >> beam.Create(pageview_files)
               | "SpreadFiles" >> beam.Reshuffle()
               | "ReadPageviews" >> beam.ParDo(ReadPageviews(
                   cfg.pageview_projects, pageview_shards, extra_namespaces, flush_keys)
               ).with_outputs(STATS, BAD, main="views"))
    titles = (views.views | "SumViews" >> beam.CombinePerKey(MergeCounts())
                          | "TitlesOverMin" >> beam.FlatMap(_over, cfg.min_title_views))

    # The corpus counts of other sources' entries are looked up too (WordNet names, titles):
    # one set of lookup keys, the WordNet part read from a file the driver wrote.
    lookup_set = ((p | "LookupFile" >> beam.Create([lookup_file] if lookup_file else [])
                     | "ReadLookupFile" >> beam.Map(lookups.read_lookup_file),
                   titles | "TitleLookupKeys" >> beam.FlatMap(
                       lambda kv: lookups.entry_lookup_keys(kv[0])))
                  | "AllLookups" >> beam.Flatten()
                  | "LookupSet" >> beam.CombineGlobally(lookups.KeySet()))
    lookup_side = beam.pvalue.AsSingleton(lookup_set)

    unigrams_out = uni | "UnigramsOut" >> beam.FlatMap(_unigrams_out, cfg.min_unigram_count, lookup_side)

    # PMI: join each bigram counted >= min_bigram_count with c(x), then c(y). c(x) >= c(xy), so
    # only words counted >= min_bigram_count take part in the join.
    uni_join = uni | "JoinableWords" >> beam.FlatMap(_over, cfg.min_bigram_count)
    bi_join = bi | "FrequentBigrams" >> beam.FlatMap(_frequent_bigrams, cfg.min_bigram_count)
    with_first = ({"c": uni_join, "b": bi_join} | "JoinFirst" >> beam.CoGroupByKey()
                  | "AttachFirst" >> beam.FlatMap(_attach_first))
    with_both = ({"c": uni_join, "b": with_first} | "JoinSecond" >> beam.CoGroupByKey()
                 | "AttachSecond" >> beam.FlatMap(_attach_second))
    scored = with_both | "PMI" >> beam.Map(_score, beam.pvalue.AsSingleton(n_tokens))
    bigrams_out = ((scored | "BigramsOut" >> beam.Filter(_keep_scored, cfg.min_pmi, lookup_side),
                    bi | "RareLookupBigrams" >> beam.FlatMap(_rare_lookup_bigrams, cfg.min_bigram_count,
                                                             lookup_side))
                   | "AllBigramsOut" >> beam.Flatten())

    page_stats = ((pages[STATS], counted[STATS]) | "PageStatsAll" >> beam.Flatten()
                  | "PageStats" >> beam.CombineGlobally(MergeStats()))
    pv_stats = views[STATS] | "PageviewStats" >> beam.CombineGlobally(MergeStats())
    bad = (pages[BAD], views[BAD]) | "BadInputs" >> beam.Flatten()
    corpus = ((n_tokens | "TokensRow" >> beam.Map(lambda n: ("tokens", n)),
               uni | "ShardWords" >> beam.Map(_shard_size) | "CountWords" >> beam.CombineGlobally(sum)
                   | "WordsRow" >> beam.Map(lambda n: ("distinct_words", n)),
               bi | "ShardBigrams" >> beam.Map(_shard_size) | "CountBigrams" >> beam.CombineGlobally(sum)
                  | "BigramsRow" >> beam.Map(lambda n: ("distinct_bigrams", n)),
               bi_join | "CountFrequentBigrams" >> beam.combiners.Count.Globally()
                       | "FrequentRow" >> beam.Map(lambda n: ("bigrams_with_pmi", n)))
              | "CorpusRows" >> beam.Flatten())

    unigrams_out | "WriteUnigrams" >> _Write(out_dir, "unigrams")
    bigrams_out | "WriteBigrams" >> _Write(out_dir, "bigrams")
    titles | "WriteTitles" >> _Write(out_dir, "titles")
    page_stats | "WritePageStats" >> _Write(out_dir, "page_stats")
    pv_stats | "WritePageviewStats" >> _Write(out_dir, "pageview_stats")
    bad | "WriteBad" >> _Write(out_dir, "bad_inputs")
    corpus | "WriteCorpus" >> _Write(out_dir, "corpus")


def read_output(out_dir: str, name: str) -> list:
    """The JSON values a `build` pipeline wrote under `name`."""
    rows = []
    for path in fs.glob(fs.join(out_dir, f"{name}-*.jsonl")):
        with fs.open_file(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rows.append(json.loads(line))
    return rows
