"""The one tokenisation rule shared by query counting (unigrams, bigrams) and caption matching.

MetaCLIP's reference matcher pads `, . ; : ? ! " ' `` with spaces, turns tabs and newlines into
spaces, and looks for ` entry ` inside ` caption `, case-sensitively. That misses entries that
hold punctuation ("U.S." never matches), glues words to brackets and quotes ("(dog)"), and lets
runs of spaces break multi-word entries. The rule here is applied identically to entries and to
captions, so it finds every match MetaCLIP's rule finds and those it misses:

1. every run of whitespace (tabs, newlines, NBSP, ...) becomes one space;
2. each punctuation character in PUNCT is surrounded by spaces;
3. spaces are collapsed again and the result is wrapped in one leading and trailing space.

Case is kept. A *word* for counting is a token holding at least one letter or digit; bigrams are
two consecutive words not separated by a punctuation token, so a bigram counted in Wikipedia
text can match a caption under the same rule.
"""

from __future__ import annotations

import re

PUNCT = ",.;:?!\"'`()[]{}<>|/\\\u201c\u201d\u2018\u2019\u00ab\u00bb"
_TOKEN_RE = re.compile("[" + re.escape(PUNCT) + r"]|[^\s" + re.escape(PUNCT) + "]+")
_WORD_RE = re.compile(r"\w", re.UNICODE)


def normalize(text: str) -> str:
    """` tok tok tok `: the padded, single-spaced form in which ` entry ` is searched.

    One regex pass finds the tokens (each PUNCT character alone, every other run of non-space
    characters; Python's `\\s` is exactly the characters str.isspace() holds): this runs once
    per caption, in the match stage's hot loop, and is twice as fast on punctuated captions as
    padding the punctuation with str.translate and splitting.
    """
    joined = " ".join(_TOKEN_RE.findall(text))
    return f" {joined} " if joined else " "


def tokens(text: str) -> list[str]:
    """The tokens of `normalize(text)`, found without joining them and splitting again."""
    return _TOKEN_RE.findall(text)


def is_word(token: str) -> bool:
    return bool(_WORD_RE.search(token))


def words_and_bigrams(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Words of `text`, and the bigrams of consecutive words not split by punctuation."""
    words: list[str] = []
    bigrams: list[tuple[str, str]] = []
    prev: str | None = None
    for tok in tokens(text):
        if is_word(tok):
            words.append(tok)
            if prev is not None:
                bigrams.append((prev, tok))
            prev = tok
        else:
            prev = None
    return words, bigrams


def entry_key(entry: str) -> str:
    """The padded search key of a query entry (empty if the entry has no word in it).

    Whitespace and PUNCT hold no word character, so the normalised entry has a word token
    exactly when it has a word character anywhere: one regex search instead of one per token
    (this runs once per entry, 500,000 times, each time the match stage builds its automaton).
    """
    norm = normalize(entry)
    return norm if _WORD_RE.search(norm) else ""
