"""Resolving a page's image URLs against its base, as `urllib.parse.urljoin` does, at ingest speed.

A Common Crawl WAT or WARC holds hundreds of image links per page. urljoin parses the base again
for every link, and that alone costs several times the JSON parse of the link. `Resolver` splits
the base once and checks a page's links together; the common forms (absolute http(s),
`//host/...`, `/path`, `path`, `./path`) are then a string concatenation, and every other form
goes to urljoin. Both give the same result (tests/test_warc_sources.py compares them over
combinations of the awkward cases and the real fixtures' links).
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

WEB_SCHEMES = ("http", "https")


def absolute(base: str, url: str) -> str:
    """`url` resolved against `base`; kept as written where it does not parse (the URL rules reject it)."""
    try:
        return urljoin(base, url)
    except ValueError:            # e.g. a bracketed host that is not an IPv6 address
        return url


def resolve_base(href: str | None, page_url: str) -> str:
    """The base for relative URLs: `href` resolved against the page when that is http(s), else the page URL."""
    if not isinstance(href, str) or not href.strip():
        return page_url
    resolved = absolute(page_url, href.strip())
    try:
        scheme = urlsplit(resolved).scheme.lower()
    except ValueError:
        return page_url
    return resolved if scheme in WEB_SCHEMES else page_url


# Every printable ASCII byte but the brackets (a bracketed host is urljoin's to judge). The
# backslash passes here: it separates joined URLs, and Resolver.all counts it out of the URLs.
_PLAIN_BYTES = bytes(range(0x20, 0x7F)).replace(b"[", b"").replace(b"]", b"")
_DOT_SEGMENT = re.compile(r"\.[\\/?#;]")               # "." before a separator, another URL or a query
_EMPTY_PART = re.compile(r"[?#;]\\|\?#|;[?#]")          # a bare '?', '#' or ';' that urljoin drops
_DOT_SLASH_KEPT = re.compile(r"\\\./[/\\]")          # a URL "./" or ".//...": its "./" stays


def _all_plain(joined: str) -> bool:
    """True when urljoin would copy every URL through unchanged once placed: printable ASCII, no
    space at either end (urljoin strips those), no bracket, no dot segment, and no empty query,
    fragment or params (urljoin drops a bare trailing '?', '#' or ';').

    `joined` is non-empty URLs joined by backslashes (so none holds one), checked in a few C-level
    scans for the whole page instead of a dozen checks per URL; the costly two-character scans run
    only where the single characters they look for are there at all."""
    if not (joined.isascii() and joined[:1] != " " and joined[-1:] not in (" ", ".", "?", "#", ";")):
        return False
    if joined.encode("ascii").translate(None, _PLAIN_BYTES):
        return False
    if " " in joined and (" \\" in joined or "\\ " in joined):
        return False
    if ("?" in joined or "#" in joined or ";" in joined) and _EMPTY_PART.search(joined):
        return False
    return not _DOT_SEGMENT.search(joined)


def _host_at(url: str, i: int) -> bool:
    """True when a non-empty host starts at url[i]."""
    return url[i:i + 1] not in ("", "/", "?", "#")


def _has_scheme(url: str) -> bool:
    """True when a ':' comes before any '/', '?' or '#': the URL may name a scheme (urljoin decides)."""
    colon = url.find(":")
    if colon < 0:                          # the common case: one C-level scan
        return False
    return not any(0 <= url.find(c) < colon for c in "/?#")


def _without_dot_slash(joined: str) -> str:
    """`joined` with a leading "./" taken off every URL where that cannot change what follows:
    "./x" is "x" when x is not empty and does not start with '/' (a host)."""
    marked = "\\" + joined + "\\"
    if "\\./" not in marked or _DOT_SLASH_KEPT.search(marked):
        return joined
    return marked.replace("\\./", "\\")[1:-1]


class Resolver:
    """`resolver.all(urls)` == `[absolute(base, u) for u in urls]` for one base, at ingest speed."""

    def __init__(self, base: str):
        self.base = base
        try:
            parts = urlsplit(base)
        except ValueError:
            parts = None
        # the fast path only for a plain http(s) base: anything else is urljoin's to decide
        self.fast = bool(parts and parts.scheme in WEB_SCHEMES and parts.netloc and "\\" not in base and _all_plain(base)
                         and base.startswith(f"{parts.scheme}://{parts.netloc}"))
        if self.fast:
            self.scheme = parts.scheme
            self.origin = f"{parts.scheme}://{parts.netloc}"
            path = parts.path or "/"
            self.directory = self.origin + path[: path.rfind("/") + 1]
            self.merge = "//" not in path        # urljoin collapses empty segments when it merges paths

    def all(self, urls: list[str]) -> list[str]:
        if self.fast and urls and "" not in urls:
            joined = "\\".join(urls)
            if joined.count("\\") == len(urls) - 1:          # no URL holds the separator
                joined = _without_dot_slash(joined)
                if _all_plain(joined):
                    return self._concatenated(joined.split("\\"), urls)
        return [absolute(self.base, u) for u in urls]

    def _concatenated(self, plain: list[str], urls: list[str]) -> list[str]:
        """path and /path by concatenation (most links); the rest by _placed, or urljoin where a
        "./" was taken off."""
        origin, directory = self.origin, self.directory
        if self.merge:
            out = [directory + s if s[0] not in "/?#;" and ":" not in s and "//" not in s
                   else origin + s if s[0] == "/" and s[1:2] != "/" else None for s in plain]
        else:
            out = [origin + s if s[0] == "/" and s[1:2] != "/" else None for s in plain]
        if None in out:
            for i, placed in enumerate(out):
                if placed is None:
                    s, u = plain[i], urls[i]
                    out[i] = (self._placed(s) if len(s) == len(u) else None) or absolute(self.base, u)
        return out

    def _placed(self, url: str) -> str | None:
        """`url` (plain) placed against the base by concatenation, or None where urljoin must decide."""
        if url[0] == "/":
            if url[1:2] != "/":
                return self.origin + url
            return f"{self.scheme}:{url}" if _host_at(url, 2) else None
        if url.startswith(("http://", "https://")):
            return url if _host_at(url, url.index("//") + 2) else None
        if self.merge and url[0] not in "?#;" and "//" not in url and not _has_scheme(url):
            return self.directory + url
        return None
