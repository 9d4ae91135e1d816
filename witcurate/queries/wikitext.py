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

import mwparserfromhell
from mwparserfromhell.nodes import (Argument, Comment, ExternalLink, Heading, HTMLEntity, Tag,
                                    Template, Text, Wikilink)

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
    code = mwparserfromhell.parse(wikitext, skip_style_tags=True)
    parts: list[str] = []
    _walk(code, parts)
    text = "".join(parts)
    text = _QUOTES.sub("", text)
    text = _BEHAVIOUR_SWITCH.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _BLANK_LINES.sub("\n", text)
    return text.strip()


def _walk(code, parts: list[str]) -> None:
    for node in code.nodes:
        if isinstance(node, Text):
            parts.append(node.value)
        elif isinstance(node, Wikilink):
            _link(node, parts)
        elif isinstance(node, Template | Argument):
            parts.append(BREAK)
        elif isinstance(node, Comment):
            continue
        elif isinstance(node, HTMLEntity):
            try:
                parts.append(node.normalize())
            except (ValueError, OverflowError):
                continue
        elif isinstance(node, Heading):
            parts.append(BREAK)
            _walk(node.title, parts)
            parts.append(BREAK)
        elif isinstance(node, ExternalLink):
            if node.title is not None:
                _walk(node.title, parts)
            else:
                parts.append(BREAK)
        elif isinstance(node, Tag):
            _tag(node, parts)
        else:                              # anything newer mwparserfromhell adds: keep its text
            parts.append(str(node))


def _link(node: Wikilink, parts: list[str]) -> None:
    title = str(node.title).strip()
    forced = title.startswith(":")
    bare = title.lstrip(":").strip()
    prefix = bare.split(":", 1)[0].strip().lower() if ":" in bare else ""
    if prefix in DROP_LINK_PREFIXES:
        parts.append(BREAK)
        return
    if prefix and not forced and node.text is None and _LANG_PREFIX.match(prefix):
        return                             # interlanguage link: not shown in the text
    if node.text is not None:
        _walk(node.text, parts)
    else:
        parts.append(bare)


def _tag(node: Tag, parts: list[str]) -> None:
    name = str(node.tag).strip().lower()
    if name in DROP_TAGS:
        parts.append(BREAK)
        return
    block = name in BLOCK_TAGS
    if block:
        parts.append(BREAK)
    if node.contents is not None and not node.self_closing:
        if name == "nowiki":
            parts.append(str(node.contents))
        else:
            _walk(node.contents, parts)
    if block:
        parts.append(BREAK)


def lines(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()]
