"""URL safety: never fetch from loopback, private, link-local, reserved or metadata addresses.

A crawler that follows arbitrary URLs from the web is a server-side request forgery waiting to
happen: `http://169.254.169.254/latest/meta-data/` hands out cloud credentials, `http://10.0.0.5/`
reaches the cluster's own services. Every host is resolved and every address it resolves to is
checked, before the first request and again on each redirect and each connection (so a redirect
or a DNS answer that changes between the check and the connection cannot slip through).

Addresses the config explicitly allowlists (`download.allow_private`) pass: entries are
`host:port` (that host or address on that port), `host` (any port) or a CIDR network
(`127.0.0.0/8`, `fd00::/8`); hosts match the URL's host name or any address it resolves to.

`check_url` is the pure decision (resolution is injected so tests never touch DNS);
`build_opener`/`install` put the same policy into urllib, which img2dataset fetches with.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union
from urllib.parse import urljoin, urlsplit

from witcurate.filters.base import Decision, Drop

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Resolver = Callable[[str, int], list[str]]

PRIVATE_ADDRESS = "private_address"
UNSUPPORTED_SCHEME = "unsupported_scheme"
INVALID_URL = "invalid_url"

# The marker every refusal raised inside urllib carries, so the error text img2dataset records
# maps back to a reason code (see witcurate.filters.images.classify_error).
REFUSED_MARKER = "refused address"
REFUSED_SCHEME_MARKER = "refused scheme"

ALLOWED_SCHEMES = ("http", "https")

# Cloud instance metadata endpoints (AWS/GCP/Azure/OpenStack share 169.254.169.254; AWS also
# serves it on IPv6 at fd00:ec2::254; Alibaba uses 100.100.100.200).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200"))


def address_category(ip: IPAddress) -> str | None:
    """Why an address must not be fetched from ("loopback", "private", ...), or None if it is a
    public address. IPv4-mapped IPv6 addresses (::ffff:10.0.0.1) are judged as their IPv4."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:            # shared address space (100.64/10), documentation ranges, ...
        return "non-public"
    return None


def parse_ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


@dataclass(frozen=True)
class AllowEntry:
    host: str = ""                          # a host name or an address literal ("" for networks)
    port: int | None = None                 # None: any port
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    # The host as an address, parsed once: every URL, and every request a download worker makes,
    # is checked against every entry (16 demo hosts x 4,000 URLs was 0.7 s of parsing).
    ip: IPAddress | None = field(init=False, compare=False, repr=False, default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ip", parse_ip(self.host) if self.host else None)

    def matches(self, hostname: str, port: int, ip: IPAddress) -> bool:
        if self.network is not None:
            return ip.version == self.network.version and ip in self.network
        if self.port is not None and self.port != port:
            return False
        if self.ip is not None:
            return self.ip == ip
        return self.host == hostname.lower().rstrip(".")


def parse_allow_entry(text: str) -> AllowEntry:
    """`host`, `host:port`, `[v6]:port`, an address, or a CIDR network. Raises ValueError."""
    text = text.strip()
    if not text:
        raise ValueError("empty allowlist entry")
    if "/" in text:
        return AllowEntry(network=ipaddress.ip_network(text, strict=False))
    if text.startswith("["):                       # [::1]:8080 or [::1]
        host, _, rest = text[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else None
        return AllowEntry(host=str(ipaddress.ip_address(host)), port=port)
    if text.count(":") > 1:                         # bare IPv6 address
        return AllowEntry(host=str(ipaddress.ip_address(text)))
    host, sep, port_text = text.partition(":")
    port = int(port_text) if sep else None
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return AllowEntry(host=host.lower().rstrip("."), port=port)


@dataclass(frozen=True)
class AddressPolicy:
    """Which destinations may be fetched: every public address, plus the allowlisted ones."""
    allow: tuple[AllowEntry, ...] = field(default_factory=tuple)

    @classmethod
    def from_config(cls, entries: Iterable[str]) -> "AddressPolicy":
        return cls(tuple(parse_allow_entry(e) for e in entries))

    def refusal(self, hostname: str, port: int, ip: IPAddress) -> str | None:
        """None if connecting to `ip` for `hostname:port` is allowed, else the category."""
        category = address_category(ip)
        if category is None:
            return None
        if any(e.matches(hostname, port, ip) for e in self.allow):
            return None
        return category

    def check_addresses(self, hostname: str, port: int, addresses: Iterable[str]) -> Decision:
        """Refuse if ANY resolved address is refused: a host must not be usable as a pointer
        into the private network just because it also has a public address."""
        for text in addresses:
            ip = parse_ip(text)
            if ip is None:
                return Drop(PRIVATE_ADDRESS, f"{REFUSED_MARKER} {text!r}: not an IP address")
            category = self.refusal(hostname, port, ip)
            if category is not None:
                return Drop(PRIVATE_ADDRESS,
                            f"{REFUSED_MARKER} {ip} ({category}) for host {hostname}:{port}")
        return True


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (getaddrinfo, TCP). Raises OSError when it does not."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def split_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL. Raises ValueError when it has no usable host or port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname
    if not host:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or default_port(scheme)
    return scheme, host, port


def check_url(url: str, policy: AddressPolicy, resolver: Resolver = resolve) -> Decision:
    """True when `url` may be fetched; a Drop (reason and what exactly was refused) otherwise.

    A host that does not resolve is not refused here: the fetch itself fails and records the
    resolver's error (a transient DNS failure is a download error, not a safety verdict).
    """
    if not url or not isinstance(url, str):
        return Drop(INVALID_URL, "empty URL")
    try:
        scheme = urlsplit(url).scheme.lower()
    except (ValueError, TypeError, AttributeError) as e:
        return Drop(INVALID_URL, f"invalid URL: {e}")
    if scheme not in ALLOWED_SCHEMES:
        return Drop(UNSUPPORTED_SCHEME,
                    f"{REFUSED_SCHEME_MARKER} {scheme!r}: only http and https are fetched")
    try:
        scheme, host, port = split_url(url)
    except (ValueError, TypeError, AttributeError) as e:
        return Drop(INVALID_URL, f"invalid URL: {e}")
    literal = parse_ip(host)
    if literal is not None:
        return policy.check_addresses(host, port, [str(literal)])
    try:
        addresses = resolver(host, port)
    except (OSError, UnicodeError):
        return True
    return policy.check_addresses(host, port, addresses)


class RefusedAddress(OSError):
    """Raised inside urllib when a connection or redirect would reach a refused address."""


# ---------------------------------------------------------------- urllib integration ---------

def _guarded_create_connection(policy: AddressPolicy, hostname: str, address, timeout=None,
                               source_address=None, **kw):
    """socket.create_connection that resolves, checks every address, then connects to a
    checked address (never re-resolving, so DNS cannot change its answer in between)."""
    host, port = address
    literal = parse_ip(host)
    addresses = [str(literal)] if literal is not None else resolve(host, port)
    verdict = policy.check_addresses(hostname or host, port, addresses)
    if verdict is not True:
        raise RefusedAddress(verdict.detail)
    last: OSError | None = None
    for text in addresses:
        try:
            return socket.create_connection((text, port), timeout, source_address)
        except OSError as e:
            last = e
    raise last or OSError(f"cannot connect to {host}:{port}")


class _GuardedConnectionMixin:
    _policy: AddressPolicy

    def _init_guard(self, policy: AddressPolicy) -> None:
        self._policy = policy
        # http.client calls self._create_connection((host, port), timeout, source_address).
        self._create_connection = functools.partial(_guarded_create_connection, policy, self.host)


class GuardedHTTPConnection(_GuardedConnectionMixin, http.client.HTTPConnection):
    def __init__(self, *args, policy: AddressPolicy, **kw):
        super().__init__(*args, **kw)
        self._init_guard(policy)


class GuardedHTTPSConnection(_GuardedConnectionMixin, http.client.HTTPSConnection):
    def __init__(self, *args, policy: AddressPolicy, **kw):
        kw.pop("check_hostname", None)
        super().__init__(*args, **kw)
        self._init_guard(policy)


class GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, req):
        return self.do_open(functools.partial(GuardedHTTPConnection, policy=self.policy), req)


class GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self.policy = policy

    def https_open(self, req):
        return self.do_open(functools.partial(GuardedHTTPSConnection, policy=self.policy), req,
                            context=self._context)


class GuardedRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Checks each redirect target with the same policy before following it, so a public URL
    that 302s to 10.0.0.1 or file:///etc/passwd fails with a clear error and no connection."""

    def __init__(self, policy: AddressPolicy):
        super().__init__()
        self.policy = policy

    def http_error_302(self, req, fp, code, msg, headers):
        location = headers.get("location") or headers.get("uri")
        if location:
            newurl = urljoin(req.full_url, location)
            verdict = check_url(newurl, self.policy)
            if verdict is not True:
                try:
                    fp.close()
                except Exception:  # noqa: BLE001 - closing a response we drop anyway
                    pass
                raise urllib.error.URLError(f"redirect to {newurl} refused: {verdict.detail}")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


class ResponseCheckProcessor(urllib.request.BaseHandler):
    """Refuses successful responses whose Content-Type is clearly not an image (an HTML error
    page served with 200), before the body is read. Runs after HTTPErrorProcessor (order
    1000), so 404s stay 404s."""
    handler_order = 1100

    def __init__(self, content_type_ok: Callable[[str], object] | None = None):
        self.content_type_ok = content_type_ok

    def http_response(self, request, response):
        if self.content_type_ok is not None:
            content_type = response.headers.get("Content-Type", "") or ""
            verdict = self.content_type_ok(content_type)
            if verdict is not True:
                response.close()
                raise urllib.error.URLError(f"not an image: Content-Type {content_type!r}")
        return response

    https_response = http_response


def guarded_handlers(policy: AddressPolicy, content_type_ok: Callable[[str], object] | None = None,
                     http: urllib.request.BaseHandler | None = None,
                     https: urllib.request.BaseHandler | None = None) -> list[urllib.request.BaseHandler]:
    """The handlers of a guarded opener: http(s) only, no proxy, every connection and redirect
    checked against `policy`. `http`/`https` replace the guarded connection handlers with
    subclasses of them (the download's per-host gate)."""
    return [urllib.request.ProxyHandler({}), urllib.request.UnknownHandler(),
            http or GuardedHTTPHandler(policy), https or GuardedHTTPSHandler(policy),
            urllib.request.HTTPDefaultErrorHandler(), GuardedRedirectHandler(policy),
            urllib.request.HTTPErrorProcessor(), ResponseCheckProcessor(content_type_ok)]


def build_opener(policy: AddressPolicy,
                 content_type_ok: Callable[[str], object] | None = None) -> urllib.request.OpenerDirector:
    """An opener that fetches http(s) only, through no proxy, with every connection and redirect
    checked against `policy` (no file:, ftp: or data: handlers at all)."""
    opener = urllib.request.OpenerDirector()
    for handler in guarded_handlers(policy, content_type_ok):
        opener.add_handler(handler)
    return opener


def install(policy: AddressPolicy, content_type_ok: Callable[[str], object] | None = None) -> None:
    """Make urllib.request.urlopen (what img2dataset calls) use the guarded opener in this
    process. Called in every download worker process before it fetches anything."""
    urllib.request.install_opener(build_opener(policy, content_type_ok))


def check_urls(url_list: list[object], policy: AddressPolicy, resolver: Resolver = resolve,
               max_threads: int = 32) -> list[Decision]:
    """check_url for each URL (None and non-strings are invalid URLs), resolving each distinct
    host once, in parallel: a shard of 10,000 URLs on 300 hosts makes 300 DNS lookups, not
    10,000 one after another."""
    hosts: set[tuple[str, int]] = set()
    for url in url_list:
        try:
            scheme, host, port = split_url(str(url or ""))
        except (ValueError, TypeError):
            continue
        if scheme in ALLOWED_SCHEMES and parse_ip(host) is None:
            hosts.add((host, port))

    def lookup(host_port: tuple[str, int]) -> tuple[tuple[str, int], list[str] | OSError]:
        try:
            return host_port, resolver(*host_port)
        except (OSError, UnicodeError) as e:
            return host_port, OSError(str(e))

    resolved: dict[tuple[str, int], list[str] | OSError] = {}
    if hosts:
        with ThreadPoolExecutor(min(max_threads, len(hosts))) as pool:
            resolved.update(pool.map(lookup, sorted(hosts)))

    def answer(host: str, port: int) -> list[str]:
        value = resolved.get((host, port))
        if value is None:
            return resolver(host, port)
        if isinstance(value, OSError):
            raise value
        return value

    return [check_url(str(url or ""), policy, answer) for url in url_list]
