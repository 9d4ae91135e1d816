"""The demo dump's page list: articles, redirects and pages outside the main namespace."""

from __future__ import annotations

import random
from dataclasses import dataclass

from witcurate.demo.vocab import COLOURS, SCENES, SHAPES
from witcurate.demo.wiki.articles import (colour_article, colour_shape_article, filler_article,
                                          scene_article, shape_article, talk_page)
from witcurate.demo.wiki.words import SCENE_TITLES, SHAPE_TITLES, TALK_ONLY_WORD, TEMPLATE_ONLY_WORD, Words


def demo_titles() -> set[str]:
    """Titles of the articles about the demo vocabulary (colours, shapes, scenes, symbols)."""
    return ({c.capitalize() for c in COLOURS} | set(SHAPE_TITLES.values()) | set(SCENE_TITLES.values())
            | {f"{c.capitalize()} {s}" for c in COLOURS for s in SHAPES})


@dataclass
class Page:
    id: int
    ns: int
    title: str
    text: str
    redirect: str | None = None
    rev_id: int = 0
    timestamp: str = "2024-01-01T00:00:00Z"


# (namespace, title, wikitext, redirect target): a page before it is numbered.
Item = tuple[int, str, str, str | None]


def _vocabulary_articles(w: Words) -> list[Item]:
    """An article for each colour, shape and scene, and for each colour+shape pair."""
    items: list[Item] = []
    for colour in COLOURS:
        items.append((0, colour.capitalize(), colour_article(colour, w), None))
    for shape in SHAPES:
        items.append((0, SHAPE_TITLES[shape], shape_article(shape, w), None))
    for scene in SCENES:
        items.append((0, SCENE_TITLES[scene], scene_article(scene, w), None))
    for colour in COLOURS:
        for shape in SHAPES:
            items.append((0, f"{colour.capitalize()} {shape}", colour_shape_article(colour, shape, w), None))
    return items


def _filler_articles(w: Words, used: set[str], n: int = 850) -> list[Item]:
    """Articles about invented places, people, rivers and buildings, titles not yet `used`."""
    rng = w.rng
    kinds = ("place", "place", "person", "river", "building")
    items: list[Item] = []
    while len(items) < n:
        kind = rng.choice(kinds)
        base = w.name()
        title = {"place": base, "person": f"{base} {w.name()}", "river": f"{base} River",
                 "building": f"{base} {rng.choice(('Castle', 'Abbey', 'Hall', 'Tower', 'Mill'))}"}[kind]
        if title in used:
            title = f"{title}, {rng.choice(w.countries)}"
        if title in used:
            continue
        used.add(title)
        items.append((0, title, filler_article(title, kind, w), None))
    return items


def _redirects(w: Words, filler_titles: list[str], used: set[str]) -> list[Item]:
    """Plurals and alternative names of demo articles, and some filler variants."""
    rng = w.rng
    redirects: list[Item] = []
    for colour in COLOURS:
        for shape in SHAPES:
            if rng.random() < 0.35:
                src, dst = f"{colour.capitalize()} {SHAPES[shape]}", f"{colour.capitalize()} {shape}"
                redirects.append((0, src, f"#REDIRECT [[{dst}]]\n\n{{{{R from plural}}}}", dst))
    redirects.append((0, "Night Sky", "#REDIRECT [[Night sky]]\n{{R from other capitalisation}}", "Night sky"))
    redirects.append((0, "Colour red", "#REDIRECT [[Red]]", "Red"))
    for title in rng.sample(filler_titles, 40):
        src = f"{title} ({rng.choice(w.countries)})"
        if src not in used:
            used.add(src)
            redirects.append((0, src, f"#REDIRECT [[{title}]] {{{{R from disambiguation}}}}", title))
    return redirects


def _other_namespaces(w: Words, talk_subjects: list[str]) -> list[Item]:
    """Talk, User, Category, Template, File and Wikipedia pages: the trap words live here."""
    other: list[Item] = [(1, f"Talk:{subject}", talk_page(subject, w), None) for subject in talk_subjects]
    other.append((2, f"User:{TALK_ONLY_WORD}",
                  f"{TALK_ONLY_WORD} edits articles about shapes. {TALK_ONLY_WORD} likes red circles.", None))
    for cat in ("Colours", "Shapes", "Nature", *[f"{c.capitalize()} symbols" for c in COLOURS]):
        other.append((14, f"Category:{cat}", f"Articles about {cat.lower()}.\n[[Category:Contents]]", None))
    other.append((10, "Template:Infobox colour",
                  "{| class=\"infobox\"\n! {{{title}}}\n|-\n| Hex || {{{" + TEMPLATE_ONLY_WORD
                  + "|}}}\n|}<noinclude>Colour infobox.</noinclude>", None))
    other.append((6, "File:Red circle.svg", f"== Summary ==\nA red circle drawn by {TALK_ONLY_WORD}.", None))
    other.append((4, "Wikipedia:About", f"This demo encyclopedia is kept by {TALK_ONLY_WORD}.", None))
    return other


def _numbered(items: list[Item], rng: random.Random) -> list[Page]:
    """Shuffled into page-id order, with increasing page and revision ids and timestamps."""
    rng.shuffle(items)
    pages: list[Page] = []
    page_id, rev_id = 10, 1_000_000
    for ns, title, text, target in items:
        page_id += rng.randint(1, 6)
        rev_id += rng.randint(1, 5000)
        ts = (f"20{rng.randint(18, 24):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
              f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z")
        pages.append(Page(page_id, ns, title, text, target, rev_id, ts))
    return pages


def build_pages(seed: int) -> list[Page]:
    """Every page of the demo dump, in page-id order (deterministic from the seed: the parts
    are drawn from one generator in a fixed order)."""
    rng = random.Random(f"wiki:{seed}")
    w = Words(rng)
    items = _vocabulary_articles(w)
    used = {t for _, t, _, _ in items}
    fillers = _filler_articles(w, used)
    filler_titles = [t for _, t, _, _ in fillers]
    items += fillers
    redirects = _redirects(w, filler_titles, used)
    talk_subjects = [t for _, t, _, _ in items[:40]] + rng.sample(filler_titles, 20)
    other = _other_namespaces(w, talk_subjects)
    return _numbered(items + redirects + other, rng)
