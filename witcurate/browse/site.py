"""Write the report's files: index.html, view.html, the data files and the assets.

Data files are JavaScript, `data/<id>.js`, each calling `witcurateData({...})` with the view's
JSON. A page loads the one it shows through a <script> element it adds: Chromium refuses
fetch() of a file:// URL, a script element is allowed from file:// and over HTTP alike. The JSON
is written with sorted keys and `<`, `>`, `&` escaped, so a caption holding `</script>` is text.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

from witcurate.browse.index_page import header, page
from witcurate.browse.samples import public
from witcurate.pipeline import fs

ASSETS = ("report.css", "report.js")
JS_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def to_js(view: dict[str, Any]) -> str:
    """`witcurateData(<view as JSON>);` with the builder's private keys left out."""
    clean = _public_view(view)
    text = json.dumps(clean, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for raw, escaped in JS_ESCAPES.items():
        text = text.replace(raw, escaped)
    return f"witcurateData({text});\n"


def _public_view(view: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in view.items():
        if key in ("samples", "kept", "rejected"):
            out[key] = [public(s) for s in value]
        elif key == "queries":
            out[key] = [dict(q, samples=[public(s) for s in q["samples"]]) for q in value]
        else:
            out[key] = value
    return out


def write_bytes(path: str, data: bytes) -> None:
    """A file of the report: plain `open` on local disk (thousands of thumbnails), fsspec elsewhere."""
    if "://" in path:
        with fs.open_file(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_assets(dest: str) -> None:
    fs.makedirs(fs.join(dest, "assets"))
    for name in ASSETS:
        data = importlib.resources.files("witcurate.browse").joinpath("assets", name).read_bytes()
        write_bytes(fs.join(dest, "assets", name), data)


def write_views(dest: str, views: list[dict[str, Any]]) -> int:
    """Every view's data file; returns the bytes written."""
    fs.makedirs(fs.join(dest, "data"))
    total = 0
    for view in views:
        text = to_js(view)
        write_text(fs.join(dest, "data", f"{view['id']}.js"), text)
        total += len(text.encode("utf-8"))
    return total


def view_html(run_name: str, nav: list[tuple[str, str]]) -> str:
    """One page for every data view; the part of the URL after # names the view."""
    body = (header(run_name, nav).replace('href="#main"', 'href="#view"')
            + '<main id="view" tabindex="-1">'
            '<p class="loading">Loading…</p><noscript>This page needs JavaScript to show its samples; '
            'the first page (index.html) does not.</noscript></main>')
    return page(f"Run report: {run_name}", body, scripts=("assets/report.js",))
