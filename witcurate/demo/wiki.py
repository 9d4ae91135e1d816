"""A small English-Wikipedia stand-in: generated articles in a real multistream XML dump.

The dump follows MediaWiki's export schema 0.10 and Wikimedia's multistream layout: one bz2
stream holding the `<mediawiki>` header and `<siteinfo>`, then one stream per 100 pages, then a
stream holding the closing `</mediawiki>`; the index file (bz2) lists `offset:page_id:title` for
every page, where offset is the byte offset of the stream holding it.

Articles use real wikitext markup (templates, refs, tables, file links, piped links, headings,
bold) and talk about the demo's vocabulary (colours, shapes, scenes, counts) among filler prose
about invented places and people. Frequencies are tuned so that, at the demo's scaled-down
thresholds (unigram count >= 20, bigram count >= 5 and PMI >= 3), every word a demo caption uses
is a unigram query and every lowercase colour+shape bigram ("red circle", "red circles") is a
bigram query.

Traps a reader must handle: redirects (`#REDIRECT [[...]]` with a `<redirect title=...>`
element), pages outside the main namespace (Talk:, User:, Category:, Template:, File:,
Wikipedia:), words that occur only in markup a text extractor should drop. Those words are
named below so tests can check that they never become queries.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import random
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

from witcurate.demo.vocab import COLOURS, SCENES, SHAPES

DUMP_NAME = "enwiki-demo-pages-articles-multistream.xml.bz2"
INDEX_NAME = "enwiki-demo-pages-articles-multistream-index.txt.bz2"
PAGES_PER_STREAM = 100

# Words that occur only outside article prose; a correct reader never counts them.
TALK_ONLY_WORD = "Quillmaker"         # signatures on Talk:/User: pages (non-main namespaces)
REF_ONLY_WORD = "Demopress"           # publisher inside <ref>{{cite ...}}</ref> templates only
TEMPLATE_ONLY_WORD = "hexcode"        # an infobox parameter name, inside {{Infobox ...}} only
REDIRECT_WORD = "REDIRECT"            # the redirect keyword

NAMESPACES = [
    (-2, "Media"), (-1, "Special"), (0, ""), (1, "Talk"), (2, "User"), (3, "User talk"),
    (4, "Wikipedia"), (5, "Wikipedia talk"), (6, "File"), (7, "File talk"), (8, "MediaWiki"),
    (9, "MediaWiki talk"), (10, "Template"), (11, "Template talk"), (12, "Help"),
    (13, "Help talk"), (14, "Category"), (15, "Category talk"), (100, "Portal"),
    (101, "Portal talk"), (118, "Draft"), (119, "Draft talk"), (828, "Module"),
    (829, "Module talk"),
]
_NS_BY_NAME = {name: key for key, name in NAMESPACES if name}

SHAPE_TITLES = {
    "circle": "Circle", "square": "Square", "triangle": "Triangle", "star": "Star (shape)",
    "heart": "Heart (symbol)", "ring": "Ring (shape)", "cross": "Cross", "diamond": "Diamond (shape)",
}
SCENE_TITLES = {"grass": "Grass", "sky": "Sky", "water": "Water", "sand": "Sand", "snow": "Snow",
                "night": "Night sky"}

_HEX = {"red": "FF0000", "green": "00A000", "blue": "0040FF", "yellow": "FFE000",
        "purple": "8020A0", "orange": "FF8C00", "white": "FFFFFF", "black": "000000",
        "pink": "FF8CBE", "brown": "7A4A1E"}
_SIDES = {"circle": "0", "square": "4", "triangle": "3", "star": "10", "heart": "0", "ring": "0",
          "cross": "12", "diamond": "4"}


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


# --------------------------------------------------------------------------- vocabulary

_SYLLABLES = ("vel", "mor", "an", "dra", "os", "tin", "ka", "lu", "ber", "gen", "ha", "rin",
              "sto", "val", "ke", "mi", "ra", "do", "sul", "fen", "tor", "wick", "ly", "bar",
              "nes", "quil", "ro", "ste", "mar", "ho", "ö", "ard")
_NOUNS = ("city", "town", "village", "river", "mountain", "lake", "road", "bridge", "church",
          "school", "station", "castle", "island", "valley", "forest", "farm", "market", "harbour",
          "museum", "library", "hospital", "factory", "mill", "tower", "garden", "park", "street",
          "railway", "canal", "hill", "field", "house", "hall", "abbey", "chapel", "port", "bay",
          "coast", "district", "parish", "county", "province", "region", "border", "estate",
          "theatre", "stadium", "club", "team", "league", "album", "song", "film", "novel",
          "poem", "painting", "festival", "company", "newspaper", "magazine", "university",
          "college", "court", "prison", "barracks", "monument", "fountain", "lighthouse", "dam")
_PLURAL = {n: (n[:-1] + "ies" if n.endswith("y") and n[-2] not in "aeiou" else n + "s") for n in _NOUNS}
_PLURAL.update({"church": "churches", "bay": "bays", "abbey": "abbeys", "county": "counties",
                "valley": "valleys", "railway": "railways", "library": "libraries",
                "factory": "factories", "company": "companies", "university": "universities"})
_ADJS = ("small", "large", "old", "new", "northern", "southern", "eastern", "western", "local",
         "national", "major", "minor", "famous", "early", "late", "main", "public", "private",
         "ancient", "modern", "wooden", "stone", "rural", "coastal", "quiet", "busy", "narrow",
         "wide", "historic", "royal", "central", "upper", "lower", "former", "original", "annual")
_VERBS = ("built", "founded", "opened", "closed", "named", "described", "published", "recorded",
          "rebuilt", "moved", "extended", "renamed", "restored", "damaged", "sold", "bought",
          "enlarged", "replaced", "completed", "designed", "painted", "visited", "listed")
_ROLES = ("farmer", "merchant", "priest", "teacher", "painter", "poet", "engineer", "architect",
          "politician", "footballer", "singer", "writer", "soldier", "bishop", "sailor",
          "photographer", "historian", "botanist")
_MEANINGS = ("a meeting place", "a danger", "a point of interest", "a viewpoint", "a first aid post",
             "a camp site", "a border crossing", "a spring of fresh water", "a ferry landing")
_THINGS = ("prize", "point", "award", "vote", "life", "goal", "win")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def _zipf_weights(n: int, s: float = 1.0) -> list[float]:
    return [1.0 / (i + 1) ** s for i in range(n)]


class _Words:
    """Random word choice with Zipf-like skew, so the corpus has a head and a long tail."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        names: list[str] = []
        seen: set[str] = set()
        while len(names) < 700:
            k = rng.choice((2, 2, 3))
            name = "".join(rng.choice(_SYLLABLES) for _ in range(k)).capitalize()
            if 4 <= len(name) <= 11 and name not in seen:
                seen.add(name)
                names.append(name)
        self.names = names
        self.name_w = _zipf_weights(len(names), 0.9)
        self.places = names[:60]
        self.countries = ["Ostria", "Kelvania", "Marendor", "Tavrin", "Lusk", "Bervale"]
        self.noun_w = _zipf_weights(len(_NOUNS), 0.7)
        self.adj_w = _zipf_weights(len(_ADJS), 0.7)

    def name(self) -> str:
        return self.rng.choices(self.names, self.name_w)[0]

    def place(self) -> str:
        return self.rng.choice(self.places)

    def noun(self) -> str:
        return self.rng.choices(_NOUNS, self.noun_w)[0]

    def adj(self) -> str:
        return self.rng.choices(_ADJS, self.adj_w)[0]

    def year(self, lo: int = 1400, hi: int = 2022) -> int:
        return self.rng.randint(lo, hi)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _ref(w: _Words) -> str:
    r = w.rng
    kind = r.random()
    if kind < 0.5:
        cite = (f"{{{{cite book |last={w.name()} |first={w.name()} |title=A history of {w.place()} "
                f"|publisher={REF_ONLY_WORD} |year={w.year(1850)} |page={r.randint(3, 400)}}}}}")
    elif kind < 0.85:
        cite = (f"{{{{cite web |url=https://example.org/{w.name().lower()}/{r.randint(1, 9999)} "
                f"|title={w.name()} records |publisher={REF_ONLY_WORD} |access-date={r.randint(1, 28)} "
                f"{r.choice(_MONTHS)} {w.year(2005, 2023)}}}}}")
    else:
        return f"<ref>{w.name()} archive, volume {r.randint(1, 40)}.</ref>"
    return f"<ref>{cite}</ref>"


# --------------------------------------------------------------------------- article text

def _where(rng: random.Random) -> str:
    return rng.choice([p for p, _ in SCENES.values()])


def _colour_shape_article(colour: str, shape: str, w: _Words) -> str:
    """An article on e.g. 'Red circle' using the bigram in prose, singular and plural."""
    r = w.rng
    s, ss = shape, SHAPES[shape]
    c, C = colour, colour.capitalize()
    other_c = r.choice([x for x in COLOURS if x != colour])
    other_s = r.choice([x for x in SHAPES if x != shape])
    century = _ordinal(r.randint(14, 20))
    parts = [
        f"{{{{Short description|Symbol: a {c} {s}}}}}",
        f"{{{{Infobox symbol\n| name = {C} {s}\n| image = {C} {s}.svg\n| {TEMPLATE_ONLY_WORD} = "
        f"#{_HEX[colour]}\n| shape = [[{SHAPE_TITLES[shape]}|{s}]]\n}}}}",
        f"A '''{c} {s}''' is a [[{SHAPE_TITLES[shape]}|{s}]] filled with the colour [[{C}|{c}]]."
        f"{_ref(w)} The {c} {s} is one of the simplest signs in use, and {c} {ss} appear on "
        f"flags, maps and road signs.",
        f"Pictures of {c} {ss} {_where(r)} are common in collections of drawings. In a typical "
        f"picture, two {c} {ss} {_where(r)} or a {c} {s} {_where(r)} are shown against a plain "
        f"background.",
        f"[[File:{C} {s}.svg|thumb|upright|A {c} {s} {_where(r)}]]",
        "== Use ==",
        f"The {c} {s} marks {r.choice(_MEANINGS)} on many maps of {w.place()}.{_ref(w)} Four "
        f"{c} {ss} in a row are used as a rating symbol, while one {c} {s} often stands for a "
        f"single {r.choice(_THINGS)}. Some road signs use two {c} {ss} side by side.",
        f"A photo of three {c} {ss} {_where(r)} was used in an early study of colour naming by "
        f"the {r.choice(_ROLES)} {w.name()} {w.name()}.",
        "== In art ==",
        f"Artists have drawn the {c} {s} since the {century} century. An image of a {c} {s} "
        f"{_where(r)} is a popular card, and children learn to draw a picture of four {c} {ss} "
        f"{_where(r)} early.",
        "== See also ==",
        f"* [[{other_c.capitalize()} {s}|{other_c} {s}]]\n* [[{C} {other_s}|{c} {other_s}]]\n"
        f"* [[{SHAPE_TITLES[shape]}]]",
        "== References ==\n{{Reflist}}",
        f"[[Category:{C} symbols]]\n[[Category:{SHAPE_TITLES[shape].split(' (')[0]}s]]",
    ]
    return "\n\n".join(parts)


def _colour_article(colour: str, w: _Words) -> str:
    r = w.rng
    c, C = colour, colour.capitalize()
    h = _HEX[colour]
    rows = "\n".join(f"|-\n| [[{C} {s}|{c} {s}]] || {SHAPES[s]} drawn in {c} || {_SIDES[s]}"
                     for s in SHAPES)
    parts = [
        f"{{{{Infobox colour\n| title = {C}\n| {TEMPLATE_ONLY_WORD} = #{h}\n| r = {int(h[0:2], 16)}"
        f"\n| g = {int(h[2:4], 16)}\n| b = {int(h[4:6], 16)}\n| source = [[HTML]]\n}}}}",
        f"'''{C}''' is a colour. In the demo collection the colour {c} is seen on the grass, in "
        f"the sky, on the water, on the sand, in the snow and in the night sky.{_ref(w)}",
        f"The word {c} is one of the oldest colour words. A {c} object on a {r.choice(list(COLOURS))} "
        f"background is easy to see, and {c} paint was made in {w.place()} in the "
        f"{_ordinal(r.randint(12, 19))} century.",
        "== Shapes ==",
        f"Many symbols are drawn in {c}. The table lists the common {c} shapes.",
        f"{{| class=\"wikitable sortable\"\n|+ {C} shapes\n! Shape !! Description !! Sides\n{rows}\n|}}",
        "== In flags ==",
        f"The flag of {r.choice(w.countries)} is {c} and {r.choice(list(COLOURS))}, and the flag of "
        f"{r.choice(w.countries)} has a {c} border.",
        "== References ==\n{{Reflist}}",
        "[[Category:Colours]]",
    ]
    return "\n\n".join(parts)


def _shape_article(shape: str, w: _Words) -> str:
    r = w.rng
    s, ss = shape, SHAPES[shape]
    title = SHAPE_TITLES[shape]
    colour_list = ", ".join(f"[[{c.capitalize()} {s}|{c}]]" for c in COLOURS)
    parts = [
        f"{{{{Infobox shape\n| name = {title}\n| sides = {_SIDES[shape]}\n| image = {s}.svg\n}}}}",
        f"A '''{s}''' is a simple shape. A {s} can be drawn in any colour, and {ss} are found in "
        f"signs, flags and games.{_ref(w)}",
        f"The {s} is among the first shapes children learn. Two {ss} side by side, three {ss} in "
        f"a row or four {ss} in a square are common patterns.",
        "== Colours ==",
        f"A {s} is often drawn in one of these colours: {colour_list}.",
        f"{{| class=\"wikitable\"\n|+ Properties\n! Property !! Value\n|-\n| Sides || {_SIDES[shape]}"
        f"\n|-\n| Also called || {w.name()} {s}\n|}}",
        "== History ==",
        f"The {s} was used as a mark by the {r.choice(_ROLES)}s of {w.place()} in the "
        f"{_ordinal(r.randint(10, 18))} century.",
        "== References ==\n{{Reflist}}",
        "[[Category:Shapes]]",
    ]
    return "\n\n".join(parts)


def _scene_article(scene: str, w: _Words) -> str:
    r = w.rng
    where, noun = SCENES[scene]
    title = SCENE_TITLES[scene]
    bits = {
        "grass": "Grass covers fields, parks and gardens. Sheep graze on the grass, and green "
                 "grass grows fast after rain.",
        "sky": "The sky is blue by day because air scatters blue light. A blue sky with white "
               "clouds is a common sight in summer.",
        "water": "Water covers most of the Earth. Calm water reflects the sky, and boats float "
                 "on the water of lakes and rivers.",
        "sand": "Sand is made of fine grains of rock. A sandy beach is formed where waves leave "
                "sand on the coast, and children build castles on the sand.",
        "snow": "Snow is frozen water that falls from the sky. Fresh snow is white and soft, and "
                "animals leave tracks in the snow.",
        "night": "The night sky is the sky seen after sunset. Stars, the Moon and planets appear "
                 "in the night sky, which is dark away from city lights.",
    }[scene]
    parts = [
        f"'''{title}''' is the subject of this article. {bits}{_ref(w)}",
        f"Things seen {where} include people, animals and toys; a photo of {noun} often shows "
        f"only a few objects.",
        "== In pictures ==",
        f"Painters from {w.place()} liked to paint {noun}. "
        + " ".join(f"A picture of a {c} {r.choice(list(SHAPES))} {where} is a common drawing."
                   for c in r.sample(list(COLOURS), 4)),
        "== References ==\n{{Reflist}}",
        "[[Category:Nature]]",
    ]
    return "\n\n".join(parts)


# Generic encyclopedic sentences. Slots: {N} name, {P} place, {K} country, {n}/{n2} noun,
# {ns} plural noun, {a} adjective, {v} verb, {r} role, {y}/{y2} years, {num}, {cen} century,
# {c}/{c2} colour, {s} shape, {where}.
_SENTENCES = (
    "The {a} {n} was {v} in {y} by a local {r}.",
    "In {y}, the {n} was {v} after a fire.",
    "It is one of the {a} {ns} in the {P} region of {K}.",
    "The population was {num} at the {y} census.",
    "Two {ns} stand near the {n}, and three more were {v} in the {cen} century.",
    "{N} {N2} was born in {P} in {y} and worked as a {r}.",
    "The {n} lies on the {a} side of the [[{P} River]].",
    "Most of the land around the {n} is used for farming, with fields of grass and small woods.",
    "In winter the hills are covered in fresh snow, and the road to the {n} is often closed.",
    "The {n} has a sandy beach, and the water is calm in summer.",
    "A photo of the {n} taken in {y} shows the {a} {n2} and the sky above it.",
    "The flag of {K} shows a {c} {s} on a {c2} field.",
    "The team plays in {c} and {c2} shirts.",
    "Four {r}s from the {n} served in the war of {y}.",
    "One of the {ns} was {v} in {y}, and another was {v} in {y2}.",
    "Three {ns} were {v} between {y} and {y2}.",
    "The picture on the cover is a drawing by the {r} {N} {N2}.",
    "An image of the {n} appears on the {num} {K} note.",
    "At night the sky over the {n} is dark enough to see the Milky Way.",
    "The {n} is known for its {a} {n2} and its {a2} {n3}.",
    "According to {N}, the {n} was {v} with stone from {P}.",
    "The {a} {n} of {P} was {v} in the {cen} century and {v2} in {y}.",
    "It was {v} by the {r} {N} {N2}, who also {v2} the {n} in {P}.",
    "The {n} is served by a railway station on the line from {P} to {P2}.",
    "Since {y} the {n} has been run by the {a} {n2} of {K}.",
    "Children from the {n} walk to the school in {P} on the other side of the water.",
    "The {n} was shown in a drawing by {N} in {y}, now kept in the museum of {P}.",
    "Its {a} {n} is a listed building of the first grade.",
    "There are two churches, a school and a market in the {n}.",
    "The name comes from an old word for {where2}.",
    "Four years later the {n} was sold to the {r} {N} {N2}.",
    "Three of its {ns} are open to the public in summer.",
    "One photo from {y} shows boats on the water near the {n}.",
    "The nearest {n} is in {P}, about {num2} kilometres away.",
    "The {n} was {v} in {y}; the work took {num3} years.",
)
_WHERE2 = ("a meadow", "a ford", "a hill", "a marsh", "a clearing", "a spring", "a shore")


def _fill_sentence(template: str, w: _Words) -> str:
    r = w.rng
    n, n2, n3 = w.noun(), w.noun(), w.noun()
    slots = {
        "N": w.name(), "N2": w.name(), "P": w.place(), "P2": w.place(), "K": r.choice(w.countries),
        "n": n, "n2": n2, "n3": n3, "ns": _PLURAL[n], "a": w.adj(), "a2": w.adj(),
        "v": r.choice(_VERBS), "v2": r.choice(_VERBS), "r": r.choice(_ROLES),
        "y": w.year(), "y2": w.year(), "num": f"{r.randint(100, 99999):,}",
        "num2": r.randint(2, 90), "num3": r.randint(2, 30), "cen": _ordinal(r.randint(11, 20)),
        "c": r.choice(list(COLOURS)), "c2": r.choice(list(COLOURS)), "s": r.choice(list(SHAPES)),
        "where2": r.choice(_WHERE2),
    }
    return template.format(**slots)


def _filler_article(title: str, kind: str, w: _Words) -> str:
    r = w.rng
    place, country = w.place(), r.choice(w.countries)
    if kind == "place":
        lead = (f"'''{title}''' is a {w.adj()} village in the {place} district of [[{country}]]. "
                f"It lies about {r.randint(2, 80)}&nbsp;km from [[{w.place()}]].")
        box = (f"{{{{Infobox settlement\n| name = {title}\n| country = {country}\n"
               f"| population_total = {r.randint(100, 50000)}\n| established_date = {w.year(900, 1900)}\n}}}}")
    elif kind == "person":
        lead = (f"'''{title}''' ({w.year(1700, 1950)}–{w.year(1951, 2020)}) was a "
                f"[[{country}|{country}n]] {r.choice(_ROLES)} from [[{place}]].")
        box = f"{{{{Infobox person\n| name = {title}\n| birth_place = [[{place}]]\n}}}}"
    elif kind == "river":
        lead = (f"The '''{title}''' is a river in [[{country}]]. It rises near [[{place}]] and flows "
                f"into the sea after {r.randint(10, 300)} kilometres.")
        box = f"{{{{Infobox river\n| name = {title}\n| source = [[{place}]]\n}}}}"
    else:
        lead = (f"'''{title}''' is a {w.adj()} {w.noun()} in [[{place}]], [[{country}]]. It was "
                f"{r.choice(_VERBS)} in {w.year()}.")
        box = f"{{{{Infobox building\n| name = {title}\n| location = [[{place}]]\n}}}}"
    parts = [box, lead + _ref(w)]
    for heading in r.sample(("History", "Geography", "Economy", "Culture", "Transport",
                             "Notable people", "Architecture", "Legacy"), r.randint(2, 4)):
        parts.append(f"== {heading} ==")
        sents = [_fill_sentence(r.choice(_SENTENCES), w) for _ in range(r.randint(4, 8))]
        if r.random() < 0.3:
            sents.insert(r.randrange(len(sents) + 1), _ref(w))
        parts.append(" ".join(sents))
        if r.random() < 0.15:
            rows = "\n".join(f"|-\n| {y} || {r.randint(100, 20000):,}"
                             for y in sorted(r.sample(range(1850, 2021, 10), 4)))
            parts.append(f"{{| class=\"wikitable\"\n! Year !! Population\n{rows}\n|}}")
        if r.random() < 0.12:
            parts.append("\n".join(f"* [[{w.name()} {w.name()}]] ({w.year(1800, 1990)}), "
                                   f"{r.choice(_ROLES)}" for _ in range(r.randint(2, 4))))
        if r.random() < 0.1:
            parts.append(f"[[File:{title} {w.year(1990, 2022)}.svg|thumb|The {w.noun()} in "
                         f"{w.year(1990, 2022)}]]")
    parts.append("== References ==\n{{Reflist}}")
    parts.append(f"<!-- maintenance: check the {w.noun()} dates -->\n[[Category:{country}]]")
    return "\n\n".join(parts)


def _talk_page(subject: str, w: _Words) -> str:
    r = w.rng
    sig = (f"[[User:{TALK_ONLY_WORD}|{TALK_ONLY_WORD}]] ([[User talk:{TALK_ONLY_WORD}|talk]]) "
           f"{r.randint(10, 23)}:{r.randint(10, 59)}, {r.randint(1, 28)} {r.choice(_MONTHS)} "
           f"{r.randint(2008, 2023)} (UTC)")
    return (f"{{{{WikiProject banner shell|class=C}}}}\n== Sources ==\nThe second section of "
            f"[[{subject}]] needs a better source, {TALK_ONLY_WORD} thinks. {sig}\n"
            f":{TALK_ONLY_WORD} here again: agreed, {TALK_ONLY_WORD} will look. {sig}")


# --------------------------------------------------------------------------- the page list

def build_pages(seed: int) -> list[Page]:
    """Every page of the demo dump, in page-id order (deterministic from the seed)."""
    rng = random.Random(f"wiki:{seed}")
    w = _Words(rng)
    items: list[tuple[int, str, str, str | None]] = []      # ns, title, text, redirect target

    for colour in COLOURS:
        items.append((0, colour.capitalize(), _colour_article(colour, w), None))
    for shape in SHAPES:
        items.append((0, SHAPE_TITLES[shape], _shape_article(shape, w), None))
    for scene in SCENES:
        items.append((0, SCENE_TITLES[scene], _scene_article(scene, w), None))
    for colour in COLOURS:
        for shape in SHAPES:
            items.append((0, f"{colour.capitalize()} {shape}", _colour_shape_article(colour, shape, w), None))

    used = {t for _, t, _, _ in items}
    kinds = ("place", "place", "person", "river", "building")
    filler_titles: list[str] = []
    while len(filler_titles) < 850:
        kind = rng.choice(kinds)
        base = w.name()
        title = {"place": base, "person": f"{base} {w.name()}", "river": f"{base} River",
                 "building": f"{base} {rng.choice(('Castle', 'Abbey', 'Hall', 'Tower', 'Mill'))}"}[kind]
        if title in used:
            title = f"{title}, {rng.choice(w.countries)}"
        if title in used:
            continue
        used.add(title)
        filler_titles.append(title)
        items.append((0, title, _filler_article(title, kind, w), None))

    # Redirects: plurals and alternative names of demo articles, and some filler variants.
    redirects: list[tuple[int, str, str, str | None]] = []
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

    # Pages outside the main namespace.
    other: list[tuple[int, str, str, str | None]] = []
    talk_subjects = [t for _, t, _, _ in items[:40]] + rng.sample(filler_titles, 20)
    for subject in talk_subjects:
        other.append((1, f"Talk:{subject}", _talk_page(subject, w), None))
    other.append((2, f"User:{TALK_ONLY_WORD}",
                  f"{TALK_ONLY_WORD} edits articles about shapes. {TALK_ONLY_WORD} likes red circles.", None))
    for cat in ("Colours", "Shapes", "Nature", *[f"{c.capitalize()} symbols" for c in COLOURS]):
        other.append((14, f"Category:{cat}", f"Articles about {cat.lower()}.\n[[Category:Contents]]", None))
    other.append((10, "Template:Infobox colour",
                  "{| class=\"infobox\"\n! {{{title}}}\n|-\n| Hex || {{{" + TEMPLATE_ONLY_WORD
                  + "|}}}\n|}<noinclude>Colour infobox.</noinclude>", None))
    other.append((6, "File:Red circle.svg", f"== Summary ==\nA red circle drawn by {TALK_ONLY_WORD}.", None))
    other.append((4, "Wikipedia:About", f"This demo encyclopedia is kept by {TALK_ONLY_WORD}.", None))

    all_items = items + redirects + other
    rng.shuffle(all_items)
    pages: list[Page] = []
    page_id, rev_id = 10, 1_000_000
    for ns, title, text, target in all_items:
        page_id += rng.randint(1, 6)
        rev_id += rng.randint(1, 5000)
        ts = (f"20{rng.randint(18, 24):02d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T"
              f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z")
        pages.append(Page(page_id, ns, title, text, target, rev_id, ts))
    return pages


# --------------------------------------------------------------------------- XML writing

def _sha1_base36(text: str) -> str:
    """MediaWiki's revision sha1: the SHA-1 of the text in base 36, 31 digits."""
    n = int.from_bytes(hashlib.sha1(text.encode("utf-8")).digest(), "big")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while n:
        n, d = divmod(n, 36)
        out = digits[d] + out
    return out.rjust(31, "0")


def header_xml() -> str:
    ns_lines = "\n".join(
        f'      <namespace key="{k}" case="first-letter" />' if not name else
        f'      <namespace key="{k}" case="first-letter">{escape(name)}</namespace>'
        for k, name in NAMESPACES)
    return (
        '<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:schemaLocation="http://www.mediawiki.org/xml/export-0.10/ '
        'http://www.mediawiki.org/xml/export-0.10.xsd" version="0.10" xml:lang="en">\n'
        "  <siteinfo>\n"
        "    <sitename>Wikipedia</sitename>\n"
        "    <dbname>enwiki</dbname>\n"
        "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n"
        "    <generator>MediaWiki 1.41.0-wmf.demo</generator>\n"
        "    <case>first-letter</case>\n"
        "    <namespaces>\n" + ns_lines + "\n    </namespaces>\n"
        "  </siteinfo>\n")


def page_xml(p: Page) -> str:
    redirect = f"    <redirect title={quoteattr(p.redirect)} />\n" if p.redirect else ""
    nbytes = len(p.text.encode("utf-8"))
    return (
        "  <page>\n"
        f"    <title>{escape(p.title)}</title>\n"
        f"    <ns>{p.ns}</ns>\n"
        f"    <id>{p.id}</id>\n"
        f"{redirect}"
        "    <revision>\n"
        f"      <id>{p.rev_id}</id>\n"
        f"      <parentid>{p.rev_id - 17}</parentid>\n"
        f"      <timestamp>{p.timestamp}</timestamp>\n"
        "      <contributor>\n"
        f"        <username>{TALK_ONLY_WORD}</username>\n"
        "        <id>4242</id>\n"
        "      </contributor>\n"
        "      <comment>demo edit</comment>\n"
        "      <model>wikitext</model>\n"
        "      <format>text/x-wiki</format>\n"
        f'      <text bytes="{nbytes}" xml:space="preserve">{escape(p.text)}</text>\n'
        f"      <sha1>{_sha1_base36(p.text)}</sha1>\n"
        "    </revision>\n"
        "  </page>\n")


FOOTER = "</mediawiki>\n"


def write_dump(dump_dir: str, pages: list[Page]) -> dict:
    """Write the multistream dump and its index into dump_dir; returns paths and counts."""
    os.makedirs(dump_dir, exist_ok=True)
    dump_path = os.path.join(dump_dir, DUMP_NAME)
    index_path = os.path.join(dump_dir, INDEX_NAME)
    index_lines: list[str] = []
    offsets: list[int] = []
    with open(dump_path + ".part", "wb") as f:
        f.write(bz2.compress(header_xml().encode("utf-8"), 9))
        for start in range(0, len(pages), PAGES_PER_STREAM):
            chunk = pages[start:start + PAGES_PER_STREAM]
            offset = f.tell()
            offsets.append(offset)
            f.write(bz2.compress("".join(page_xml(p) for p in chunk).encode("utf-8"), 9))
            index_lines.extend(f"{offset}:{p.id}:{p.title}\n" for p in chunk)
        f.write(bz2.compress(FOOTER.encode("utf-8"), 9))
    os.replace(dump_path + ".part", dump_path)
    with open(index_path + ".part", "wb") as f:
        f.write(bz2.compress("".join(index_lines).encode("utf-8"), 9))
    os.replace(index_path + ".part", index_path)
    return {
        "dump": dump_path, "index": index_path, "pages": len(pages),
        "articles": sum(1 for p in pages if p.ns == 0 and not p.redirect),
        "redirects": sum(1 for p in pages if p.redirect),
        "other_namespaces": sum(1 for p in pages if p.ns != 0),
        "page_streams": len(offsets),
    }


def namespace_of(title: str) -> int:
    """The namespace number a prefixed title belongs to (0 for the main namespace)."""
    prefix, sep, _ = title.partition(":")
    return _NS_BY_NAME.get(prefix, 0) if sep else 0
