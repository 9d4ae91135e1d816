"""Record filters for candidate rows (what ingest keeps): each wraps the rules of text.py and
url_format.py and says, in the drop's detail, what the offending text was."""

from __future__ import annotations

from dataclasses import dataclass

from witcurate.filters.base import Decision, Drop, Record
from witcurate.filters.text import caption_rules, is_english
from witcurate.filters.url_format import normalize_url, url_rules

DETAIL_CHARS = 200


def clipped(text: str) -> str:
    """A drop's detail: the start of the text, and its full length where the record clips it."""
    if len(text) <= DETAIL_CHARS:
        return text
    return f"{len(text):,} characters: {text[:DETAIL_CHARS - 40]}..."


def read_cleanly(row: Record) -> Decision:
    """A source row the reader could not parse carries `error` ("reason: what went wrong")."""
    if not row.get("error"):
        return True
    reason, _, detail = row["error"].partition(": ")
    return Drop(reason, detail)


@dataclass(frozen=True)
class ValidUrl:
    """The URL passes url_rules (checked as written, whitespace trimmed) and normalises."""
    max_length: int

    def __call__(self, row: Record) -> Decision:
        url = row["url"]
        decision = url_rules(url.strip(), self.max_length)
        if decision is not True:
            return decision.explained(clipped(url))
        try:
            normalize_url(url)
        except (ValueError, UnicodeError) as e:
            return Drop("url_unparseable", str(e)[:DETAIL_CHARS])
        return True


@dataclass(frozen=True)
class ValidCaption:
    """The (already normalised) caption passes caption_rules and, if asked, reads as English."""
    min_words: int
    min_chars: int
    max_chars: int
    english_only: bool = False

    def __call__(self, row: Record) -> Decision:
        caption = row["caption"]
        decision = caption_rules(caption, self.min_words, self.min_chars, self.max_chars)
        if decision is True and self.english_only:
            decision = is_english(caption)
        return True if decision is True else decision.explained(clipped(caption))
