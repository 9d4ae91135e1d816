"""Per-source budgets: how many entries each source may bring to the query list, and which.

MetaCLIP sized its metadata per source: every WordNet synset name, Wikipedia unigrams counted
at least 100 times (251,465), the bigrams of highest PMI (100,646) and the most viewed article
titles (61,235); the three numbers are the `upper_bound_*` constants of its
metaclip/metadata/build_metadata.py. The same here, in two steps per source:

1. the floor (config `queries.min_*`): the entries a source can offer at all;
2. the budget (config `queries.max_*`): of those, the first `budget` by the source's ranking.

    source   floor                                        ranking                budget
    wordnet  every name                                   -                      none
    title    views >= min_title_views (70)                most viewed first      max_titles (61,235)
    unigram  count >= min_unigram_count (100)             most frequent first    max_unigrams (251,465)
    bigram   count >= min_bigram_count (30), PMI >= min_pmi highest PMI first    max_bigrams (100,646)
             when set (no PMI floor by default)

Ties are broken by the string, for bigrams by (first word, second word) as NLTK's
`score_ngrams` breaks them, so the same counts give the same list on every runner and for any
number of workers. A budget below 0 admits everything that passes the floor. The union of the
admitted entries is then capped at `max_queries` (see `union`).

Why budgets rather than a PMI floor: a bigram's PMI is bounded by log2(N / count), so a fixed
floor means something different on every corpus (MetaCLIP's 30 admits nothing on English
Wikipedia once rare pairs are excluded, see `pmi`), while a budget asks each source for the
same number of its best entries whatever the corpus.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable, Sequence

BUDGETED = ("title", "unigram", "bigram")


def unigram_rank(row: Sequence) -> tuple:
    """(word, count): most frequent first."""
    word, count = row[0], row[1]
    return (-count, word)


def bigram_rank(row: Sequence) -> tuple:
    """("w1 w2", count, pmi): highest PMI first, then NLTK's tie order (w1, w2)."""
    first, _, second = row[0].partition(" ")
    return (-row[2], first, second)


def title_rank(row: Sequence) -> tuple:
    """(title, views): most viewed first."""
    title, views = row[0], row[1]
    return (-views, title)


RANK: dict[str, Callable[[Sequence], tuple]] = {
    "unigram": unigram_rank, "bigram": bigram_rank, "title": title_rank}


def budget_of(cfg, source: str) -> int:
    """The configured budget of a source (the `queries` config section); < 0: none."""
    return {"unigram": cfg.max_unigrams, "bigram": cfg.max_bigrams, "title": cfg.max_titles}[source]


def floors_of(cfg, source: str) -> dict[str, Any]:
    if source == "unigram":
        return {"min_unigram_count": cfg.min_unigram_count}
    if source == "bigram":
        return {"min_bigram_count": cfg.min_bigram_count, "min_pmi": cfg.min_pmi}
    if source == "title":
        return {"min_title_views": cfg.min_title_views}
    return {}


def last_admitted(source: str, rows: Iterable[Sequence]) -> dict[str, Any] | None:
    """The admitted entry ranked last, with the figure it was ranked by (None if none)."""
    rows = list(rows)
    if not rows:
        return None
    last = max(rows, key=RANK[source])
    if source == "unigram":
        return {"query": last[0], "count": last[1]}
    if source == "bigram":
        return {"query": last[0], "count": last[1], "pmi": last[2]}
    return {"query": last[0], "views": last[1]}


def report(cfg, eligible: dict[str, int], admitted: dict[str, list], wordnet_names: int,
           in_list: Counter) -> dict[str, dict[str, Any]]:
    """Each source's count before and after its budget, and what it has in the final list.

    eligible: entries passing each budgeted source's floor; admitted: the admitted rows of each
    budgeted source; in_list: final entries per source (an entry may name several sources).
    """
    out: dict[str, dict[str, Any]] = {"wordnet": {
        "floors": {}, "before_budget": wordnet_names, "budget": None,
        "after_budget": wordnet_names, "last_admitted": None, "in_list": in_list.get("wordnet", 0)}}
    for source in BUDGETED:
        budget = budget_of(cfg, source)
        rows = admitted.get(source, [])
        out[source] = {
            "floors": floors_of(cfg, source),
            "before_budget": int(eligible.get(source, 0)),
            "budget": budget if budget >= 0 else None,
            "after_budget": len(rows),
            "last_admitted": last_admitted(source, rows),
            "in_list": in_list.get(source, 0),
        }
    return out


def import_report(n_entries: int, in_list: Counter) -> dict[str, dict[str, Any]]:
    """The same shape for an imported list: one source, no floor and no budget."""
    return {"import": {"floors": {}, "before_budget": n_entries, "budget": None,
                       "after_budget": n_entries, "last_admitted": None,
                       "in_list": in_list.get("import", 0)}}
