"""URL normalisation and syntactic validation for candidates (network safety is in urls.py)."""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from witcurate.filters.base import Decision, Drop


def normalize_url(url: str) -> str:
    """Lower-case scheme and host, drop the fragment and default ports, percent-encode spaces
    and non-ASCII path characters. Idempotent. Raises ValueError for an unparseable URL."""
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if host and any(ord(c) > 127 for c in host):
        host = host.encode("idna").decode("ascii")
    port = parts.port  # raises ValueError on a bad port
    netloc = host
    if parts.username or parts.password:
        userinfo = parts.username or ""
        if parts.password:
            userinfo += ":" + parts.password
        netloc = f"{userinfo}@{netloc}"
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        netloc = f"{netloc}:{port}"
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=-._~")
    query = quote(parts.query, safe="=&%:@!$'()*+,;/?-._~")
    return urlunsplit((scheme, netloc, path, query, ""))


def url_rules(url: str, max_length: int) -> Decision:
    if not url:
        return Drop("url_empty")
    if len(url) > max_length:
        return Drop("url_too_long")
    try:
        parts = urlsplit(url)
        parts.port
    except ValueError:
        return Drop("url_unparseable")
    if parts.scheme not in ("http", "https"):
        return Drop("url_scheme")
    if not parts.hostname:
        return Drop("url_no_host")
    if parts.username or parts.password:
        return Drop("url_credentials")
    return True
