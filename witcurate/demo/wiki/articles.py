"""The demo encyclopedia's article texts in wikitext: about colours, shapes, scenes and each
colour+shape pair (the demo's queries), filler articles about invented places and people,
and talk pages."""

from __future__ import annotations

from witcurate.demo.vocab import COLOURS, SCENES, SHAPES
from witcurate.demo.wiki.words import (HEX, MEANINGS, MONTHS, ROLES, SCENE_TITLES, SENTENCES, SHAPE_TITLES,
                                       SIDES, TALK_ONLY_WORD, TEMPLATE_ONLY_WORD, THINGS, VERBS,
                                       Words, fill_sentence, ordinal, ref, scene_phrase)


def colour_shape_article(colour: str, shape: str, w: Words) -> str:
    """An article on e.g. 'Red circle' using the bigram in prose, singular and plural."""
    r = w.rng
    s, ss = shape, SHAPES[shape]
    c, C = colour, colour.capitalize()
    other_c = r.choice([x for x in COLOURS if x != colour])
    other_s = r.choice([x for x in SHAPES if x != shape])
    century = ordinal(r.randint(14, 20))
    parts = [
        f"{{{{Short description|Symbol: a {c} {s}}}}}",
        f"{{{{Infobox symbol\n| name = {C} {s}\n| image = {C} {s}.svg\n| {TEMPLATE_ONLY_WORD} = "
        f"#{HEX[colour]}\n| shape = [[{SHAPE_TITLES[shape]}|{s}]]\n}}}}",
        f"A '''{c} {s}''' is a [[{SHAPE_TITLES[shape]}|{s}]] filled with the colour [[{C}|{c}]]."
        f"{ref(w)} The {c} {s} is one of the simplest signs in use, and {c} {ss} appear on "
        f"flags, maps and road signs.",
        f"Pictures of {c} {ss} {scene_phrase(r)} are common in collections of drawings. In a typical "
        f"picture, two {c} {ss} {scene_phrase(r)} or a {c} {s} {scene_phrase(r)} are shown against a plain "
        f"background.",
        f"[[File:{C} {s}.svg|thumb|upright|A {c} {s} {scene_phrase(r)}]]",
        "== Use ==",
        f"The {c} {s} marks {r.choice(MEANINGS)} on many maps of {w.place()}.{ref(w)} Four "
        f"{c} {ss} in a row are used as a rating symbol, while one {c} {s} often stands for a "
        f"single {r.choice(THINGS)}. Some road signs use two {c} {ss} side by side.",
        f"A photo of three {c} {ss} {scene_phrase(r)} was used in an early study of colour naming by "
        f"the {r.choice(ROLES)} {w.name()} {w.name()}.",
        "== In art ==",
        f"Artists have drawn the {c} {s} since the {century} century. An image of a {c} {s} "
        f"{scene_phrase(r)} is a popular card, and children learn to draw a picture of four {c} {ss} "
        f"{scene_phrase(r)} early.",
        "== See also ==",
        f"* [[{other_c.capitalize()} {s}|{other_c} {s}]]\n* [[{C} {other_s}|{c} {other_s}]]\n"
        f"* [[{SHAPE_TITLES[shape]}]]",
        "== References ==\n{{Reflist}}",
        f"[[Category:{C} symbols]]\n[[Category:{SHAPE_TITLES[shape].split(' (')[0]}s]]",
    ]
    return "\n\n".join(parts)


def colour_article(colour: str, w: Words) -> str:
    r = w.rng
    c, C = colour, colour.capitalize()
    h = HEX[colour]
    rows = "\n".join(f"|-\n| [[{C} {s}|{c} {s}]] || {SHAPES[s]} drawn in {c} || {SIDES[s]}"
                     for s in SHAPES)
    parts = [
        f"{{{{Infobox colour\n| title = {C}\n| {TEMPLATE_ONLY_WORD} = #{h}\n| r = {int(h[0:2], 16)}"
        f"\n| g = {int(h[2:4], 16)}\n| b = {int(h[4:6], 16)}\n| source = [[HTML]]\n}}}}",
        f"'''{C}''' is a colour. In the demo collection the colour {c} is seen on the grass, in "
        f"the sky, on the water, on the sand, in the snow and in the night sky.{ref(w)}",
        f"The word {c} is one of the oldest colour words. A {c} object on a {r.choice(list(COLOURS))} "
        f"background is easy to see, and {c} paint was made in {w.place()} in the "
        f"{ordinal(r.randint(12, 19))} century.",
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


def shape_article(shape: str, w: Words) -> str:
    r = w.rng
    s, ss = shape, SHAPES[shape]
    title = SHAPE_TITLES[shape]
    colour_list = ", ".join(f"[[{c.capitalize()} {s}|{c}]]" for c in COLOURS)
    parts = [
        f"{{{{Infobox shape\n| name = {title}\n| sides = {SIDES[shape]}\n| image = {s}.svg\n}}}}",
        f"A '''{s}''' is a simple shape. A {s} can be drawn in any colour, and {ss} are found in "
        f"signs, flags and games.{ref(w)}",
        f"The {s} is among the first shapes children learn. Two {ss} side by side, three {ss} in "
        f"a row or four {ss} in a square are common patterns.",
        "== Colours ==",
        f"A {s} is often drawn in one of these colours: {colour_list}.",
        f"{{| class=\"wikitable\"\n|+ Properties\n! Property !! Value\n|-\n| Sides || {SIDES[shape]}"
        f"\n|-\n| Also called || {w.name()} {s}\n|}}",
        "== History ==",
        f"The {s} was used as a mark by the {r.choice(ROLES)}s of {w.place()} in the "
        f"{ordinal(r.randint(10, 18))} century.",
        "== References ==\n{{Reflist}}",
        "[[Category:Shapes]]",
    ]
    return "\n\n".join(parts)


def scene_article(scene: str, w: Words) -> str:
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
        f"'''{title}''' is the subject of this article. {bits}{ref(w)}",
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


def filler_article(title: str, kind: str, w: Words) -> str:
    r = w.rng
    place, country = w.place(), r.choice(w.countries)
    if kind == "place":
        lead = (f"'''{title}''' is a {w.adj()} village in the {place} district of [[{country}]]. "
                f"It lies about {r.randint(2, 80)}&nbsp;km from [[{w.place()}]].")
        box = (f"{{{{Infobox settlement\n| name = {title}\n| country = {country}\n"
               f"| population_total = {r.randint(100, 50000)}\n| established_date = {w.year(900, 1900)}\n}}}}")
    elif kind == "person":
        lead = (f"'''{title}''' ({w.year(1700, 1950)}–{w.year(1951, 2020)}) was a "
                f"[[{country}|{country}n]] {r.choice(ROLES)} from [[{place}]].")
        box = f"{{{{Infobox person\n| name = {title}\n| birth_place = [[{place}]]\n}}}}"
    elif kind == "river":
        lead = (f"The '''{title}''' is a river in [[{country}]]. It rises near [[{place}]] and flows "
                f"into the sea after {r.randint(10, 300)} kilometres.")
        box = f"{{{{Infobox river\n| name = {title}\n| source = [[{place}]]\n}}}}"
    else:
        lead = (f"'''{title}''' is a {w.adj()} {w.noun()} in [[{place}]], [[{country}]]. It was "
                f"{r.choice(VERBS)} in {w.year()}.")
        box = f"{{{{Infobox building\n| name = {title}\n| location = [[{place}]]\n}}}}"
    parts = [box, lead + ref(w)]
    for heading in r.sample(("History", "Geography", "Economy", "Culture", "Transport",
                             "Notable people", "Architecture", "Legacy"), r.randint(2, 4)):
        parts.append(f"== {heading} ==")
        sents = [fill_sentence(r.choice(SENTENCES), w) for _ in range(r.randint(4, 8))]
        if r.random() < 0.3:
            sents.insert(r.randrange(len(sents) + 1), ref(w))
        parts.append(" ".join(sents))
        if r.random() < 0.15:
            rows = "\n".join(f"|-\n| {y} || {r.randint(100, 20000):,}"
                             for y in sorted(r.sample(range(1850, 2021, 10), 4)))
            parts.append(f"{{| class=\"wikitable\"\n! Year !! Population\n{rows}\n|}}")
        if r.random() < 0.12:
            parts.append("\n".join(f"* [[{w.name()} {w.name()}]] ({w.year(1800, 1990)}), "
                                   f"{r.choice(ROLES)}" for _ in range(r.randint(2, 4))))
        if r.random() < 0.1:
            parts.append(f"[[File:{title} {w.year(1990, 2022)}.svg|thumb|The {w.noun()} in "
                         f"{w.year(1990, 2022)}]]")
    parts.append("== References ==\n{{Reflist}}")
    parts.append(f"<!-- maintenance: check the {w.noun()} dates -->\n[[Category:{country}]]")
    return "\n\n".join(parts)


def talk_page(subject: str, w: Words) -> str:
    r = w.rng
    sig = (f"[[User:{TALK_ONLY_WORD}|{TALK_ONLY_WORD}]] ([[User talk:{TALK_ONLY_WORD}|talk]]) "
           f"{r.randint(10, 23)}:{r.randint(10, 59)}, {r.randint(1, 28)} {r.choice(MONTHS)} "
           f"{r.randint(2008, 2023)} (UTC)")
    return (f"{{{{WikiProject banner shell|class=C}}}}\n== Sources ==\nThe second section of "
            f"[[{subject}]] needs a better source, {TALK_ONLY_WORD} thinks. {sig}\n"
            f":{TALK_ONLY_WORD} here again: agreed, {TALK_ONLY_WORD} will look. {sig}")
