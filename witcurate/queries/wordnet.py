"""WordNet synset head names through nltk's WordNet reader.

An entry is a synset name's head: `name.split('.')[0]` with `_` as a space ("hot_dog.n.01" ->
"hot dog"), as in the WIT/MetaCLIP recipe. Taking everything before the *first* dot is the
recipe's rule; it cuts short the 26 WordNet 3.0 synset names whose head holds a dot itself
("st._petersburg.n.01" -> "st", "ph.d..n.01" -> "ph", ".22_caliber.a.01" -> "", which has no
word and becomes a reject). WordNet 3.0 gives 117,659 synsets and 86,555 unique names
(MetaCLIP's 86,654 adds the numbers 0 to 99).

The data is looked for in the configured directory (`queries.wordnet_dir`), then `NLTK_DATA`,
nltk's default places and `./.nltk_data`, as `corpora/wordnet/` (or `corpora/wordnet.zip`).
`python -m witcurate.queries.wordnet_setup DIR` (or `make wordnet`) puts it there offline.
"""

from __future__ import annotations

import functools
import gc
import os
import warnings

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

    Reading all 117,659 synsets takes seconds, so the result is kept per data directory for the
    life of the process (WordNet files do not change under a running pipeline).
    """
    return dict(_names_at(find_wordnet(data_dir)))


@functools.lru_cache(maxsize=4)
def _names_at(path: str) -> dict[str, tuple[str, ...]]:
    names = _read_names(_open_reader(path))
    gc.collect()    # the reader leaves ~2M objects in cycles; free them now, not at random later
    return names


def _read_names(reader) -> dict[str, tuple[str, ...]]:
    names: dict[str, list[str]] = {}
    for synset in reader.all_synsets():
        full = synset.name()
        names.setdefault(head_name(full), []).append(full)
    return {name: tuple(synsets) for name, synsets in names.items()}
