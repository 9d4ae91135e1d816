"""Backing off a host that answers 429 (Too Many Requests) or 503 (Service Unavailable).

`Retry-After` (RFC 9110, section 10.2.3) is either a number of seconds or an HTTP-date. Servers
also send negative numbers, fractions, garbage and dates a year away; none of them may hang a
download. The rules, as pure functions of the answer:

  * a usable value (seconds >= 0, or a date; a date in the past means 0) is how long the host
    asked us to wait; anything else counts as absent;
  * 429 without a usable value: wait 1, 2, 4, ... seconds (attempt by attempt);
  * 503 without a usable value is a server error, not a throttle: no retry here;
  * a wait above `max_wait` (download.max_retry_after) is not waited out: the URL is given up
    at once (the host is held off for what it asked, so its other URLs give up too);
  * after `retries` backed-off retries the URL is given up.

A URL given up this way is a `rate_limited` reject.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

RATE_LIMITED = "rate_limited"
THROTTLE_STATUSES = (429, 503)
# Marks the error text of a URL given up on a throttling host (read back into RATE_LIMITED).
RATE_LIMITED_MARKER = "rate limited"

_SECONDS = re.compile(r"\d+(\.\d+)?")


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds the host asks us to wait (>= 0, possibly inf), or None when the header is missing
    or unusable (negative, garbage, an unparseable date). `now`: Unix time."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if _SECONDS.fullmatch(text):
        return float(text)                        # float("9" * 5000) is inf: "forever"
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:                       # HTTP-dates are GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    try:
        return max(0.0, when.timestamp() - now)
    except (OverflowError, OSError, ValueError):
        return None


@dataclass(frozen=True)
class Backoff:
    """What to do after one throttled answer."""
    retry: bool            # wait `hold` seconds, then ask again
    hold: float            # hold the host off this long (also when giving up)
    why: str               # for the reject's detail when the URL is given up


def default_wait(attempt: int) -> float:
    """The wait after a 429 that named none: 1, 2, 4, ... seconds."""
    return float(2 ** min(attempt, 16))


def plan_backoff(status: int, header: str | None, attempt: int, retries: int, max_wait: float,
                 now: float) -> Backoff | None:
    """The answer to a throttled response: None when it is no throttle to back off from (a 503
    without a usable Retry-After, or a status other than 429/503), else a Backoff. `attempt`:
    the retries this URL has had so far."""
    if status not in THROTTLE_STATUSES:
        return None
    asked = parse_retry_after(header, now)
    if asked is None and status == 503:
        return None
    wait = default_wait(attempt) if asked is None else asked
    said = f"Retry-After {header.strip()!r}" if asked is not None and header else "no usable Retry-After"
    if not math.isfinite(wait) or wait > max_wait:
        shown = "forever" if not math.isfinite(wait) else f"{wait:,.0f} s"
        return Backoff(False, wait, f"answered {status} asking to wait {shown} ({said}), more than "
                                    f"download.max_retry_after ({max_wait:g} s)")
    if attempt >= retries:
        return Backoff(False, wait, f"still answered {status} ({said}) after {retries} backed-off "
                                    f"retries")
    return Backoff(True, wait, f"answered {status} ({said})")
