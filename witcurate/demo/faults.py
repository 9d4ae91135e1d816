"""What the demo world injects into its candidate pool: the noise kinds and their shares, the
faults the image host acts out or the served content carries, and the reject reason each fault
must get from the download stage (the demo's ground truth checks that it does)."""

from __future__ import annotations

# Faults the host acts out (listed in host.json), and faults in the content it serves.
HOST_FAULTS = ("http_404", "http_500", "slow", "reset", "truncated", "html", "redirect_private", "noai")
CONTENT_FAULTS = ("bomb", "oversized", "tiny")
# Faults of a whole host (demo/hosts.py): a path its robots.txt disallows, a host disallowing
# witcurate, a robots.txt answering 500 or timing out, a host answering every request 429/503.
POLITENESS_FAULTS = ("robots_path", "robots_agent", "robots_500", "robots_timeout", "rate_limited")
FAULT_KINDS = HOST_FAULTS + CONTENT_FAULTS + POLITENESS_FAULTS
FAULT_FRACTION = 0.0125
POLITENESS_FRACTION = 0.01
# Share of the pool for each noise kind; "clean" takes the rest (about 35%). Beyond what a
# caption rule, a hash or a CLIP score catches: `semantic_dup`, a clean scene re-rendered
# (shifted, rescaled, another background texture, other noise and JPEG quality) in groups from
# one copy to a template-spam group of a third of them; `off_target`, banners, charts, logos and
# screenshots whose alt text is a clean caption (demo/offtarget.py).
KIND_FRACTIONS: dict[str, float] = {
    "mismatched": 0.08, "junk": 0.04, "exact_dup": 0.03, "near_dup": 0.03,
    **{k: FAULT_FRACTION for k in HOST_FAULTS + CONTENT_FAULTS},
    **{k: POLITENESS_FRACTION for k in POLITENESS_FAULTS},
    "semantic_dup": 0.12, "off_target": 0.15,
}
# The share of the semantic duplicates that copy one scene: the template spam.
SPAM_SHARE = 1 / 3
KINDS = ("clean", *KIND_FRACTIONS)
# Kinds whose URL yields no drawing at all (true_caption is null for them).
NO_IMAGE_KINDS = ("http_404", "http_500", "reset", "html", "redirect_private", "bomb")

# The reject reason the download stage gives each injected fault under the demo's download
# settings (None: the image is kept, resized); every other kind is kept by that stage. `tiny`
# (24 px) is below min_side 48; `oversized` (3000x2000) is within max_pixels and the aspect limit.
EXPECTED_DOWNLOAD_REASON: dict[str, str | None] = {
    "http_404": "http_404", "http_500": "http_500", "slow": "timeout", "reset": "connection_error",
    "truncated": "truncated", "html": "not_an_image", "redirect_private": "private_address",
    "noai": "opt_out_header", "bomb": "too_many_pixels", "tiny": "image_too_small", "oversized": None,
    "robots_path": "robots_disallowed", "robots_agent": "robots_disallowed",
    "robots_500": "robots_unavailable", "robots_timeout": "robots_unavailable",
    "rate_limited": "rate_limited",
}

SLOW_SECONDS = 4.0                                   # longer than the demo's 2 s download timeout
REDIRECT_LOCATION = "http://127.0.0.2:9/x.jpg"       # loopback, but not an allowlisted host:port
OVERSIZED = (3000, 2000)
TINY = 24
