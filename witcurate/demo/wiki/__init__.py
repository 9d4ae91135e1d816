"""A small English-Wikipedia stand-in: generated articles in a real multistream XML dump.

The dump follows MediaWiki's export schema 0.10 and Wikimedia's multistream layout: one bz2
stream holding the `<mediawiki>` header and `<siteinfo>`, then one stream per 100 pages, then a
stream holding the closing `</mediawiki>`; the index file (bz2) lists `offset:page_id:title` for
every page, where offset is the byte offset of the stream holding it.

Articles use real wikitext markup (templates, refs, tables, file links, piped links, headings,
bold) and talk about the demo's vocabulary (colours, shapes, scenes, counts) among filler prose
about invented places and people. Frequencies are tuned so that, at the demo's scaled-down
thresholds (unigram count >= 20, bigram count >= 5 and PMI >= 3), every word a demo caption uses
is a unigram query and every lowercase colour+shape bigram ("red circle", "red circles") is a
bigram query.

Traps a reader must handle: redirects (`#REDIRECT [[...]]` with a `<redirect title=...>`
element), pages outside the main namespace (Talk:, User:, Category:, Template:, File:,
Wikipedia:), words that occur only in markup a text extractor should drop. Those words are
named below so tests can check that they never become queries.
"""

from __future__ import annotations

from witcurate.demo.wiki.dump import (DUMP_NAME, INDEX_NAME, NAMESPACES, PAGES_PER_STREAM, namespace_of,
                                      write_dump)
from witcurate.demo.wiki.pages import Page, build_pages, demo_titles
from witcurate.demo.wiki.words import REDIRECT_WORD, REF_ONLY_WORD, TALK_ONLY_WORD, TEMPLATE_ONLY_WORD

__all__ = ["DUMP_NAME", "INDEX_NAME", "NAMESPACES", "PAGES_PER_STREAM", "Page", "REDIRECT_WORD",
           "REF_ONLY_WORD", "TALK_ONLY_WORD", "TEMPLATE_ONLY_WORD", "build_pages", "demo_titles",
           "namespace_of", "write_dump"]
