"""The `<img>` elements of one HTML page: its bytes decoded by the declared charset, parsed by a real parser.

Which charset: a byte-order mark, else the HTTP Content-Type charset, else a `<meta charset>` or
`<meta http-equiv="Content-Type">` in the first META_SCAN_BYTES, else UTF-8 when the bytes are
valid UTF-8 and windows-1252 (the web's legacy default) when they are not. Labels map to the
encodings browsers use (WHATWG: `iso-8859-1` and `ascii` mean windows-1252); an unknown label is
passed over. Bytes the encoding cannot decode become U+FFFD, never an error.

Which attributes count: `src` is the image; `alt` is its caption. When `src` is missing, empty or
a `data:` placeholder, a lazy-loading `data-src` stands in, since the alt text describes the
image the page shows once loaded, not the placeholder. `srcset` does not count: its entries are
the same picture at other sizes, and each would be one more pair with the same caption for the
download and dedupe stages to fetch and then drop.

Which base: the first `<base href>`, resolved against the page URL, when it is http(s); a base
of any other scheme (`javascript:`, `ftp:`, `data:`) is passed over and the page URL is the base.
"""

from __future__ import annotations

import codecs
from typing import Iterator

from resiliparse.parse.encoding import map_encoding_to_html5
from resiliparse.parse.html import HTMLTree

from witcurate.pipeline.url_base import Resolver, resolve_base

META_SCAN_BYTES = 4096      # browsers scan 1024 bytes by spec; real pages put <meta> later, behind scripts
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def _known(label: str | None) -> str | None:
    """The Python codec for a charset label, by the WHATWG mapping; None for an unknown label."""
    if not label:
        return None
    name = map_encoding_to_html5(label.strip().strip("'\""), fallback_utf8=False)
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def meta_charset(head: bytes) -> str | None:
    """The charset a `<meta>` in the start of the page declares (the HTML parser finds the tags)."""
    tree = HTMLTree.parse(head.decode("latin-1"))        # ASCII-compatible: tags and labels read as-is
    doc = tree.document
    if doc is None:
        return None
    for meta in doc.query_selector_all("meta[charset], meta[http-equiv][content]").values():
        label = meta.getattr("charset")
        if label is None:
            if meta.getattr("http-equiv", "").strip().lower() != "content-type":
                continue
            _, _, label = meta.getattr("content", "").lower().partition("charset=")
            label = label.split(";")[0]
        found = _known(label)
        if found:
            # a page cannot declare itself UTF-16 from inside ASCII bytes: the spec reads that as UTF-8
            return "utf-8" if found.startswith("utf-16") else found
    return None


def decode_html(body: bytes, http_charset: str | None) -> tuple[str, str]:
    """(text, the encoding used) for a page's bytes, by the order in the module docstring."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(name, errors="replace"), name
    encoding = _known(http_charset) or meta_charset(body[:META_SCAN_BYTES])
    if encoding:
        return body.decode(encoding, errors="replace"), encoding
    try:
        # final=False: a page cut inside its last character (a truncated record) is still UTF-8
        return codecs.getincrementaldecoder("utf-8")().decode(body, final=False), "utf-8"
    except UnicodeDecodeError:
        return body.decode("cp1252", errors="replace"), "cp1252"


def page_base(tree: HTMLTree, page_url: str) -> str:
    """The URL relative image URLs resolve against: the first `<base href>` if http(s), else the page URL."""
    base = tree.document.query_selector("base[href]") if tree.document is not None else None
    return page_url if base is None else resolve_base(base.getattr("href"), page_url)


def _image_url(img) -> str | None:
    src = (img.getattr("src") or "").strip()
    if not src or src[:5].lower() == "data:":
        lazy = (img.getattr("data-src") or "").strip()
        if lazy:
            return lazy
    return src or None


def page_images(html: str, page_url: str) -> Iterator[tuple[str | None, str]]:
    """(absolute image url or None, alt text or "") of every `<img>` in the page, in document order."""
    tree = HTMLTree.parse(html)
    if tree.document is None:
        return
    # .values(): iterating a resiliparse NodeList itself walks the tree again for every item
    found = [(_image_url(img), img.getattr("alt") or "")
             for img in tree.document.get_elements_by_tag_name("img").values()]
    resolved = iter(Resolver(page_base(tree, page_url)).all([u for u, _ in found if u is not None]))
    for url, alt in found:
        yield (next(resolved) if url is not None else None), alt
