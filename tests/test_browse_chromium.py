"""The run report in real headless Chromium (Debian's chromium and chromium-driver, through
selenium), checked as a person would: the pages load with no console errors, every image on
them loads, clicking a reason shows that reason's samples, the search box narrows the list,
the keyboard reaches everything, and the pages fit a desktop and a phone.

The report is built from a copy of the session's shared demo run (conftest.py `demo_run`: the
small demo world through every stage), so the browser tests add no run of their own.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from selenium import webdriver  # the test extra (pip install -e '.[test]')
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

import local_server
from witcurate.browse.build import build_report
from witcurate.browse.serve import make_server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Without the background-networking flags Chromium reaches for Google's services at start-up,
# which a closed network refuses; a fresh profile per driver keeps runs independent.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
DESKTOP, PHONE = (1280, 800), (390, 844)


@pytest.fixture(scope="module")
def browse_run(demo_run, tmp_path_factory) -> Path:
    """A copy of the session's shared demo run (queries to train), with its report built."""
    out = tmp_path_factory.mktemp("browse") / "run"
    shutil.copytree(demo_run.out, out)
    build_report(str(out), progress=lambda _: None)
    return out


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("headless Chromium is needed: apt-get install chromium chromium-driver (make test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                         f"--window-size={DESKTOP[0]},{DESKTOP[1]}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def viewport(driver, size: tuple[int, int]) -> None:
    """Emulate a screen of `size` CSS pixels (a phone is mobile: it honours the viewport tag)."""
    width, height = size
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1 if size == DESKTOP else 3,
        "mobile": size != DESKTOP})


def open_page(driver, url: str) -> None:
    driver.get_log("browser")                          # start each page with an empty console
    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: d.execute_script("return document.readyState") == "complete")
    WebDriverWait(driver, 20).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "main .loading"))


def console_errors(driver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def broken_images(driver) -> list[str]:
    """The src of every <img> on the page that did not load (waiting until each has finished)."""
    WebDriverWait(driver, 20).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
    return driver.execute_script(
        "return Array.from(document.images).filter(i => i.naturalWidth === 0).map(i => i.getAttribute('src'))")


def overflow(driver) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
    return driver.execute_script(
        "return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - window.innerWidth")


def links_out_of_reach(driver) -> list[str]:
    """Links that stick out of the window sideways (cut off, or behind a sideways scroll)."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('main a')).filter(a => {"
        " const r = a.getBoundingClientRect(); return r.width > 0 && (r.left < 0 || r.right > window.innerWidth + 1);"
        "}).map(a => a.textContent)")


def check_page(driver, url: str) -> int:
    """Open a page and check what a person would notice; returns how many images it shows."""
    open_page(driver, url)
    assert console_errors(driver) == [], url
    assert broken_images(driver) == [], url
    assert overflow(driver) <= 0, url
    assert links_out_of_reach(driver) == [], url
    return driver.execute_script("return document.images.length")


def uri(run: Path, page: str) -> str:
    return (run / "browse").as_uri() + "/" + page


def reject_uids(run: Path, stage: str, reason: str) -> set[str]:
    table = pq.read_table(run / stage / "rejects", columns=["uid", "reason"])
    return {u for u, r in zip(table["uid"].to_pylist(), table["reason"].to_pylist()) if r == reason}


def test_first_page_loads_clean_and_fast_and_is_saved_as_a_screenshot(browse_run, browser):
    viewport(browser, DESKTOP)
    check_page(browser, uri(browse_run, "index.html"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "From candidates to samples"
    stages = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.funnel tbody th")]
    assert stages[:2] == ["queries", "ingest"] and "shards" in stages
    interactive_ms = browser.execute_script(
        "const t = performance.getEntriesByType('navigation')[0]; return t.domInteractive - t.startTime")
    assert interactive_ms < 2000
    assert browser.save_screenshot(str(browse_run / "browse" / "screenshot.png"))
    assert (browse_run / "browse" / "screenshot.png").stat().st_size > 10_000


def test_clicking_a_reason_shows_that_reasons_samples(browse_run, browser):
    viewport(browser, DESKTOP)
    open_page(browser, uri(browse_run, "index.html"))
    link = browser.find_element(By.CSS_SELECTOR, 'a[href="view.html#rejects-score-clip_score_below"]')
    link.click()
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.card"))
    assert browser.find_element(By.TAG_NAME, "h1").text == "score: clip_score_below"
    shown = {c.get_attribute("data-uid") for c in browser.find_elements(By.CSS_SELECTOR, "article.card")}
    expected = reject_uids(browse_run, "score", "clip_score_below")
    assert shown and shown <= expected and len(shown) == min(50, len(expected))
    assert console_errors(browser) == [] and broken_images(browser) == []
    alts = [img.get_attribute("alt") for img in browser.find_elements(By.CSS_SELECTOR, "article.card img")]
    captions = [p.text for p in browser.find_elements(By.CSS_SELECTOR, "article.card .caption")]
    assert alts and alts == captions[:len(alts)]


def test_keyboard_alone_reaches_a_reason_and_opens_it(browse_run, browser):
    viewport(browser, DESKTOP)
    open_page(browser, uri(browse_run, "index.html"))
    for _ in range(40):
        ActionChains(browser).send_keys(Keys.TAB).perform()
        focused = browser.switch_to.active_element
        if "reason" in (focused.get_attribute("class") or ""):
            break
    else:
        pytest.fail("no reason link reached with Tab")
    assert focused.value_of_css_property("outline-style") != "none"      # focus is visible
    target = focused.get_attribute("href").split("#", 1)[1]
    focused.send_keys(Keys.ENTER)
    WebDriverWait(browser, 20).until(lambda d: d.execute_script("return location.hash") == "#" + target)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "h1").text != "")


def test_search_box_narrows_the_queries(browse_run, browser):
    viewport(browser, DESKTOP)
    check_page(browser, uri(browse_run, "view.html#queries"))
    rows = lambda: browser.find_elements(By.CSS_SELECTOR, "#query-list li")   # noqa: E731
    everything = len(rows())
    first = rows()[0].find_element(By.TAG_NAME, "a").text
    box = browser.find_element(By.ID, "search")
    box.send_keys(first)
    narrowed = rows()
    assert 0 < len(narrowed) < everything
    for row in narrowed:
        query = row.find_element(By.TAG_NAME, "a").text
        if first.lower() not in query.lower():            # listed for a caption that matches
            assert any(first.lower() in c.text.lower()
                       for c in browser.find_elements(By.CSS_SELECTOR, "#caption-hits .caption"))
    box.send_keys(" no query has this zqxj")
    assert rows() == []
    assert "0 queries" in browser.find_element(By.CSS_SELECTOR, "p.status").text
    assert console_errors(browser) == []


def test_every_view_loads_its_images_at_desktop_and_phone_width(browse_run, browser):
    pages = ["index.html", "view.html#score", "view.html#queries", "view.html#queries/0",
             "view.html#rejects-download-http_404"]
    pages += [f"view.html#{p.stem}" for p in sorted((browse_run / "browse" / "data").glob("rejects-dedupe-*.js"))]
    pages += [f"view.html#{p.stem}" for p in sorted((browse_run / "browse" / "data").glob("kind-*.js"))][:2]
    try:
        for size in (DESKTOP, PHONE):
            viewport(browser, size)
            images = sum(check_page(browser, uri(browse_run, page)) for page in pages)
            assert images > 20
    finally:
        viewport(browser, DESKTOP)


def test_demo_samples_carry_their_injected_kind(browse_run, browser):
    viewport(browser, DESKTOP)
    check_page(browser, uri(browse_run, "view.html#score"))
    tags = {t.text for t in browser.find_elements(By.CSS_SELECTOR, "article.card .tag")}
    assert tags and all(t.startswith("demo world: ") for t in tags)


def test_a_broken_thumbnail_link_is_caught(browse_run, browser, tmp_path):
    """The same checks that pass on the report fail on a copy with one thumbnail gone."""
    from test_browse import load_view
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    for copy in (whole, broken):
        shutil.copytree(browse_run / "browse", copy / "browse")
    thumb = load_view(broken / "browse", "score")["kept"][0]["thumb"]
    (broken / "browse" / thumb).unlink()
    viewport(browser, DESKTOP)
    check_page(browser, uri(whole, "view.html#score"))
    open_page(browser, uri(broken, "view.html#score"))
    assert [src for src in broken_images(browser)] == [thumb]
    assert any("ERR_FILE_NOT_FOUND" in e for e in console_errors(browser))


def test_a_caption_holding_a_script_is_shown_as_text(tmp_path, browser):
    from test_browse import HOSTILE, make_browse_run
    out = tmp_path / "run"
    make_browse_run(out)
    build_report(str(out), progress=lambda _: None)
    viewport(browser, DESKTOP)
    open_page(browser, uri(out, "view.html#rejects-dedupe-near_duplicate"))
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "article.card"))
    assert browser.execute_script("return window.__pwned") is None
    captions = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "article.card .caption")]
    assert HOSTILE in captions
    placeholder = browser.find_element(By.CSS_SELECTOR, ".noimg.broken")
    assert placeholder.text == "image does not decode (UnidentifiedImageError)"
    assert console_errors(browser) == [] and broken_images(browser) == []


def test_served_report_works_over_http(browse_run, browser):
    with local_server.serving(make_server(str(browse_run / "browse"), "127.0.0.1", 0)) as server:
        viewport(browser, DESKTOP)
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        assert check_page(browser, base + "view.html#score") > 0
        check_page(browser, base + "index.html")
