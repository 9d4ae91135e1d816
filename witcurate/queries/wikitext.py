"""Wikitext to plain text with a real wikitext parser (mwparserfromhell).

What a reader of the rendered article sees as running text is kept; what is not prose is removed:
- kept: plain text, the visible text of wikilinks (`[[Paris|the capital]]` -> "the capital",
  `[[Paris]]` -> "Paris"), the titles of external links, headings' text, the contents of
  formatting and HTML tags (`'''bold'''`, `<span>`, `<small>`, ...), HTML entities as characters;
- removed: templates (`{{...}}`, infoboxes included), `<ref>` and other non-prose tags (tables,
  math, galleries, code, ...), `[[File:]]` / `[[Image:]]` / `[[Media:]]` / `[[Category:]]` links
  with their captions, interlanguage links (`[[de:...]]`), bare URLs, comments, template
  arguments and behaviour switches (`__NOTOC__`).

Every removed element leaves a line break, as do headings, paragraphs and list items, so that
counting (which takes bigrams within a line only) never pairs two words that were not next to
each other in the rendered text ("born {{birth date|...}} in Paris" gives "born" and "in Paris").
"""

from __future__ import annotations

import re

from mwparserfromhell.parser import Builder, use_c
from mwparserfromhell.parser import tokens as T

if use_c:
    from mwparserfromhell.parser import CTokenizer as _Tokenizer
else:                                       # an install without the C extension
    from mwparserfromhell.parser.tokenizer import Tokenizer as _Tokenizer

# Tags whose contents are not running text.
DROP_TAGS = frozenset("""
ref references table math chem ce gallery imagemap timeline score syntaxhighlight source pre
graph mapframe maplink templatedata templatestyles categorytree inputbox hiero charinsert
indicator section noinclude includeonly onlyinclude code var kbd samp
""".split())
# Tags that end a line where they stand.
BLOCK_TAGS = frozenset("p div br li dt dd ul ol dl blockquote center hr h1 h2 h3 h4 h5 h6 tr td th".split())
DROP_LINK_PREFIXES = frozenset({"file", "image", "media", "category"})
_LANG_PREFIX = re.compile(r"^[a-z]{2,3}(?:-[a-z0-9]+)*$")
_BEHAVIOUR_SWITCH = re.compile(r"__[A-Z]+__")
_QUOTES = re.compile(r"'{2,}")          # '' and ''' left over from bold/italic markup
_BLANK_LINES = re.compile(r"[ \t]*\n[\s]*")
_SPACES = re.compile(r"[ \t\u00a0]+")
BREAK = "\n"


def to_text(wikitext: str) -> str:
    """The plain text of an article's wikitext: lines of prose, markup removed."""
    tokens = _Tokenizer().tokenize(wikitext, 0, True)   # skip_style_tags: bold/italic marks stay text
    parts: list[str] = []
    _Walk(tokens, parts).span(0, len(tokens))
    return joined_text(parts)


def joined_text(parts: list[str]) -> str:
    """The walk's pieces as lines of prose: quote marks, behaviour switches and runs of blanks
    and empty lines removed."""
    text = "".join(parts)
    text = _QUOTES.sub("", text)
    text = _BEHAVIOUR_SWITCH.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n", text)
    return text.strip()


# mwparserfromhell parses in two steps: its C tokenizer turns the text into a flat list of tokens
# (TemplateOpen, Text, TemplateClose, ...), and a Python builder turns those into a tree of nodes.
# On real articles the builder is four fifths of the time (most of it building the parameters of
# templates that are then thrown away), so the text is read from the token list itself: a removed
# element is skipped from its opening token to the token that closes it, never built. The rules
# are the ones the node tree gave (tests/wikitext_reference.py walks the tree; the tests hold the
# two equal on real articles); a piece whose text is the node's own rendering (a link title or a
# tag name holding markup, an HTML entity) is built alone.
_OPENS = frozenset({T.TemplateOpen, T.ArgumentOpen, T.WikilinkOpen, T.ExternalLinkOpen,
                    T.HTMLEntityStart, T.HeadingStart, T.CommentStart, T.TagOpenOpen})
_CLOSES = frozenset({T.TemplateClose, T.ArgumentClose, T.WikilinkClose, T.ExternalLinkClose,
                     T.HTMLEntityEnd, T.HeadingEnd, T.CommentEnd, T.TagCloseSelfclose, T.TagCloseClose})


def _matching_closes(tokens: list) -> list[int]:
    """For each opening token, the index of the token that closes it (the tokenizer nests them;
    a list that does not nest is a ValueError, which the counting step counts as a wikitext
    error, as it does the builder's ParserError)."""
    ends = [0] * len(tokens)
    stack: list[int] = []
    for i, token in enumerate(tokens):
        kind = type(token)
        if kind is T.Text:
            continue
        if kind in _OPENS:
            stack.append(i)
        elif kind in _CLOSES:
            if not stack:
                raise ValueError(f"unbalanced wikitext tokens: {kind.__name__} at {i} closes nothing")
            ends[stack.pop()] = i
    if stack:
        raise ValueError(f"unbalanced wikitext tokens: {type(tokens[stack[-1]]).__name__} at "
                         f"{stack[-1]} is never closed")
    return ends


def _build(tokens: list):
    return Builder().build(list(tokens))


class _Walk:
    """Appends the text of token spans to `parts` (one walk per article)."""

    def __init__(self, tokens: list, parts: list[str]):
        self.tokens, self.parts = tokens, parts
        self.ends = _matching_closes(tokens)

    def span(self, lo: int, hi: int) -> None:
        tokens, parts = self.tokens, self.parts
        i = lo
        while i < hi:
            token = tokens[i]
            kind = type(token)
            if kind is T.Text:
                parts.append(token.text)
                i += 1
                continue
            end = self.ends[i]
            if kind is T.TemplateOpen or kind is T.ArgumentOpen:
                parts.append(BREAK)
            elif kind is T.TagOpenOpen:
                self.tag(i, end)
            elif kind is T.WikilinkOpen:
                self.link(i, end)
            elif kind is T.HeadingStart:
                parts.append(BREAK)
                self.span(i + 1, end)
                parts.append(BREAK)
            elif kind is T.ExternalLinkOpen:
                separator = self.find(i + 1, end, T.ExternalLinkSeparator)
                if separator is None:
                    parts.append(BREAK)
                else:
                    self.span(separator + 1, end)
            elif kind is T.HTMLEntityStart:
                self.entity(i, end)
            elif kind is not T.CommentStart:    # anything newer mwparserfromhell adds: its text
                parts.append(str(_build(tokens[i:end + 1])))
            i = end + 1

    def find(self, lo: int, hi: int, *kinds) -> int | None:
        """The first token of `kinds` in [lo, hi) outside any nested element."""
        i = lo
        while i < hi:
            kind = type(self.tokens[i])
            if kind in kinds:
                return i
            i = self.ends[i] + 1 if kind in _OPENS else i + 1
        return None

    def source(self, lo: int, hi: int) -> str:
        """The wikitext of a span, as its nodes render it."""
        pieces = self.tokens[lo:hi]
        if all(type(p) is T.Text for p in pieces):
            return "".join(p.text for p in pieces)
        return str(_build(pieces))

    def entity(self, start: int, end: int) -> None:
        try:
            self.parts.append(_build(self.tokens[start:end + 1]).nodes[0].normalize())
        except (ValueError, OverflowError):
            pass

    def link(self, start: int, end: int) -> None:
        separator = self.find(start + 1, end, T.WikilinkSeparator)
        title = self.source(start + 1, end if separator is None else separator).strip()
        forced = title.startswith(":")
        bare = title.lstrip(":").strip()
        prefix = bare.split(":", 1)[0].strip().lower() if ":" in bare else ""
        if prefix in DROP_LINK_PREFIXES:
            self.parts.append(BREAK)
        elif prefix and not forced and separator is None and _LANG_PREFIX.match(prefix):
            pass                               # interlanguage link: not shown in the text
        elif separator is not None:
            self.span(separator + 1, end)
        else:
            self.parts.append(bare)

    def tag(self, start: int, end: int) -> None:
        name_end = self.find(start + 1, end + 1, T.TagAttrStart, T.TagCloseOpen, T.TagCloseSelfclose)
        if name_end is None:                   # the builder refuses such a tag too
            raise ValueError(f"unbalanced wikitext tokens: the tag at {start} has no end to its name")
        name = self.source(start + 1, name_end).strip().lower()
        if name in DROP_TAGS:
            self.parts.append(BREAK)
            return
        block = name in BLOCK_TAGS
        if block:
            self.parts.append(BREAK)
        body = self.find(name_end, end, T.TagCloseOpen)
        body_end = None if body is None else self.find(body + 1, end, T.TagOpenClose)
        if body_end is not None and not isinstance(self.tokens[end], T.TagCloseSelfclose):
            if name == "nowiki":
                self.parts.append(self.source(body + 1, body_end))
            else:
                self.span(body + 1, body_end)
        if block:
            self.parts.append(BREAK)


def lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]
