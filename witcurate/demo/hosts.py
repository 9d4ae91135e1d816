"""The demo world's hosts: one image host answering on several loopback addresses (demo.host and
the next ones: 127.0.0.1 ... 127.0.0.8 by default; on Linux all of 127/8 is loopback), each a
host of its own to the pipeline, with its own robots.txt and manners:

    commons        half the ordinary URLs, as Wikimedia holds a large share of the web's images;
                   disallows /private/; answers 429 (Retry-After: 1) above 2 concurrent requests
    plain-a        disallows /private/ (and everything for another crawler)
    plain-b        the same rules, no /private/ URLs
    no-robots      robots.txt answers 404: everything may be fetched
    no-witcurate   robots.txt disallows witcurate's product token entirely
    robots-500     robots.txt answers 500: nothing may be fetched (RFC 9309)
    robots-slow    robots.txt answers after slow_seconds, past the download timeout
    throttled      every image request answered 429 or 503 with a Retry-After: a negative
                   number, an HTTP-date, a year, 1 s, garbage

URLs of the ordinary kinds are spread over the first four by share (the `slow` fault evenly over
the three but commons: a request the client gives up on holds one of its host's two connection
slots for the whole timeout); the host-level kinds live where their host is. Everything here is written into host.json, so the
image host needs nothing but the world.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass

from witcurate.errors import UserError

PRIVATE = "/private/"
ANY_AGENT_ROBOTS = f"User-agent: otherbot\nDisallow: /\n\nUser-agent: *\nDisallow: {PRIVATE}\nDisallow: /*.gif$\n"
COMMONS_ROBOTS = f"# the demo's big host: everything but {PRIVATE}\nUser-agent: *\nDisallow: {PRIVATE}\n"
NO_WITCURATE_ROBOTS = "User-agent: witcurate\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
# (status, Retry-After) the throttled host answers in turn; "date" is an HTTP-date 1 s ahead. The
# year comes third: after it the crawler gives the host up, so the demo never waits long on it.
THROTTLE_ANSWERS = ((429, "-5"), (503, "date"), (429, "31536000"), (429, "1"), (429, "soon"))


@dataclass(frozen=True)
class HostRole:
    name: str
    share: float = 0.0                 # share of the ordinary URLs it serves
    robots: str = ""                   # robots.txt served with 200 (robots_status 200)
    robots_status: int = 200           # 404 / 500: that status instead
    robots_slow: bool = False          # robots.txt answers after slow_seconds
    tolerate: int = 0                  # concurrent image requests served; more get 429 (0: any)
    throttled: bool = False            # every image request answered 429/503 (THROTTLE_ANSWERS)


ROLES = (
    HostRole("commons", share=0.5, robots=COMMONS_ROBOTS, tolerate=2),
    HostRole("plain-a", share=0.2, robots=ANY_AGENT_ROBOTS),
    HostRole("plain-b", share=0.15, robots=ANY_AGENT_ROBOTS),
    HostRole("no-robots", share=0.15, robots_status=404),
    HostRole("no-witcurate", robots=NO_WITCURATE_ROBOTS),
    HostRole("robots-500", robots_status=500),
    HostRole("robots-slow", robots=ANY_AGENT_ROBOTS, robots_slow=True),
    HostRole("throttled", robots_status=404, throttled=True),
)
ROLE_INDEX = {role.name: i for i, role in enumerate(ROLES)}
# Host-level kinds: the hosts they live on (robots_path: under /private/ there).
KIND_HOSTS = {"robots_path": ("commons", "plain-a"), "robots_agent": ("no-witcurate",),
              "robots_500": ("robots-500",), "robots_timeout": ("robots-slow",),
              "rate_limited": ("throttled",)}
NOT_ON_COMMONS = ("slow",)


def addresses(first: str) -> list[str]:
    """The hosts' addresses: `first` (demo.host) and the next len(ROLES) - 1."""
    try:
        base = ipaddress.IPv4Address(first)
        last = base + (len(ROLES) - 1)
    except (ValueError, ipaddress.AddressValueError):
        base = last = None
    if base is None or not (base.is_loopback and last.is_loopback):
        raise UserError(f"demo.host must be an IPv4 loopback address, got {first!r}",
                        f"the demo world serves {len(ROLES)} hosts from it and the next addresses "
                        "(127.0.0.1 ... 127.0.0.8 by default)")
    return [str(base + i) for i in range(len(ROLES))]


def allow_private(first: str, port: int) -> list[str]:
    """download.allow_private entries that allow exactly the demo's hosts."""
    return [f"{address}:{port}" for address in addresses(first)]


def _unit(name: str) -> float:
    return int.from_bytes(hashlib.sha256(f"host:{name}".encode()).digest()[:8], "big") / 2 ** 64


def place(name: str, kind: str) -> tuple[int, str]:
    """(role index, path prefix) of the URL of pool file `name`, which is of `kind`."""
    u = _unit(name)
    if kind in KIND_HOSTS:
        hosts = KIND_HOSTS[kind]
        prefix = f"{PRIVATE}i/" if kind == "robots_path" else "/i/"
        return ROLE_INDEX[hosts[int(u * len(hosts))]], prefix
    if kind in NOT_ON_COMMONS:                # evenly over the others: each costs a slot 2 s
        others = [r for r in ROLES if r.share and r.name != "commons"]
        return ROLE_INDEX[others[int(u * len(others))].name], "/i/"
    ordinary = [r for r in ROLES if r.share]
    edge = 0.0
    for role in ordinary:
        edge += role.share / sum(r.share for r in ordinary)
        if u < edge:
            return ROLE_INDEX[role.name], "/i/"
    return ROLE_INDEX[ordinary[-1].name], "/i/"


def host_table(first: str) -> list[dict]:
    """host.json's "hosts": each address with its role's behaviour."""
    return [{"address": address, **asdict(role)} for address, role in zip(addresses(first), ROLES)]
