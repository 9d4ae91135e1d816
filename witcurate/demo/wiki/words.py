"""The demo encyclopedia's words: the trap words a reader must never count, article titles,
the filler vocabulary with a Zipf-like skew, references and generic sentences."""

from __future__ import annotations

import itertools
import random

from witcurate.demo.vocab import COLOURS, SCENES, SHAPES

# Words that occur only outside article prose; a correct reader never counts them.
TALK_ONLY_WORD = "Quillmaker"         # signatures on Talk:/User: pages (non-main namespaces)
REF_ONLY_WORD = "Demopress"           # publisher inside <ref>{{cite ...}}</ref> templates only
TEMPLATE_ONLY_WORD = "hexcode"        # an infobox parameter name, inside {{Infobox ...}} only
REDIRECT_WORD = "REDIRECT"            # the redirect keyword

SHAPE_TITLES = {
    "circle": "Circle", "square": "Square", "triangle": "Triangle", "star": "Star (shape)",
    "heart": "Heart (symbol)", "ring": "Ring (shape)", "cross": "Cross", "diamond": "Diamond (shape)",
}
SCENE_TITLES = {"grass": "Grass", "sky": "Sky", "water": "Water", "sand": "Sand", "snow": "Snow",
                "night": "Night sky"}

HEX = {"red": "FF0000", "green": "00A000", "blue": "0040FF", "yellow": "FFE000",
       "purple": "8020A0", "orange": "FF8C00", "white": "FFFFFF", "black": "000000",
       "pink": "FF8CBE", "brown": "7A4A1E"}
SIDES = {"circle": "0", "square": "4", "triangle": "3", "star": "10", "heart": "0", "ring": "0",
         "cross": "12", "diamond": "4"}


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
PLURAL = {n: (n[:-1] + "ies" if n.endswith("y") and n[-2] not in "aeiou" else n + "s") for n in _NOUNS}
PLURAL.update({"church": "churches", "bay": "bays", "abbey": "abbeys", "county": "counties",
                "valley": "valleys", "railway": "railways", "library": "libraries",
                "factory": "factories", "company": "companies", "university": "universities"})
_ADJS = ("small", "large", "old", "new", "northern", "southern", "eastern", "western", "local",
         "national", "major", "minor", "famous", "early", "late", "main", "public", "private",
         "ancient", "modern", "wooden", "stone", "rural", "coastal", "quiet", "busy", "narrow",
         "wide", "historic", "royal", "central", "upper", "lower", "former", "original", "annual")
VERBS = ("built", "founded", "opened", "closed", "named", "described", "published", "recorded",
          "rebuilt", "moved", "extended", "renamed", "restored", "damaged", "sold", "bought",
          "enlarged", "replaced", "completed", "designed", "painted", "visited", "listed")
ROLES = ("farmer", "merchant", "priest", "teacher", "painter", "poet", "engineer", "architect",
          "politician", "footballer", "singer", "writer", "soldier", "bishop", "sailor",
          "photographer", "historian", "botanist")
MEANINGS = ("a meeting place", "a danger", "a point of interest", "a viewpoint", "a first aid post",
             "a camp site", "a border crossing", "a spring of fresh water", "a ferry landing")
THINGS = ("prize", "point", "award", "vote", "life", "goal", "win")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def _zipf_cum_weights(n: int, s: float = 1.0) -> list[float]:
    """Cumulative Zipf weights, for `random.choices(..., cum_weights=)`: the same draws as the
    plain weights, without summing 700 weights again at every draw (a third of a world's wiki)."""
    return list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(n)))


class Words:
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
        self.name_cum = _zipf_cum_weights(len(names), 0.9)
        self.places = names[:60]
        self.countries = ["Ostria", "Kelvania", "Marendor", "Tavrin", "Lusk", "Bervale"]
        self.noun_cum = _zipf_cum_weights(len(_NOUNS), 0.7)
        self.adj_cum = _zipf_cum_weights(len(_ADJS), 0.7)

    def name(self) -> str:
        return self.rng.choices(self.names, cum_weights=self.name_cum)[0]

    def place(self) -> str:
        return self.rng.choice(self.places)

    def noun(self) -> str:
        return self.rng.choices(_NOUNS, cum_weights=self.noun_cum)[0]

    def adj(self) -> str:
        return self.rng.choices(_ADJS, cum_weights=self.adj_cum)[0]

    def year(self, lo: int = 1400, hi: int = 2022) -> int:
        return self.rng.randint(lo, hi)


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def ref(w: Words) -> str:
    r = w.rng
    kind = r.random()
    if kind < 0.5:
        cite = (f"{{{{cite book |last={w.name()} |first={w.name()} |title=A history of {w.place()} "
                f"|publisher={REF_ONLY_WORD} |year={w.year(1850)} |page={r.randint(3, 400)}}}}}")
    elif kind < 0.85:
        cite = (f"{{{{cite web |url=https://example.org/{w.name().lower()}/{r.randint(1, 9999)} "
                f"|title={w.name()} records |publisher={REF_ONLY_WORD} |access-date={r.randint(1, 28)} "
                f"{r.choice(MONTHS)} {w.year(2005, 2023)}}}}}")
    else:
        return f"<ref>{w.name()} archive, volume {r.randint(1, 40)}.</ref>"
    return f"<ref>{cite}</ref>"


def scene_phrase(rng: random.Random) -> str:
    return rng.choice([p for p, _ in SCENES.values()])


# Generic encyclopedic sentences. Slots: {N} name, {P} place, {K} country, {n}/{n2} noun,
# {ns} plural noun, {a} adjective, {v} verb, {r} role, {y}/{y2} years, {num}, {cen} century,
# {c}/{c2} colour, {s} shape, {where}.
SENTENCES = (
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
WHERE2 = ("a meadow", "a ford", "a hill", "a marsh", "a clearing", "a spring", "a shore")


def fill_sentence(template: str, w: Words) -> str:
    r = w.rng
    n, n2, n3 = w.noun(), w.noun(), w.noun()
    slots = {
        "N": w.name(), "N2": w.name(), "P": w.place(), "P2": w.place(), "K": r.choice(w.countries),
        "n": n, "n2": n2, "n3": n3, "ns": PLURAL[n], "a": w.adj(), "a2": w.adj(),
        "v": r.choice(VERBS), "v2": r.choice(VERBS), "r": r.choice(ROLES),
        "y": w.year(), "y2": w.year(), "num": f"{r.randint(100, 99999):,}",
        "num2": r.randint(2, 90), "num3": r.randint(2, 30), "cen": ordinal(r.randint(11, 20)),
        "c": r.choice(list(COLOURS)), "c2": r.choice(list(COLOURS)), "s": r.choice(list(SHAPES)),
        "where2": r.choice(WHERE2),
    }
    return template.format(**slots)
