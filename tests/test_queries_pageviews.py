"""Pageview dump lines: projects, namespaces, percent-encoding, sums over files, bad lines."""

from __future__ import annotations

import gzip

import pytest

from queries_support import write_pageviews
from witcurate.errors import InputError
from witcurate.queries import pageviews

PROJECTS = {"en", "en.m"}


def test_hourly_line_format():
    assert pageviews.parse_line(b"en Albert_Einstein 413 0\n") == ("en", "Albert_Einstein", 413)
    assert pageviews.title_views("en.m Albert_Einstein 7 0", PROJECTS) == ("Albert Einstein", 7)
    assert pageviews.title_views("de Albert_Einstein 99 0", PROJECTS) is None
    assert pageviews.title_views("en.d dog 99 0", PROJECTS) is None          # Wiktionary


def test_daily_user_line_format_maps_access_to_domain_codes():
    line = "en.wikipedia Albert_Einstein 736 desktop 8541 A351B372"
    assert pageviews.parse_line(line) == ("en", "Albert_Einstein", 8541)
    assert pageviews.parse_line("en.wikipedia Dog null mobile-web 12 A12")[0] == "en.m"
    assert pageviews.parse_line("en.wikipedia Dog null mobile-app 3 C3")[0] == "en.m"
    assert pageviews.parse_line("en.wiktionary dog null desktop 5 A5")[0] == "en.d"


@pytest.mark.parametrize("title", [
    "Talk:Dog", "User:Example", "User_talk:Example", "Special:Search", "File:Dog.jpg",
    "Category:Dogs", "Wikipedia:About", "WP:NPOV", "Template:Infobox", "Help:Contents",
    "Portal:Biology", "Draft:New_dog", "Module:Citation", "MediaWiki:Common.css",
    "special:Random", "Image:Dog.png"])
def test_other_namespaces_are_dropped(title):
    assert pageviews.title_views(f"en {title} 500 0", PROJECTS) is None


@pytest.mark.parametrize("raw,title", [
    ("Star_Wars:_A_New_Hope", "Star Wars: A New Hope"),     # a colon that is no namespace
    ("Caf%C3%A9", "Café"), ("AC%2FDC", "AC/DC"), ("100%25_Pure", "100% Pure"),
    ("50%_off", "50% off"), ("C%2B%2B", "C++"), ("Hot_dog", "Hot dog"),
])
def test_main_namespace_titles_are_decoded(raw, title):
    assert pageviews.title_views(f"en {raw} 1 0", PROJECTS) == (title, 1)


def test_titles_no_page_can_have_are_skipped():
    for raw in ("Dog%23History", "A%7CB", "%0Anewline", "x" * 300):
        assert pageviews.title_views(f"en {raw} 5 0", PROJECTS) is None


@pytest.mark.parametrize("line,kind", [
    ("en Dog", "fields"), ("en Dog 12 0 extra", "fields"), ("", "fields"),
    ("en Dog twelve 0", "views"), ("en Dog -3 0", "views"),
    (b"en Caf\xe9 3 0", "encoding"), ("en Caf%E9 3 0", "encoding"),
])
def test_malformed_lines_raise_with_their_kind(line, kind):
    with pytest.raises(pageviews.Malformed) as err:
        pageviews.title_views(line, PROJECTS)
    assert err.value.kind == kind


def test_sums_over_files_and_formats(tmp_path):
    a = write_pageviews(tmp_path / "pageviews-20240101-000000.gz", [
        "en Dog 50 0", "en.m Dog 30 0", "de Dog 1000 0", "en Talk:Dog 400 0",
        "en Caf%C3%A9 40 0", "en broken", "en Cat many 0"])
    b = write_pageviews(tmp_path / "pageviews-20240101-010000.gz", [
        "en Dog 5 0", "en Café 30 0", b"en Bad\xff 3 0"])
    c = write_pageviews(tmp_path / "pageviews-20240101-user.bz2", [
        "en.wikipedia Dog 1 desktop 10 A10", "en.wikipedia Mouse 2 mobile-web 71 A71",
        "fr.wikipedia Mouse 2 desktop 900 A900"])
    totals, bad = pageviews.sum_views([str(a), str(b), str(c)], PROJECTS)
    assert totals == {"Dog": 95, "Café": 70, "Mouse": 71}
    assert bad == {"fields": 1, "views": 1, "encoding": 1}


def test_truncated_gzip_is_an_input_error(tmp_path):
    data = gzip.compress(b"".join(b"en Page_%d 5 0\n" % i for i in range(5000)))
    path = tmp_path / "pageviews-20240101-020000.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cannot read the pageview file"):
        pageviews.sum_views([str(path)], PROJECTS)
