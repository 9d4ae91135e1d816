"""The queries stage's Beam pipeline: dump splits -> pages -> text -> counts -> thresholded sources.

    splits --ReadPages--> article wikitext --CountPages--> (shard, {word: n}), (shard, {"w1 w2": n})
        --CombinePerKey(MergeCounts)--> unigram and bigram totals; N = sum of unigram totals
    bigrams with c >= min_bigram_count --join c(x), join c(y), N--> PMI
    pageview files --ReadPageviews--> (shard, {title: views}) --CombinePerKey(MergeCounts)-->
        titles with views >= min_title_views

Every count is a Beam combine, so a dump far larger than one machine's memory is counted on
many workers (Dataflow) exactly as on the local runner. Page text never leaves the worker that
read it: reading, parsing and counting are fused, and only counts are shuffled.

Counts travel in hash shards: a worker sums the keys of a bundle in a dict (flushed every
`flush_keys` keys, which bounds its memory), splits it by a stable hash of the key
(`shard_of`, CRC-32) into `shards` parts and emits (shard, {key: count}); `CombinePerKey` with
`MergeCounts` then adds the parts of each shard. This is the same combine as one element per
(key, count) pair, but with thousands of keys per element instead of one, which removes Beam's
per-element cost (billions of elements for English Wikipedia). Each shard holds about
distinct keys / shards entries; `shard_count` scales the shard count with the input size so
that a shard stays a few MB whatever the dump. Results that are small by construction
(thresholded entries, the corpus counts of the other sources' entries, statistics) are written
as JSON lines under `out_dir` for the driver to read back.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.queries import counts, pageviews, pmi
from witcurate.queries.dump import Split, read_split

UNI = "unigrams"
BI = "bigrams"
STATS = "stats"
BAD = "bad_inputs"
FLUSH_KEYS = 200_000
MAX_SAMPLES = 10
MIN_SHARDS = 16
MAX_SHARDS = 65536


def shard_of(key: str, shards: int) -> int:
    """A hash that is the same on every worker (Python's str hash is salted per process)."""
    return zlib.crc32(key.encode("utf-8")) % shards


def shard_count(input_bytes: int, bytes_per_shard: int = 1 << 20) -> int:
    """Shards for inputs of this size: one per MB, within [MIN_SHARDS, MAX_SHARDS]."""
    return max(MIN_SHARDS, min(MAX_SHARDS, input_bytes // bytes_per_shard))


def split_by_shard(counts: dict[str, int], shards: int) -> dict[int, dict[str, int]]:
    parts: dict[int, dict[str, int]] = {}
    for key, n in counts.items():
        part = parts.get(shard := shard_of(key, shards))
        if part is None:
            part = parts[shard] = {}
        part[key] = n
    return parts


def _windowed(tag: str, value: Any):
    return beam.pvalue.TaggedOutput(tag, WindowedValue(value, MIN_TIMESTAMP, [GlobalWindow()]))


class ReadPages(beam.DoFn):
    """A dump split -> (title, wikitext) of its articles; page statistics; unreadable splits."""

    def process(self, split: Split):
        stats: Counter[str] = Counter()
        stats["splits"] += 1
        try:
            for page in read_split(split):
                stats["pages"] += 1
                if page.ns != 0:
                    stats["other_namespace"] += 1
                elif page.redirect:
                    stats["redirects"] += 1
                elif page.model != "wikitext":
                    stats["non_wikitext"] += 1
                else:
                    stats["articles"] += 1
                    yield page.title, page.text
        except InputError as e:
            yield beam.pvalue.TaggedOutput(BAD, {
                "kind": "dump_split", "input": split.describe(), "error": str(e),
                "pages_read_before_error": stats["pages"]})
        yield beam.pvalue.TaggedOutput(STATS, dict(stats))


class CountPages(beam.DoFn):
    """(title, wikitext) -> (shard, {word: n}) and (shard, {"w1 w2": n}), summed within a bundle."""

    def __init__(self, shards: int, flush_keys: int = FLUSH_KEYS):
        self.shards = shards
        self.flush_keys = flush_keys

    def start_bundle(self):
        self._acc = counts.PageCounts()
        self._stats: Counter[str] = Counter()

    def process(self, page: tuple[str, str]):
        from mwparserfromhell.parser import ParserError

        from witcurate.queries import wikitext
        title, text = page
        try:
            plain = wikitext.to_text(text)
        except (ParserError, RecursionError, ValueError, TypeError, AttributeError):
            # mwparserfromhell gave up on this page: counted, never a silent skip
            self._stats["wikitext_errors"] += 1
            return
        self._acc.add_text(plain)
        self._stats["text_chars"] += len(plain)
        if len(self._acc.unigrams) + len(self._acc.bigrams) >= self.flush_keys:
            yield from self._drain(lambda tag, v: beam.pvalue.TaggedOutput(tag, v))

    def finish_bundle(self):
        yield from self._drain(_windowed)
        if self._stats:
            yield _windowed(STATS, dict(self._stats))
            self._stats = Counter()

    def _drain(self, wrap):
        acc, self._acc = self._acc, counts.PageCounts()
        for tag, table in ((UNI, acc.unigrams), (BI, acc.bigrams)):
            for shard, part in split_by_shard(table, self.shards).items():
                yield wrap(tag, (shard, part))


class ReadPageviews(beam.DoFn):
    """A pageview file -> (shard, {title: views}) summed per file; line statistics; bad files."""

    def __init__(self, projects: Iterable[str], shards: int, extra_namespaces: Iterable[str] = (),
                 flush_keys: int = FLUSH_KEYS):
        self.projects = frozenset(projects)
        self.shards = shards
        self.extra_namespaces = frozenset(n.lower() for n in extra_namespaces)
        self.flush_keys = flush_keys

    def process(self, path: str):
        stats: dict[str, Any] = {"files": 1, "lines": 0, "counted_lines": 0, "other_project": 0,
                                 "other_namespace": 0, "invalid_title": 0,
                                 **{f"malformed_{k}": 0 for k in pageviews.MALFORMED_KINDS},
                                 "malformed_samples": []}
        sums: dict[str, int] = {}
        try:
            for line in pageviews.iter_file_lines(path):
                stats["lines"] += 1
                try:
                    code, raw, views = pageviews.parse_line(line)
                    if code not in self.projects:
                        stats["other_project"] += 1
                        continue
                    title = pageviews.clean_title(raw)
                except pageviews.Malformed as e:
                    stats[f"malformed_{e.kind}"] += 1
                    if len(stats["malformed_samples"]) < MAX_SAMPLES:
                        stats["malformed_samples"].append(f"{path}: {e}")
                    continue
                if not pageviews.is_valid_title(title):
                    stats["invalid_title"] += 1
                    continue
                if not pageviews.is_main_namespace(title, self.extra_namespaces):
                    stats["other_namespace"] += 1
                    continue
                stats["counted_lines"] += 1
                sums[title] = sums.get(title, 0) + views
                if len(sums) >= self.flush_keys:
                    yield from split_by_shard(sums, self.shards).items()
                    sums = {}
        except InputError as e:
            yield beam.pvalue.TaggedOutput(BAD, {
                "kind": "pageview_file", "input": path, "error": str(e),
                "lines_read_before_error": stats["lines"]})
        yield from split_by_shard(sums, self.shards).items()
        yield beam.pvalue.TaggedOutput(STATS, stats)


class MergeCounts(beam.CombineFn):
    """Add {key: count} dicts (the parts of one shard)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, part):
        if not acc:
            return dict(part)
        get = acc.get
        for key, n in part.items():
            acc[key] = get(key, 0) + n
        return acc

    def merge_accumulators(self, accs):
        accs = sorted(accs, key=len, reverse=True)
        out = accs[0] if accs else {}
        for acc in accs[1:]:
            out = self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return acc


class MergeStats(beam.CombineFn):
    """Sum the numbers of statistics dicts; concatenate their sample lists (up to a limit)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, value):
        for k, v in value.items():
            if isinstance(v, list):
                acc[k] = (acc.get(k, []) + v)[:MAX_SAMPLES]
            else:
                acc[k] = acc.get(k, 0) + v
        return acc

    def merge_accumulators(self, accs):
        out: dict = {}
        for acc in accs:
            self.add_input(out, acc)
        return out

    def extract_output(self, acc):
        return acc


def _lookup_keys(entry: str):
    key = counts.lookup_key(entry)
    if key is not None:
        yield f"{key[0]}\t{key[1]}"


def lookup_keys(entries: Iterable[str]) -> set[str]:
    """The count keys ("u\tword", "b\tw1 w2") of entries that have one (see counts.lookup_key)."""
    return {k for entry in entries for k in _lookup_keys(entry)}


def write_lookup_file(path: str, entries: Iterable[str]) -> None:
    with fs.open_file(path, "wt", encoding="utf-8") as f:
        json.dump(sorted(lookup_keys(entries)), f, ensure_ascii=False)


def _read_lookup_file(path: str) -> list[str]:
    with fs.open_file(path, "rt", encoding="utf-8") as f:
        return json.load(f)


class KeySet(beam.CombineFn):
    """One set of lookup keys from single keys and lists of keys."""

    def create_accumulator(self):
        return set()

    def add_input(self, acc, value):
        if isinstance(value, str):
            acc.add(value)
        else:
            acc.update(value)
        return acc

    def merge_accumulators(self, accs):
        out: set = set()
        for acc in accs:
            out |= acc
        return out

    def extract_output(self, acc):
        return frozenset(acc)


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
    keys (`write_lookup_file`) of entries known before the pipeline (WordNet names) whose
    corpus counts are wanted, or None.
    shards / pageview_shards: hash shards of the word and title counts (see `shard_count`).
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
    lookups = ((p | "LookupFile" >> beam.Create([lookup_file] if lookup_file else [])
                  | "ReadLookupFile" >> beam.Map(_read_lookup_file),
                titles | "TitleLookupKeys" >> beam.FlatMap(lambda kv: _lookup_keys(kv[0])))
               | "AllLookups" >> beam.Flatten()
               | "LookupSet" >> beam.CombineGlobally(KeySet()))
    lookup_side = beam.pvalue.AsSingleton(lookups)

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
