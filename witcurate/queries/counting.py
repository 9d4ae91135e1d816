"""The Beam functions that read inputs and count: dump splits -> pages -> word and bigram
counts, pageview files -> title views, and the combines that add the counts up.

Counts travel in hash shards: a worker sums the keys of a bundle in a dict (flushed every
`flush_keys` keys, which bounds its memory), splits it by a stable hash of the key
(`shard_of`, CRC-32) into `shards` parts and emits (shard, {key: count}); `CombinePerKey` with
`MergeCounts` then adds the parts of each shard. This is the same combine as one element per
(key, count) pair, but with thousands of keys per element instead of one, which removes Beam's
per-element cost (billions of elements for English Wikipedia). Each shard holds about
distinct keys / shards entries; `shard_count` scales the shard count with the input size so
that a shard stays a few MB whatever the dump.

Page text never leaves the worker that read it: reading, parsing and counting are fused, and
only counts are shuffled. Unreadable inputs go to the BAD output with what was read before the
error; statistics go to the STATS output.
"""

from __future__ import annotations

import zlib
from collections import Counter
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from witcurate.errors import InputError
from witcurate.queries import counts, pageviews
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
