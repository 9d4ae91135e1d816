"""URL safety: private, loopback, link-local and metadata addresses are refused unless allowlisted,
before the first request and on every redirect. Resolution is injected in the pure tests, and the
only sockets opened are to loopback servers on this machine."""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import local_server
from witcurate.filters import urls
from witcurate.filters.images import classify_error, content_type_ok


def fake_dns(table):
    def resolver(host, port):
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]
    return resolver


@pytest.mark.parametrize("address,category", [
    ("127.0.0.1", "loopback"), ("127.0.0.2", "loopback"), ("10.1.2.3", "private"),
    ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("169.254.169.254", "cloud metadata"),
    ("169.254.10.10", "link-local"), ("0.0.0.0", "unspecified"), ("224.0.0.1", "multicast"),
    ("100.64.0.1", "non-public"), ("::1", "loopback"), ("fe80::1", "link-local"),
    ("fd00:ec2::254", "cloud metadata"), ("fc00::1", "private"), ("::ffff:10.0.0.1", "private"),
    ("::ffff:127.0.0.1", "loopback"), ("240.0.0.1", "reserved"),
    ("93.184.216.34", None), ("2606:4700::1111", None),
])
def test_address_categories(address, category):
    assert urls.address_category(ipaddress.ip_address(address)) == category


def test_a_shard_of_urls_resolves_each_host_once():
    asked = []
    table = fake_dns({"public.example": ["93.184.216.34"], "internal.example": ["10.0.0.7"]})

    def dns(host, port):
        asked.append((host, port))
        return table(host, port)

    batch = ["http://public.example/1.jpg", "http://public.example/2.jpg", None,
             "http://internal.example/x.jpg", "http://10.0.0.8/y.jpg", "http://gone.example/z.jpg",
             "https://public.example/3.jpg"]
    decisions = urls.check_urls(batch, urls.AddressPolicy(), dns)
    assert sorted(asked) == [("gone.example", 80), ("internal.example", 80), ("public.example", 80),
                             ("public.example", 443)]
    assert [d if d is True else d.reason for d in decisions] == [
        True, True, "invalid_url", "private_address", "private_address", True, True]


def test_check_url_refuses_private_destinations_by_default():
    policy = urls.AddressPolicy()
    dns = fake_dns({"public.example": ["93.184.216.34"], "internal.example": ["10.0.0.7"],
                    "split.example": ["93.184.216.34", "192.168.0.9"], "meta.example": ["169.254.169.254"]})
    assert urls.check_url("http://public.example/a.jpg", policy, dns) is True
    assert urls.check_url("https://93.184.216.34/a.jpg", policy, dns) is True
    for url in ("http://internal.example/a.jpg", "http://split.example/a.jpg",
                "http://meta.example/latest/meta-data/", "http://169.254.169.254/latest/meta-data/",
                "http://127.0.0.1:8080/x", "http://[::1]/x", "http://[::ffff:127.0.0.1]/x",
                "http://0.0.0.0/x"):
        verdict = urls.check_url(url, policy, dns)
        assert verdict is not True and verdict.reason == "private_address", url
        assert urls.REFUSED_MARKER in verdict.detail
    assert urls.check_url("file:///etc/passwd", policy, dns).reason == "unsupported_scheme"
    assert urls.check_url("ftp://public.example/a.jpg", policy, dns).reason == "unsupported_scheme"
    assert urls.check_url("http:///nohost", policy, dns).reason == "invalid_url"
    assert urls.check_url("", policy, dns).reason == "invalid_url"
    assert urls.check_url("http://public.example:99999/", policy, dns).reason == "invalid_url"
    # a name that does not resolve is left to the fetch (which records the DNS error)
    assert urls.check_url("http://nowhere.example/a.jpg", policy, dns) is True


def test_allowlist_entries():
    policy = urls.AddressPolicy.from_config(["127.0.0.1:18080", "10.0.0.0/8", "images.lan", "[::1]:9000"])
    dns = fake_dns({"localhost": ["127.0.0.1"], "images.lan": ["192.168.7.7"], "other.lan": ["192.168.7.8"]})
    assert urls.check_url("http://127.0.0.1:18080/a.jpg", policy, dns) is True
    assert urls.check_url("http://localhost:18080/a.jpg", policy, dns) is True     # by resolved address
    assert urls.check_url("http://127.0.0.1:18081/a.jpg", policy, dns) is not True  # other port
    assert urls.check_url("http://127.0.0.2:18080/a.jpg", policy, dns) is not True  # other address
    assert urls.check_url("http://10.200.3.4/a.jpg", policy, dns) is True            # CIDR, any port
    assert urls.check_url("http://images.lan:81/a.jpg", policy, dns) is True         # host, any port
    assert urls.check_url("http://other.lan/a.jpg", policy, dns) is not True
    assert urls.check_url("http://[::1]:9000/a.jpg", policy, dns) is True
    assert urls.check_url("http://[::1]:9001/a.jpg", policy, dns) is not True
    assert urls.check_url("http://169.254.169.254/", policy, dns) is not True
    with pytest.raises(ValueError):
        urls.parse_allow_entry("host:notaport")
    with pytest.raises(ValueError):
        urls.parse_allow_entry("10.0.0.0/33")


class _Server:
    def __init__(self, host, handler):
        self.hits = []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                outer.hits.append(self.path)
                handler(self)

        self.httpd = ThreadingHTTPServer((host, 0), H)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        local_server.start(self.httpd)

    def close(self):
        local_server.stop(self.httpd)


def _reply(h, status, body=b"", headers=()):
    h.send_response(status)
    for k, v in headers:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def servers():
    forbidden = _Server("127.0.0.2", lambda h: _reply(h, 200, b"secret", [("Content-Type", "image/jpeg")]))

    def routes(h):
        if h.path == "/to-forbidden":
            _reply(h, 302, headers=[("Location", f"http://127.0.0.2:{forbidden.port}/x.jpg")])
        elif h.path == "/to-port-9":
            _reply(h, 302, headers=[("Location", "http://127.0.0.2:9/x.jpg")])
        elif h.path == "/to-file":
            _reply(h, 302, headers=[("Location", "file:///etc/passwd")])
        elif h.path == "/to-ok":
            _reply(h, 302, headers=[("Location", "/ok")])
        elif h.path == "/html":
            _reply(h, 200, b"<html></html>", [("Content-Type", "text/html")])
        else:
            _reply(h, 200, b"image bytes", [("Content-Type", "image/jpeg")])

    allowed = _Server("127.0.0.1", routes)
    yield allowed, forbidden
    allowed.close()
    forbidden.close()


def test_guarded_opener_refuses_redirects_and_connections_to_refused_addresses(servers):
    allowed, forbidden = servers
    policy = urls.AddressPolicy.from_config([f"127.0.0.1:{allowed.port}"])
    opener = urls.build_opener(policy, content_type_ok)
    base = f"http://127.0.0.1:{allowed.port}"

    assert opener.open(base + "/ok", timeout=5).read() == b"image bytes"
    assert opener.open(base + "/to-ok", timeout=5).read() == b"image bytes"       # allowed redirect
    for path in ("/to-forbidden", "/to-port-9", "/to-file"):
        with pytest.raises(urllib.error.URLError) as e:
            opener.open(base + path, timeout=5)
        reason = classify_error("failed_to_download", str(e.value))
        assert reason in ("private_address", "unsupported_scheme"), str(e.value)
    with pytest.raises(OSError, match=urls.REFUSED_MARKER):                       # direct
        opener.open(f"http://127.0.0.2:{forbidden.port}/x.jpg", timeout=5)
    with pytest.raises(OSError, match=urls.REFUSED_MARKER):                       # by name
        opener.open(f"http://localhost:{forbidden.port}/x.jpg", timeout=5)
    with pytest.raises(OSError, match=urls.REFUSED_MARKER):                       # https too
        opener.open(f"https://127.0.0.2:{forbidden.port}/x.jpg", timeout=5)
    with pytest.raises(urllib.error.URLError, match="not an image"):
        opener.open(base + "/html", timeout=5)
    assert forbidden.hits == []


def test_install_makes_plain_urlopen_guarded(servers):
    allowed, forbidden = servers
    previous = urllib.request._opener
    try:
        urls.install(urls.AddressPolicy.from_config([f"127.0.0.1:{allowed.port}"]))
        with pytest.raises(urllib.error.URLError, match="refused"):
            urllib.request.urlopen(f"http://127.0.0.1:{allowed.port}/to-forbidden", timeout=5)
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen("file:///etc/hostname", timeout=5)
    finally:
        urllib.request.install_opener(previous)
    assert forbidden.hits == []
