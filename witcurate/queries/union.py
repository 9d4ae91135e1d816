"""The query list: exact, case-sensitive union of the sources, with provenance and a size limit.

The sources come in within their budgets (see `budgets`: each source's entries over its floor,
the best `max_*` of them). Steps, each drop a reject with a reason so that in = kept + rejected:
1. union: one entry per exact string (case kept), listing every source it came from with that
   source's figures (unigram count, bigram count and PMI, page views, WordNet synsets); an
   entry found by one source also gets the corpus counts of the others where they exist
   ("dog" from WordNet carries its unigram count);
2. `empty_after_normalisation`: the entry has no word token under the shared tokenisation
   ("!!!", "-"), so no caption could ever match it;
3. `duplicate_after_normalisation`: the entry differs from a kept one only in spacing or
   punctuation padding ("AC/DC" and "AC / DC"): both would match exactly the same captions,
   so one query id stands for them; the survivor is the one ranked first (below);
4. `over_max_queries`: when more than `max_queries` remain, the first `max_queries` by priority
   are kept.

Priority (why): entries are ranked by their best source, in this order:
   WordNet names  -> page-view titles (most viewed first) -> unigrams (most frequent first)
   -> bigrams (highest PMI first);
within a tier, entries found by more sources come first, then the source's own figure decides,
then the string.
WordNet names and article titles name concepts (objects, species, places, people, works)
chosen by people; they are what the list is for, so they are never crowded out by word
statistics (WordNet first: a fixed 86,555 names, where titles are cut by views). Unigrams come
next because a frequent word is both likely to be seen in captions and to anchor balancing;
bigrams come last because the strong ones are largely titles or WordNet compounds already
("New York", "hot dog"), and those that are not are the least certain to name a concept.
So the limit cuts the weakest tail of the weakest source first. At the default budgets the
sources bring at most 86,555 + 61,235 + 251,465 + 100,646 = 499,901 entries, so the default
limit of 500,000 only cuts when a budget is raised. An imported list keeps its own order: the
first `max_queries` distinct entries of the file are kept.

Kept entries are sorted by string (Python's code point order, the order of `queries.json`) and
`query_id` is the index in that order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from witcurate.queries import counts as counts_mod
from witcurate.queries.tokenize import entry_key

SOURCES = ("wordnet", "title", "unigram", "bigram", "import")
TIER = {"wordnet": 0, "title": 1, "unigram": 2, "bigram": 3, "import": 4}


@dataclass(slots=True)
class Entry:
    query: str
    sources: list[str] = field(default_factory=list)
    unigram_count: int | None = None
    bigram_count: int | None = None
    pmi: float | None = None
    views: int | None = None
    synsets: list[str] = field(default_factory=list)
    order: int = 0                     # position in an imported list

    def record(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("order")
        return out


@dataclass
class Rejected:
    entry: Entry
    reason: str
    detail: str


@dataclass
class Selection:
    kept: list[Entry]                  # sorted by query; query_id = index
    rejected: list[Rejected]
    n_in: int                          # unique entries (+ rejects made before, e.g. import repeats)
    per_source: dict[str, int]
    overlaps: dict[str, int]
    combinations: dict[str, int]


@dataclass
class SourceData:
    """Thresholded source entries, plus corpus counts for looking up other sources' entries."""
    unigrams: dict[str, int] = field(default_factory=dict)                   # word -> count
    bigrams: dict[str, tuple[int, float]] = field(default_factory=dict)      # "w1 w2" -> (count, pmi)
    titles: dict[str, int] = field(default_factory=dict)                     # title -> views
    wordnet: dict[str, list[str]] = field(default_factory=dict)              # name -> synsets
    unigram_counts: dict[str, int] = field(default_factory=dict)             # lookups
    bigram_counts: dict[str, tuple[int, float | None]] = field(default_factory=dict)


@contextlib.contextmanager
def no_gc():
    """Pause the cyclic garbage collector while building many small, cycle-free objects.

    Hundreds of thousands of entries would otherwise trigger full collections over everything
    alive in the process (several times slower, nothing to collect).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def union(data: SourceData) -> dict[str, Entry]:
    with no_gc():
        return _union(data)


def _union(data: SourceData) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}

    def get(query: str) -> Entry:
        entry = entries.get(query)
        if entry is None:
            entry = entries[query] = Entry(query)
        return entry

    for name, synsets in data.wordnet.items():
        e = get(name)
        e.sources.append("wordnet")
        e.synsets = list(synsets)
    for title, views in data.titles.items():
        e = get(title)
        e.sources.append("title")
        e.views = int(views)
    for word, count in data.unigrams.items():
        e = get(word)
        e.sources.append("unigram")
        e.unigram_count = int(count)
    for bigram, (count, value) in data.bigrams.items():
        e = get(bigram)
        e.sources.append("bigram")
        e.bigram_count = int(count)
        e.pmi = float(value)
    for e in entries.values():
        key = counts_mod.lookup_key(e.query)
        if key is None:
            continue
        kind, k = key
        if kind == "u" and e.unigram_count is None and k in data.unigram_counts:
            e.unigram_count = int(data.unigram_counts[k])
        elif kind == "b" and e.bigram_count is None and k in data.bigram_counts:
            count, value = data.bigram_counts[k]
            e.bigram_count = int(count)
            e.pmi = None if value is None else float(value)
    for e in entries.values():
        e.sources.sort(key=TIER.__getitem__)
    return entries


def priority(entry: Entry) -> tuple:
    """Sort key: smaller is kept first (see the module docstring)."""
    tier = min(TIER[s] for s in entry.sources)
    if tier == TIER["wordnet"]:
        score = -(entry.unigram_count or entry.bigram_count or 0)
    elif tier == TIER["title"]:
        score = -(entry.views or 0)
    elif tier == TIER["unigram"]:
        score = -(entry.unigram_count or 0)
    elif tier == TIER["bigram"]:
        score = -(entry.pmi if entry.pmi is not None else float("-inf"))
    else:
        score = entry.order
    return (tier, -len(entry.sources), score, entry.query)


def select(entries: Iterable[Entry], max_queries: int, rank=priority,
           pre_rejected: Iterable[Rejected] = ()) -> Selection:
    """Steps 2-4 over unique entries; `rank` orders them (see `priority`)."""
    with no_gc():
        return _select(entries, max_queries, rank, pre_rejected)


def _select(entries, max_queries, rank, pre_rejected) -> Selection:
    entries = list(entries)
    rejected: list[Rejected] = list(pre_rejected)
    n_in = len(entries) + len(rejected)
    live: list[Entry] = []
    for e in entries:
        if not entry_key(e.query):
            rejected.append(Rejected(e, "empty_after_normalisation",
                                     "no word token under the shared tokenisation"))
        else:
            live.append(e)
    live.sort(key=rank)
    survivors: list[Entry] = []
    seen: dict[str, str] = {}
    for e in live:
        key = entry_key(e.query)
        if key in seen:
            rejected.append(Rejected(e, "duplicate_after_normalisation",
                                     f"matches the same captions as {seen[key]!r}"))
        else:
            seen[key] = e.query
            survivors.append(e)
    if max_queries >= 0 and len(survivors) > max_queries:
        for pos, e in enumerate(survivors[max_queries:], start=max_queries + 1):
            rejected.append(Rejected(e, "over_max_queries",
                                     f"priority rank {pos} > max_queries {max_queries} "
                                     f"(best source: {min(e.sources, key=TIER.__getitem__)})"))
        survivors = survivors[:max_queries]
    survivors.sort(key=lambda e: e.query)
    per_source, overlaps, combos = source_stats(entries)
    return Selection(survivors, rejected, n_in, per_source, overlaps, combos)


def source_stats(entries: Iterable[Entry]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Entries per source, per pair of sources, and per exact combination of sources."""
    per: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    combos: Counter[str] = Counter()
    for e in entries:
        per.update(e.sources)
        combos["+".join(e.sources)] += 1
        for a, b in itertools.combinations(e.sources, 2):
            pairs[f"{a}&{b}"] += 1
    return dict(sorted(per.items())), dict(sorted(pairs.items())), dict(sorted(combos.items()))


def from_import(items: list[str]) -> tuple[list[Entry], list[Rejected]]:
    """Entries of an imported list, in file order; exact repeats are rejects."""
    seen: set[str] = set()
    entries: list[Entry] = []
    rejected: list[Rejected] = []
    for pos, query in enumerate(items):
        entry = Entry(query, ["import"], order=pos)
        if query in seen:
            rejected.append(Rejected(entry, "duplicate_in_import", f"repeats an earlier entry (position {pos})"))
            continue
        seen.add(query)
        entries.append(entry)
    return entries, rejected
