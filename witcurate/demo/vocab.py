"""The demo world's vocabulary: what images show and how captions and articles name it.

One module so that the drawn images, their captions and the generated Wikipedia articles agree
on every word: the queries stage must find these words in the dump for captions to match.
"""

from __future__ import annotations

import random

# Colour name -> RGB fill. Chosen to stay distinct after JPEG and a 64 px resize.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (245, 220, 30),
    "purple": (140, 40, 170),
    "orange": (250, 140, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "pink": (250, 140, 190),
    "brown": (120, 70, 30),
}

# Shape name -> plural.
SHAPES: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "heart": "hearts",
    "ring": "rings",
    "cross": "crosses",
    "diamond": "diamonds",
}

# Scene name -> (phrase placing objects in it, a noun phrase for the scene itself).
SCENES: dict[str, tuple[str, str]] = {
    "grass": ("on the grass", "green grass"),
    "sky": ("in the sky", "a blue sky"),
    "water": ("on the water", "calm water"),
    "sand": ("on the sand", "a sandy beach"),
    "snow": ("in the snow", "fresh snow"),
    "night": ("in the night sky", "the night sky"),
}

COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}

# Caption templates. {n}: the count word ("a"/"an" for one object), {N}: capitalised ("One",
# "Two", ...), {colour}, {shape} (plural when the count is above one), {where}: the scene
# phrase, {scene}: the scene noun phrase. Every template names count, colour, shape and scene.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{n} {colour} {shape} {where}",
    "a photo of {n} {colour} {shape} {where}",
    "a picture of {n} {colour} {shape} {where}",
    "{N} {colour} {shape} {where}.",
    "{scene} with {n} {colour} {shape}",
    "{n} {colour} {shape} {where}, a drawing",
    "an image of {n} {colour} {shape} {where}",
)

# Alt text that says nothing about the image, as found all over the web.
JUNK_CAPTIONS: tuple[str, ...] = (
    "IMG_{d4}.jpg", "image", "click here", "photo", "DSC{d5}.JPG", "untitled", "",
    "image{d3}.png", "thumbnail", "Screenshot {d4}",
)

# Zero-shot evaluation: the class name is the shape; prompts mirror the caption style.
ZEROSHOT_TEMPLATES: tuple[str, ...] = (
    "a {}",
    "a photo of a {}",
    "a picture of a {}",
    "a {} on the grass",
    "a {} in the sky",
    "a {} on the water",
    "a {} on the sand",
    "a {} in the snow",
    "a {} in the night sky",
)


def shape_word(shape: str, count: int) -> str:
    return shape if count == 1 else SHAPES[shape]


def caption_for(spec: dict, template: str) -> str:
    """The caption of a drawing spec (count, colour, shape, scene) under one template."""
    count, colour = spec["count"], spec["colour"]
    if count == 1:
        n = "an" if colour[0] in "aeiou" else "a"
    else:
        n = COUNT_WORDS[count]
    where, scene = SCENES[spec["scene"]]
    return template.format(n=n, N=COUNT_WORDS[count].capitalize(), colour=colour,
                           shape=shape_word(spec["shape"], count), where=where, scene=scene)


def random_caption(spec: dict, rng: random.Random) -> str:
    return caption_for(spec, rng.choice(CAPTION_TEMPLATES))


def junk_caption(rng: random.Random) -> str:
    text = rng.choice(JUNK_CAPTIONS)
    return text.format(d3=f"{rng.randrange(1000):03d}", d4=f"{rng.randrange(10000):04d}",
                       d5=f"{rng.randrange(100000):05d}")


def caption_words() -> set[str]:
    """Every word a clean caption can hold (the queries stage should find each one)."""
    words: set[str] = set()
    for spec_count in (1, 2, 3, 4):
        for template in CAPTION_TEMPLATES:
            for colour in COLOURS:
                for shape in SHAPES:
                    for scene in SCENES:
                        spec = {"count": spec_count, "colour": colour, "shape": shape, "scene": scene}
                        words.update(w.strip(".,") for w in caption_for(spec, template).split())
    words.discard("")
    return words
