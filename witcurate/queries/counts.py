"""Unigram and bigram counts of article text, under the shared tokenisation rule.

The rule is `witcurate.queries.tokenize` (the same one caption matching applies), case kept:
- a *word* is a token holding at least one letter or digit (`words_and_bigrams`), so
  punctuation tokens ("," "(" "'") are never counted;
- a *bigram* is two consecutive words of one line not separated by a punctuation token; lines
  are the line breaks `wikitext.to_text` leaves, so no bigram spans a paragraph, heading, list
  item or a removed template/ref/table;
- N, the corpus size in PMI, is the total number of word tokens counted (punctuation excluded).

A bigram's key is its two words joined by one space: words never hold spaces, so "w1 w2" is
unambiguous, and it is exactly the query string the bigram becomes.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from witcurate.queries import tokenize


class PageCounts:
    """Counts of one text (or many, added together)."""

    __slots__ = ("unigrams", "bigrams", "words")

    def __init__(self) -> None:
        self.unigrams: Counter[str] = Counter()
        self.bigrams: Counter[str] = Counter()
        self.words = 0

    def add_text(self, text: str) -> "PageCounts":
        for line in text.split("\n"):
            if not line.strip():
                continue
            words, bigrams = tokenize.words_and_bigrams(line)
            self.unigrams.update(words)
            self.bigrams.update(bigram_key(a, b) for a, b in bigrams)
            self.words += len(words)
        return self


def bigram_key(first: str, second: str) -> str:
    return f"{first} {second}"


def count_text(text: str) -> PageCounts:
    return PageCounts().add_text(text)


def count_texts(texts: Iterable[str]) -> PageCounts:
    """In-process counts of many texts (the reference the Beam counting must agree with)."""
    total = PageCounts()
    for text in texts:
        total.add_text(text)
    return total


def lookup_key(entry: str) -> tuple[str, str] | None:
    """Where an entry's own count lives: ("u", word) for one word, ("b", "w1 w2") for two.

    Other sources' entries (titles, WordNet names) get their corpus counts through this, so
    "dog" (WordNet) carries its unigram count and "New York" (title) its bigram count. Entries
    of three or more tokens, or holding punctuation tokens, have no single count.
    """
    toks = tokenize.tokens(entry)
    if len(toks) == 1 and tokenize.is_word(toks[0]):
        return ("u", toks[0])
    if len(toks) == 2 and tokenize.is_word(toks[0]) and tokenize.is_word(toks[1]):
        return ("b", bigram_key(toks[0], toks[1]))
    return None
