"""Pointwise mutual information of bigrams, and the floors a bigram must pass to be an entry.

    PMI(x y) = log2( c(x y) * N / (c(x) * c(y)) )

c(x y) is the bigram's count, c(x) and c(y) its words' unigram counts, and N the total number of
word tokens counted (see `counts`). It is log2 of how many times more often x and y occur side
by side than they would if words were independent. This is NLTK's
`BigramAssocMeasures.pmi`, computed the way NLTK computes it (log2 of the two integer
products), so the values are the same bit for bit and so is the ranking.

Only bigrams counted at least `min_bigram_count` times get a PMI: below that PMI rewards rarity
(a pair seen once, of words seen once, scores the maximum log2 N), which is noise, not
association. The bigram entries are then the highest-PMI ones, up to the bigram budget
(`budgets`); `min_pmi` is an optional extra floor, none by default.

Why no PMI floor by default: MetaCLIP's published figure, PMI >= 30, comes with no minimum
bigram count. Under this log2 formula PMI can never exceed log2(N / c(x y)) (reached when x and
y only ever occur together), so with c(x y) >= 30 a bigram reaches 30 only in a corpus of more
than 30 * 2**30 (about 3.2e10) word tokens. English Wikipedia has about 4e9, so the ceiling is
about 27 and a floor of 30 admits nothing. `max_pmi` reports the ceiling for a given corpus.
"""

from __future__ import annotations

import math


def pmi(c_xy: int, c_x: int, c_y: int, n: int) -> float:
    """log2(c(xy) * N) - log2(c(x) * c(y)): NLTK's form, exact integer products."""
    if c_xy <= 0 or c_x <= 0 or c_y <= 0 or n <= 0:
        raise ValueError(f"PMI needs positive counts, got c(xy)={c_xy} c(x)={c_x} c(y)={c_y} N={n}")
    return math.log2(c_xy * n) - math.log2(c_x * c_y)


def max_pmi(n: int, min_bigram_count: int) -> float:
    """The largest PMI a bigram counted at least `min_bigram_count` times can have."""
    return math.log2(n / max(1, min_bigram_count)) if n > 0 else float("-inf")


def keep_bigram(count: int, value: float | None, min_bigram_count: int,
                min_pmi: float | None = None) -> bool:
    """Whether a bigram passes the floors: counted often enough to have a PMI, and PMI >= min_pmi
    when that optional floor is set."""
    if value is None or count < min_bigram_count:
        return False
    return min_pmi is None or value >= min_pmi
