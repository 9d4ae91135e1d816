"""Caption normalisation and alt-text rules: each rule returns True or a Drop naming the reason."""

from __future__ import annotations

import functools
import html
import re
import unicodedata
import ftfy

from witcurate.filters.base import Decision, Drop, first_drop

_SPACE_RE = re.compile(r"\s+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# "IMG_1234.jpg", "DSC00042", "photo-2.png", "Screenshot 2020-01-01 at 10.00.00.png"
_FILENAME_RE = re.compile(
    r"^\s*[\w\-. ()]*\.(jpe?g|png|gif|webp|bmp|tiff?|svg|heic|avif)\s*$|"
    r"^\s*(img|dsc|dscn|dcim|pxl|screenshot|image|photo|pic|file)[\s_\-]*\d+[\w\-]*\s*$",
    re.IGNORECASE)
# Alt text that says nothing about the image (compared lower-cased, edge punctuation stripped).
_BOILERPLATE = frozenset("""
image images img photo photos picture pictures pic thumbnail thumb logo icon banner placeholder
untitled alt null none undefined nan spacer blank avatar advertisement loading spinner
""".split()) | frozenset({
    "click here", "click to enlarge", "read more", "learn more", "see more", "view larger",
    "view image", "open image", "no alt text", "image not found", "default avatar",
    "profile picture", "untitled image", "image placeholder", "featured image", "n/a",
})


def normalize_caption(text: str) -> str:
    """Fix mojibake, unescape HTML entities, drop control characters, collapse whitespace."""
    text = ftfy.fix_text(text, normalization="NFC")
    text = html.unescape(text)
    text = _CONTROL_RE.sub("", text)
    text = unicodedata.normalize("NFC", text)
    return _SPACE_RE.sub(" ", text).strip()


def caption_length(text: str, min_words: int, min_chars: int, max_chars: int) -> Decision:
    if len(text) < min_chars or len(text.split()) < min_words:
        return Drop("caption_too_short")
    if len(text) > max_chars:
        return Drop("caption_too_long")
    return True


def not_filename(text: str) -> Decision:
    return Drop("caption_filename") if _FILENAME_RE.match(text) else True


def not_boilerplate(text: str) -> Decision:
    low = text.lower().strip(" .!:-")
    if low in _BOILERPLATE:
        return Drop("caption_boilerplate")
    return True


def has_letters(text: str) -> Decision:
    letters = sum(ch.isalpha() for ch in text)
    return True if letters >= max(2, len(text) // 4) else Drop("caption_no_letters")


def caption_rules(text: str, min_words: int, min_chars: int, max_chars: int) -> Decision:
    """All caption rules in order; the first failing one names the reason.

    Filename and boilerplate rules come first so "IMG_1234.jpg" is reported as a filename,
    not as too short.
    """
    if not text:
        return Drop("caption_empty")
    length = functools.partial(caption_length, min_words=min_words, min_chars=min_chars,
                               max_chars=max_chars)
    return first_drop(rule(text) for rule in (not_filename, not_boilerplate, has_letters, length))


_LANG_READY = False


def is_english(text: str, min_probability: float = 0.5) -> Decision:
    """Offline language identification (langdetect's bundled profiles), seeded so it is
    deterministic. Texts without letters are left to the other rules."""
    global _LANG_READY
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException
    if not _LANG_READY:
        DetectorFactory.seed = 0
        _LANG_READY = True
    try:
        langs = detect_langs(text)
    except LangDetectException:
        return True
    english = sum(l.prob for l in langs if l.lang == "en")
    return True if english >= min_probability else Drop("caption_not_english")
