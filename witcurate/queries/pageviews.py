"""Article titles from Wikimedia pageview dump files.

Two line formats are read (both from https://dumps.wikimedia.org/other/):
- hourly `pageviews-YYYYMMDD-HH0000.gz` (and the older pagecounts files):
      domain_code page_title count_views total_response_size
  e.g. `en Albert_Einstein 413 0`; domain codes are `en` (desktop) and `en.m` (mobile) for
  English Wikipedia, `en.d` for Wiktionary, ...
- daily `pageviews-YYYYMMDD-user.bz2` (pageview_complete):
      wiki_code page_title page_id access_method daily_total hourly_counts
  e.g. `en.wikipedia Albert_Einstein 736 desktop 8541 A351B372...`; the wiki code and access
  method are mapped to the hourly domain code (`en.wikipedia` + desktop -> `en`, + mobile-web or
  mobile-app -> `en.m`) so one `pageview_projects` setting selects both.

A title is kept if its domain code is in `projects` and it is in the main namespace (no known
namespace prefix such as `Talk:`, `User:`, `Special:`, `File:`); it is percent-decoded (UTF-8)
and underscores become spaces. Views are summed over every line and file given; of the titles
with a sum >= min_title_views, the `max_titles` most viewed become entries (see `budgets`).
A line that does not parse is counted by kind
(`fields`, `views`, `encoding`) and skipped, never a crash and never silently dropped.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Iterable, Iterator

from witcurate.errors import InputError
from witcurate.pipeline import fs

# English Wikipedia's namespaces (canonical names, their talk pages, and the aliases MediaWiki
# accepts in titles). Matched case-insensitively before the first colon.
NAMESPACES = frozenset(n.lower() for n in [
    "Media", "Special", "Talk", "User", "User talk", "Wikipedia", "Wikipedia talk", "File",
    "File talk", "MediaWiki", "MediaWiki talk", "Template", "Template talk", "Help", "Help talk",
    "Category", "Category talk", "Portal", "Portal talk", "Draft", "Draft talk", "TimedText",
    "TimedText talk", "Module", "Module talk", "Book", "Book talk", "Education Program",
    "Education Program talk", "Gadget", "Gadget talk", "Gadget definition",
    "Gadget definition talk", "Topic", "Event", "Event talk",
    # aliases MediaWiki resolves to the namespaces above
    "WP", "WT", "Project", "Project talk", "Image", "Image talk",
])

_ACCESS_SUFFIX = {"desktop": "", "mobile-web": ".m", "mobile-app": ".m"}
# pageview_complete project names -> the hourly files' domain-code suffixes
_PROJECT_SUFFIX = {
    "wikipedia": "", "wiktionary": ".d", "wikibooks": ".b", "wikinews": ".n", "wikiquote": ".q",
    "wikisource": ".s", "wikiversity": ".v", "wikivoyage": ".voy", "wikimedia": ".m",
    "mediawiki": ".w", "wikidata": ".wd",
}

MALFORMED_KINDS = ("fields", "views", "encoding")
_INVALID_TITLE = re.compile(r"[#<>\[\]|{}\x00-\x1f\x7f]")


class Malformed(ValueError):
    def __init__(self, kind: str, line: str):
        super().__init__(f"{kind}: {line[:200]!r}")
        self.kind = kind
        self.line = line


def domain_code(wiki_code: str, access: str) -> str:
    """pageview_complete's `en.wikipedia` + `mobile-web` -> the hourly code `en.m`."""
    lang, _, project = wiki_code.partition(".")
    suffix = _PROJECT_SUFFIX.get(project)
    if suffix is None:
        return wiki_code + _ACCESS_SUFFIX.get(access, "")
    mobile = _ACCESS_SUFFIX.get(access, "")
    return lang + mobile + suffix


def parse_line(line: bytes | str) -> tuple[str, str, int]:
    """(domain_code, raw title, views) of one line of either format, or raise Malformed."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed("encoding", line.decode("utf-8", "replace")) from None
    fields = line.rstrip("\r\n").split(" ")
    if len(fields) == 4:
        code, title, views = fields[0], fields[1], fields[2]
    elif len(fields) == 6 and fields[3] in _ACCESS_SUFFIX:
        code, title, views = domain_code(fields[0], fields[3]), fields[1], fields[4]
    else:
        raise Malformed("fields", line)
    if not code or not title:
        raise Malformed("fields", line)
    if not views.isdigit():
        raise Malformed("views", line)
    return code, title, int(views)


def clean_title(raw: str) -> str:
    """Percent-decoded (UTF-8, strict), underscores as spaces, outer spaces trimmed."""
    try:
        title = urllib.parse.unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise Malformed("encoding", raw) from None
    return title.replace("_", " ").strip(" ")


def is_valid_title(title: str) -> bool:
    """A title MediaWiki could have: no `#<>[]|{}`, no control characters, <= 255 bytes.

    Pageview files also log requests for titles no page can have (fragments, broken links);
    these are counted as `invalid_title` and skipped.
    """
    return bool(title) and not _INVALID_TITLE.search(title) and len(title.encode("utf-8")) <= 255


def is_main_namespace(title: str, extra_namespaces: frozenset[str] | set[str] = frozenset()) -> bool:
    """No namespace prefix before a colon (NAMESPACES, or `extra_namespaces`, lowercase)."""
    if ":" not in title:
        return True
    prefix = title.split(":", 1)[0].strip().lower()
    return prefix not in NAMESPACES and prefix not in extra_namespaces


def title_views(line: bytes | str, projects: frozenset[str] | set[str],
                extra_namespaces: frozenset[str] = frozenset()) -> tuple[str, int] | None:
    """(title, views) for a line to count, None for a line of another project or namespace,
    or a title no page can have.

    Raises Malformed for a line that does not parse.
    """
    code, raw, views = parse_line(line)
    if code not in projects:
        return None
    title = clean_title(raw)
    if not is_valid_title(title) or not is_main_namespace(title, extra_namespaces):
        return None
    return title, views


def iter_file_lines(path: str) -> Iterator[bytes]:
    """The raw lines of a pageview file (gz, bz2 or plain), read as bytes."""
    lower = path.lower()
    comp = "gzip" if lower.endswith(".gz") else "bz2" if lower.endswith(".bz2") else None
    try:
        with fs.open_file(path, "rb", compression=comp) as f:
            for line in f:
                if line.strip():
                    yield line
    except FileNotFoundError:
        raise InputError(f"pageview file not found: {path}", "check queries.pageviews / --pageviews") from None
    except (EOFError, OSError) as e:
        raise InputError(f"{path}: cannot read the pageview file: {e}",
                         "re-download it (a truncated .gz/.bz2 cannot be read to its end)") from None


def sum_views(paths: Iterable[str], projects: Iterable[str],
              extra_namespaces: Iterable[str] = ()) -> tuple[dict[str, int], dict[str, int]]:
    """In-process sums over files: (views per title, malformed lines per kind)."""
    projects = frozenset(projects)
    extra = frozenset(n.lower() for n in extra_namespaces)
    totals: dict[str, int] = {}
    bad = dict.fromkeys(MALFORMED_KINDS, 0)
    for path in paths:
        for line in iter_file_lines(path):
            try:
                got = title_views(line, projects, extra)
            except Malformed as e:
                bad[e.kind] += 1
                continue
            if got:
                totals[got[0]] = totals.get(got[0], 0) + got[1]
    return totals, bad
