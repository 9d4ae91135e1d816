"""Pointwise mutual information of bigrams, and the thresholds that pick query entries.

    PMI(x y) = log2( c(x y) * N / (c(x) * c(y)) )

c(x y) is the bigram's count, c(x) and c(y) its words' unigram counts, and N the total number of
word tokens counted (see `counts`). It is log2 of how many times more often x and y occur side
by side than they would if words were independent. Only bigrams counted at least
`min_bigram_count` times get a PMI: below that PMI rewards rarity (a pair seen once, of words
seen once, scores the maximum log2 N), which is noise, not association.

The thresholds (config `queries` section, defaults from the WIT/MetaCLIP recipe):
- min_unigram_count = 100: a word becomes an entry if it occurs >= 100 times;
- min_bigram_count = 30: bigrams seen fewer times get no PMI and never become entries;
- min_pmi = 30: a bigram becomes an entry if its PMI >= 30;
- min_title_views = 70: an article title becomes an entry with >= 70 summed page views.

A caution on min_pmi = 30, MetaCLIP's published figure: under this log2 formula PMI can never
exceed log2(N / c(x y)) (reached when x and y only ever occur together), so with
c(x y) >= 30 a bigram reaches 30 only in a corpus of more than 30 * 2**30 (about 3.2e10) word
tokens. English Wikipedia has about 4e9, so at the default values no bigram qualifies; a
corpus-appropriate threshold on this scale is in the single digits to low teens (the demo
config uses 3). `max_pmi` reports the ceiling for a given corpus.
"""

from __future__ import annotations

import math


def pmi(c_xy: int, c_x: int, c_y: int, n: int) -> float:
    """log2(c(xy) * N / (c(x) * c(y)))."""
    if c_xy <= 0 or c_x <= 0 or c_y <= 0 or n <= 0:
        raise ValueError(f"PMI needs positive counts, got c(xy)={c_xy} c(x)={c_x} c(y)={c_y} N={n}")
    return math.log2(c_xy) + math.log2(n) - math.log2(c_x) - math.log2(c_y)


def max_pmi(n: int, min_bigram_count: int) -> float:
    """The largest PMI a bigram counted at least `min_bigram_count` times can have."""
    return math.log2(n / max(1, min_bigram_count)) if n > 0 else float("-inf")


def keep_unigram(count: int, min_unigram_count: int) -> bool:
    return count >= min_unigram_count


def has_pmi(count: int, min_bigram_count: int) -> bool:
    return count >= min_bigram_count


def keep_bigram(count: int, value: float | None, min_bigram_count: int, min_pmi: float) -> bool:
    return value is not None and count >= min_bigram_count and value >= min_pmi
