"""Off-target images: pictures whose alt text names a scene of the demo's vocabulary, but that
show no such scene. Banners and screenshots with the caption's words drawn as text, charts in
the caption's colour, logos: the kind of web image a caption-based filter lets through, and from
which a model learns little about what the words look like.

Each drawing carries the caption's colour (and a banner the scene's texture), so a CLIP score,
which mostly reads colour and scene in the demo's small scorer, may well like it; none shows a
shape. Everything is deterministic from the seed passed in.
"""

from __future__ import annotations

import random

from PIL import Image, ImageDraw, ImageFont

from witcurate.demo import draw
from witcurate.demo.vocab import COLOURS, COUNT_WORDS, SCENES, shape_word

STYLES = ("banner", "chart", "logo", "screenshot")
STYLE_WEIGHTS = (4, 1.5, 1.5, 3)         # banners and screenshots, with the most of the scene, most often

_PALE = (244, 244, 240)
_INK = (30, 30, 34)


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=max(6, size))


def _words(spec: dict) -> str:
    """The query words a banner or a screenshot shows: count, colour, shape."""
    count = "" if spec["count"] == 1 else COUNT_WORDS[spec["count"]] + " "
    return f"{count}{spec['colour']} {shape_word(spec['shape'], spec['count'])}"


def _ink_on(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    lum = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return _INK if lum > 128 else (250, 250, 250)


def _text_lines(d: ImageDraw.ImageDraw, lines: list[str], box: tuple[int, int, int, int], colour) -> None:
    """Lines of text filling `box` (x0, y0, x1, y1) as large as they fit."""
    x0, y0, x1, y1 = box
    size = max(6, (y1 - y0) // max(1, len(lines)))
    while size > 6:
        font = _font(size)
        if all(d.textlength(t, font=font) <= x1 - x0 for t in lines):
            break
        size -= 1
    font = _font(size)
    for k, text in enumerate(lines):
        d.text((x0, y0 + k * size), text, fill=colour, font=font)


def banner(spec: dict, rng: random.Random, w: int, h: int) -> Image.Image:
    """An advertising banner: the scene's texture behind a block of the caption's colour that
    carries the caption's words in capitals."""
    img = draw.scene_background(spec["scene"], w, h, rng)
    fill = COLOURS[spec["colour"]]
    d = ImageDraw.Draw(img)
    top, bottom = int(h * rng.uniform(0.2, 0.35)), int(h * rng.uniform(0.65, 0.8))
    d.rectangle([0, top, w, bottom], fill=fill)
    pad = max(2, w // 20)
    lines = [_words(spec).upper(), rng.choice(("SALE", "NEW", "SHOP NOW", "50% OFF", "FREE"))]
    _text_lines(d, lines, (pad, top + pad // 2, w - pad, bottom - pad // 2), _ink_on(fill))
    return img


def chart(spec: dict, rng: random.Random, w: int, h: int) -> Image.Image:
    """A bar chart on a pale background: bars in the caption's colour, axes and a title."""
    img = Image.new("RGB", (w, h), _PALE)
    d = ImageDraw.Draw(img)
    fill = COLOURS[spec["colour"]]
    left, base, top = w // 8, h - h // 8, h // 4
    _text_lines(d, [_words(spec)], (left, 2, w - 2, top - 2), _INK)
    d.line([(left, top), (left, base), (w - 4, base)], fill=_INK, width=max(1, w // 96))
    bars = rng.randint(3, 7)
    step = (w - 4 - left) / bars
    for k in range(bars):
        height = rng.uniform(0.15, 1.0) * (base - top)
        d.rectangle([left + k * step + step * 0.15, base - height, left + (k + 1) * step - step * 0.15, base],
                    fill=fill)
    return img


def logo(spec: dict, rng: random.Random, w: int, h: int) -> Image.Image:
    """A logo: a rounded badge in the caption's colour with a monogram, and a word mark."""
    img = Image.new("RGB", (w, h), _PALE if rng.random() < 0.7 else (255, 255, 255))
    d = ImageDraw.Draw(img)
    fill = COLOURS[spec["colour"]]
    side = int(min(w, h) * rng.uniform(0.45, 0.6))
    x0, y0 = (w - side) // 2, int(h * 0.08)
    d.rounded_rectangle([x0, y0, x0 + side, y0 + side], radius=side // 4, fill=fill)
    mono = (spec["colour"][0] + spec["shape"][0]).upper()
    _text_lines(d, [mono], (x0 + side // 6, y0 + side // 6, x0 + side - side // 6, y0 + side - side // 6),
                _ink_on(fill))
    _text_lines(d, [_words(spec)], (w // 10, y0 + side + h // 20, w - w // 10, h - 2), _INK)
    return img


def screenshot(spec: dict, rng: random.Random, w: int, h: int) -> Image.Image:
    """A screenshot of a page: a window bar, a header in the caption's colour with the words, and
    grey lines of text."""
    img = Image.new("RGB", (w, h), (250, 250, 250))
    d = ImageDraw.Draw(img)
    fill = COLOURS[spec["colour"]]
    bar = max(4, h // 12)
    d.rectangle([0, 0, w, bar], fill=(205, 205, 210))
    for k in range(3):
        d.ellipse([4 + k * bar, bar // 4, 4 + k * bar + bar // 2, bar // 4 + bar // 2], fill=(150, 150, 155))
    header = bar + int(h * 0.25)
    d.rectangle([0, bar, w, header], fill=fill)
    _text_lines(d, [_words(spec), SCENES[spec["scene"]][1]], (6, bar + 3, w - 6, header - 3), _ink_on(fill))
    y = header + h // 16
    while y < h - 4:
        d.line([(6, y), (6 + int((w - 12) * rng.uniform(0.4, 1.0)), y)], fill=(170, 170, 175),
               width=max(1, h // 48))
        y += max(4, h // 14)
    return img


# What a curated caption set says of such images: what they are, not the scene their words name.
NAMED_CAPTIONS = {
    "banner": ("an advertising banner", "a {colour} banner with text", "a web banner that says {words}"),
    "chart": ("a bar chart", "a {colour} bar chart", "a chart with a title"),
    "logo": ("a logo", "a {colour} logo", "a company logo"),
    "screenshot": ("a screenshot of a web page", "a screenshot", "a screenshot of a page about {words}"),
}


def named_caption(spec: dict, style: str, rng: random.Random) -> str:
    """A caption that names the image's kind, as a curated set would caption it."""
    return rng.choice(NAMED_CAPTIONS[style]).format(colour=spec["colour"], words=_words(spec))


def render(spec: dict, style: str, seed: str, width: int, height: int) -> Image.Image:
    """The off-target image of `style` for a caption about `spec`."""
    rng = random.Random(f"offtarget:{seed}")
    return {"banner": banner, "chart": chart, "logo": logo, "screenshot": screenshot}[style](
        spec, rng, width, height)
