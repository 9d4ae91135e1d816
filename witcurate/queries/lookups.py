"""Lookup keys: which corpus counts the other sources' entries need.

A WordNet name or an article title that is one word or two ("dog", "New York") carries its
corpus count (unigram count; bigram count and PMI) even when it is not itself a unigram or
bigram entry. Its key is "u\tword" or "b\tw1 w2" (`counts.lookup_key`); the counting pipeline
collects every key into one set (`KeySet`) and keeps the counts of those keys.
"""

from __future__ import annotations

import json
from typing import Iterable

import apache_beam as beam

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
        return frozenset(acc)
