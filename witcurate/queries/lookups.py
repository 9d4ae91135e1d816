"""Lookup keys: which corpus counts the other sources' entries need.

A WordNet name or an article title that is one word or two ("dog", "New York") carries its
corpus count (unigram count; bigram count and PMI) even when it is not itself a unigram or
bigram entry. Its key is "u\tword" or "b\tw1 w2" (`counts.lookup_key`); the counting pipeline
collects every key into one set (`KeySet`) and keeps the counts of those keys.
"""

from __future__ import annotations

import json
import sys
from typing import Iterable

import apache_beam as beam
from apache_beam.runners.worker.statecache import CacheAware

from witcurate.pipeline import fs
from witcurate.queries import counts


def entry_lookup_keys(entry: str):
    """The lookup key of one entry, if it has one (zero or one key)."""
    key = counts.lookup_key(entry)
    if key is not None:
        yield f"{key[0]}\t{key[1]}"


def lookup_keys(entries: Iterable[str]) -> set[str]:
    """The count keys ("u\tword", "b\tw1 w2") of entries that have one (see counts.lookup_key)."""
    return {k for entry in entries for k in entry_lookup_keys(entry)}


def write_lookup_file(path: str, entries: Iterable[str]) -> None:
    with fs.open_file(path, "wt", encoding="utf-8") as f:
        json.dump(sorted(lookup_keys(entries)), f, ensure_ascii=False)


def read_lookup_file(path: str) -> list[str]:
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
        return LookupSet(acc)


class LookupSet(CacheAware):
    """The set of lookup keys, as the side input the counting steps read.

    Beam's state cache weighs each side input it loads by walking every object in it (objsize),
    and a side input is loaded again for each bundle that reads it: for WordNet's 170,000 keys
    that walk was 0.3 s a load, most of a small run's time. CacheAware is Beam's way for a value
    to say what to weigh: the keys' size, summed once when the set is made, stands for them."""

    __slots__ = ("keys", "nbytes")

    def __init__(self, keys: Iterable[str]):
        self.keys = frozenset(keys)
        self.nbytes = sys.getsizeof(self.keys) + sum(map(sys.getsizeof, self.keys))

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def __len__(self) -> int:
        return len(self.keys)

    def __sizeof__(self) -> int:
        return self.nbytes

    def get_referents_for_cache(self) -> list:
        return []
