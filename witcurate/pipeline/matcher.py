"""Aho-Corasick over the whole query list with the shared tokenisation rule (queries/tokenize.py).

Keys are padded (` red circle `) so an entry matches only as whole tokens; the search runs over
the padded, normalised caption. Several entries can share one key ("U.S." and "U. S."): the key
then maps to all their ids.
"""

from __future__ import annotations

from itertools import chain
from operator import itemgetter
from typing import Iterable, Sequence

import ahocorasick

from witcurate.errors import InputError
from witcurate.pipeline import fs
from witcurate.queries.tokenize import entry_key, normalize

_IDS = itemgetter(1)  # an automaton hit is (end index, ids of the entries with that key)


class QueryMatcher:
    def __init__(self, queries: Sequence[str]):
        self.queries = list(queries)
        keys: dict[str, tuple[int, ...]] = {}
        for qid, entry in enumerate(self.queries):
            key = entry_key(entry)
            if key:
                keys[key] = keys.get(key, ()) + (qid,)
        self.automaton = ahocorasick.Automaton()
        for key, ids in keys.items():
            self.automaton.add_word(key, ids)
        self.automaton.make_automaton()
        self.unmatchable = len(self.queries) - sum(len(v) for v in keys.values())

    def match(self, caption: str) -> list[int]:
        """Sorted ids of every query occurring in `caption` as whole tokens."""
        return sorted(set(chain.from_iterable(map(_IDS, self.automaton.iter(normalize(caption))))))

    def match_all(self, captions: Iterable[str | None]) -> list[list[int]]:
        """`match` over many captions (a missing caption matches nothing). The hits of each
        caption are gathered by C iterators, with no Python step per hit: a caption of common
        words hits once per word."""
        search, ids, norm = self.automaton.iter, _IDS, normalize
        return [sorted(set(chain.from_iterable(map(ids, search(norm(c)))))) if c else [] for c in captions]


def load_queries(path: str) -> list[str]:
    """A queries.json (MetaCLIP metadata.json format) or a queries stage directory holding one."""
    if not path.endswith(".json"):
        path = fs.join(path, "queries.json")
    if not fs.exists(path):
        raise InputError(f"query list not found: {path}",
                         "run the queries stage first, or pass --queries queries.json")
    try:
        data = fs.read_json(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON: {e}", "pass a JSON array of strings") from None
    if not isinstance(data, list) or not all(isinstance(q, str) for q in data):
        raise InputError(f"{path} is not a JSON array of strings", "pass MetaCLIP's metadata.json format")
    return data


def metaclip_reference_match(caption: str, entries: Sequence[str]) -> list[int]:
    """MetaCLIP's reference rule, kept as the floor the matcher must reach (used by tests)."""
    text = caption
    for ch in ",.;:?!\"`":
        text = text.replace(ch, f" {ch} ")
    text = " " + text.replace("\t", " ").replace("\n", " ") + " "
    return [i for i, e in enumerate(entries) if f" {e} " in text]


__all__ = ["QueryMatcher", "load_queries", "metaclip_reference_match"]
