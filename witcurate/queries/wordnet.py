"""WordNet synset head names, named as nltk's WordNet reader names synsets.

An entry is a synset name's head: `name.split('.')[0]` with `_` as a space ("hot_dog.n.01" ->
"hot dog"), as in the WIT/MetaCLIP recipe. Taking everything before the *first* dot is the
recipe's rule; it cuts short the 26 WordNet 3.0 synset names whose head holds a dot itself
("st._petersburg.n.01" -> "st", "ph.d..n.01" -> "ph", ".22_caliber.a.01" -> "", which has no
word and becomes a reject). WordNet 3.0 gives 117,659 synsets and 86,555 unique names
(MetaCLIP's 86,654 adds the numbers 0 to 99).

The data is looked for in the configured directory (`queries.wordnet_dir`), then `NLTK_DATA`,
nltk's default places and `./.nltk_data`, as `corpora/wordnet/` (or `corpora/wordnet.zip`).
`python -m witcurate.queries.wordnet_setup DIR` (or `make wordnet`) puts it there offline.
The names come straight from the data and index files (`synsets_in_order`); nltk's reader
(`load_reader`) is what they are checked against.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
import zipfile
from typing import Iterator

from witcurate.errors import UserError

LOCAL_DIR = ".nltk_data"      # where `make wordnet` puts it, relative to the repository
HINT = ("run `make wordnet` (or `python -m witcurate.queries.wordnet_setup DIR` and set "
        "NLTK_DATA=DIR or queries.wordnet_dir: DIR), or set queries.wordnet: false")


def head_name(synset_name: str) -> str:
    return synset_name.split(".")[0].replace("_", " ")


def find_wordnet(data_dir: str = "") -> str:
    """Path of the WordNet corpus nltk would read, or UserError saying how to get it."""
    import nltk
    paths = ([data_dir] if data_dir else []) + [
        p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p] + list(nltk.data.path) + [
        LOCAL_DIR]
    for base in dict.fromkeys(paths):
        unpacked = os.path.join(base, "corpora", "wordnet")
        if all(os.path.isfile(os.path.join(unpacked, f)) for f in ("lexnames", "data.noun")):
            return os.path.abspath(unpacked)
        zipped = os.path.join(base, "corpora", "wordnet.zip")
        if os.path.isfile(zipped):
            return os.path.abspath(zipped)
    where = data_dir or os.environ.get("NLTK_DATA") or "nltk's default data directories"
    raise UserError(f"WordNet data not found (looked in {where})", HINT)


def load_reader(data_dir: str = ""):
    """nltk's WordNet reader over the data `find_wordnet` finds."""
    return _open_reader(find_wordnet(data_dir))


def _open_reader(path: str):
    import nltk
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNetReader(WordNetCorpusReader):
        """nltk's reader without the Open Multilingual Wordnet mapping.

        The stock constructor maps synsets to those of whatever corpus nltk finds under the
        name "wordnet" (for OMW data): seconds of work, and a second WordNet looked up on
        nltk's path. Only English synset names are read here, so the map is not built.
        """

        def map_wn(self, version="wordnet"):
            return None

    base = os.path.dirname(os.path.dirname(path))
    if base not in nltk.data.path:
        nltk.data.path.append(base)    # nltk only opens corpora under its data path
    if path.endswith(".zip"):
        root = nltk.data.find("corpora/wordnet.zip/wordnet/", paths=[base])
    else:
        root = nltk.data.FileSystemPathPointer(path)
    try:
        with warnings.catch_warnings():   # "multilingual functions are not available": not used
            warnings.simplefilter("ignore")
            return EnglishWordNetReader(root, None)
    except (OSError, LookupError, ValueError, PermissionError) as e:
        raise UserError(f"WordNet data at {path} cannot be read: {e}", HINT) from None


def synset_names(data_dir: str = "") -> dict[str, tuple[str, ...]]:
    """Every unique head name -> the synsets (e.g. "dog.n.01") it heads, in WordNet order.

    The result is kept per data directory for the life of the process (WordNet files do not
    change under a running pipeline).
    """
    return dict(_names_at(find_wordnet(data_dir)))


@functools.lru_cache(maxsize=4)
def _names_at(path: str) -> dict[str, tuple[str, ...]]:
    names: dict[str, list[str]] = {}
    for _pos, _offset, full in synsets_in_order(path):
        names.setdefault(head_name(full), []).append(full)
    return {name: tuple(synsets) for name, synsets in names.items()}


# The order nltk's `all_synsets()` walks the data files in (its _FILEMAP): adjectives, with
# their satellites, then adverbs, nouns and verbs.
_FILES = ("adj", "adv", "noun", "verb")
# A lemma's trailing syntactic marker, "galore(ip)" -> "galore" (nltk's pattern).
_MARKER = re.compile(r"(.*?)(\([^()]*\))?$")


def synsets_in_order(path: str) -> Iterator[tuple[str, int, str]]:
    """(part of speech, offset, name) of every synset, named as nltk's WordNet reader names it
    and in the order its `all_synsets()` yields them, read straight from the data and index
    files at `path` (what `find_wordnet` returns).

    nltk's reader builds a full Synset for each of the 117,659 (gloss, lemmas, pointers, sense
    keys): about 15 s here, for a name that needs only two fields of the data line and one index
    line. Its naming rule: the first lemma of the synset, without its syntactic marker and
    lower-cased; its part of speech (`s` for an adjective satellite); and the synset's 1-based
    position among that lemma's senses in the index file, counting only satellites for a
    satellite (nltk 3.9+). tests/test_queries_wordnet.py checks the result against nltk's own
    reader.
    """
    senses: dict[tuple[str, str], list[str]] = {}
    for suffix in _FILES:
        for line in _entry_lines(path, f"index.{suffix}"):
            # lemma pos synset_cnt p_cnt [ptr_symbol...] sense_cnt tagsense_cnt offset...
            fields = line.split()
            try:
                count, pointers = int(fields[2]), int(fields[3])
            except (IndexError, ValueError):
                raise UserError(f"WordNet data at {path} is damaged: index.{suffix} line "
                                f"{line[:80]!r} does not parse", HINT) from None
            senses[fields[0], fields[1]] = fields[6 + pointers:6 + pointers + count]
    for suffix in _FILES:
        # offset lex_filenum ss_type w_cnt word lex_id ...: the first word is the lemma named
        rows = [line.split(" ", 5) for line in _entry_lines(path, f"data.{suffix}")]
        satellites = {row[0] for row in rows if len(row) > 2 and row[2] == "s"}
        for row in rows:
            try:
                offset, _lexfile, pos, _count, word, _rest = row
                lemma = _MARKER.match(word).group(1).lower()
                offsets = senses[lemma, "a" if pos == "s" else pos]
                if pos == "s":
                    offsets = [o for o in offsets if o in satellites]
                yield pos, int(offset), f"{lemma}.{pos}.{offsets.index(offset) + 1:02d}"
            except (KeyError, ValueError) as e:
                raise UserError(f"WordNet data at {path} is inconsistent: data.{suffix} line "
                                f"{' '.join(row)[:80]!r} does not parse or names no sense of "
                                f"index.{suffix} ({e})", HINT) from None


def _entry_lines(path: str, name: str) -> list[str]:
    """The entry lines of one WordNet file, in an unpacked `corpora/wordnet` directory or nltk's
    `wordnet.zip`: without the license header (lines that start with a space)."""
    try:
        if path.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                text = z.read(f"wordnet/{name}").decode("utf8")
        else:
            with open(os.path.join(path, name), encoding="utf8") as f:
                text = f.read()
    except (OSError, KeyError, UnicodeDecodeError, zipfile.BadZipFile) as e:
        raise UserError(f"WordNet data at {path} cannot be read ({name}): {e}", HINT) from None
    return [line for line in text.split("\n") if line and not line[0].isspace()]
