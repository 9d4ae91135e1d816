"""robots.txt verdicts (RFC 9309) as pure functions of what fetching it gave.

How an origin's robots.txt answer turns into a verdict:

    2xx                      the rules are parsed (protego) and each URL checked against the
                             group for our product token, or `*` when no group names it
    4xx (but 429)            "unavailable": everything may be fetched
    429, 5xx, a timeout, a   "unreachable": nothing may be fetched, as RFC 9309 requires; the
    refused redirect, a      URLs become `robots_unavailable` rejects
    network or DNS error
    too many redirects       "unavailable" (RFC 9309 2.3.1.2 allows treating it as a 4xx)

The body is read up to ROBOTS_MAX_BYTES (500 KiB, the least RFC 9309 asks a crawler to parse and
what Google parses); past that it is cut at the last complete line. It should be UTF-8; a body
that is not is read with its byte-order mark's encoding or as Latin-1 (every byte is a
character there, so a Latin-1 `Disallow: /café/` still matches the URL `/caf%C3%A9/`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from protego import Protego

from witcurate.filters.base import Decision, Drop

ROBOTS_DISALLOWED = "robots_disallowed"
ROBOTS_UNAVAILABLE = "robots_unavailable"

ROBOTS_MAX_BYTES = 500 * 1024

# Verdicts, as the robots table records them.
RULES = "rules"                  # 2xx: parsed rules decide
ALLOW_ALL = "allow_all"          # 4xx: no rules
DISALLOW_ALL = "disallow_all"    # unreachable: nothing may be fetched
NOT_FETCHED = "not_fetched"      # not asked (the address policy refuses the host; robots off)

_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"))


def verdict_for(status: int | None, error: str | None) -> str:
    """The verdict for an HTTP status (the final one, after redirects) or a fetch error."""
    if error is not None or status is None:
        return DISALLOW_ALL
    if 200 <= status < 300:
        return RULES
    if 300 <= status < 400:
        return ALLOW_ALL
    if status == 429 or status >= 500:
        return DISALLOW_ALL
    if 400 <= status < 500:
        return ALLOW_ALL
    return DISALLOW_ALL


def cut_body(body: bytes, max_bytes: int = ROBOTS_MAX_BYTES) -> tuple[bytes, bool]:
    """(the part of `body` that is parsed, whether anything was cut): at most `max_bytes`,
    ending at the last complete line when it had to be cut."""
    if len(body) <= max_bytes:
        return body, False
    head = body[:max_bytes]
    newline = max(head.rfind(b"\n"), head.rfind(b"\r"))
    return (head[:newline + 1] if newline >= 0 else b""), True


def decode_body(body: bytes) -> tuple[str, str]:
    """(text, encoding used): a byte-order mark's encoding, else UTF-8, else Latin-1."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            return body[len(bom):].decode(encoding, errors="replace"), encoding
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return body.decode("latin-1"), "latin-1"


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass
class RobotsRules:
    """One origin's verdict, with its parsed rules when it has any."""
    origin: str
    verdict: str
    detail: str = ""
    parser: Protego | None = None

    @classmethod
    def from_text(cls, origin: str, verdict: str, text: str | None, detail: str = "") -> "RobotsRules":
        parser = Protego.parse(text or "") if verdict == RULES else None
        return cls(origin, verdict, detail, parser)

    def check(self, url: str, agent: str) -> Decision:
        """True when `agent` (our product token) may fetch `url`; else a Drop with the reason."""
        if self.verdict == DISALLOW_ALL:
            return Drop(ROBOTS_UNAVAILABLE, f"{self.origin}/robots.txt could not be read "
                                            f"({self.detail}): nothing may be fetched (RFC 9309)")
        if self.parser is None or self.parser.can_fetch(url, agent):
            return True
        return Drop(ROBOTS_DISALLOWED, f"{self.origin}/robots.txt disallows this URL for {agent}")
