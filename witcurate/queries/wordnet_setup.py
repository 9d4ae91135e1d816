"""Make NLTK's WordNet data available offline: `python -m witcurate.queries.wordnet_setup DIR`.

Result: DIR/corpora/wordnet/ (or nltk's wordnet.zip there), read with NLTK_DATA=DIR.
1. nltk.download('wordnet') into DIR, given `--timeout` seconds (skipped with `--no-download`);
2. otherwise Debian's WordNet 3.0 files (packages wordnet-base and wordnet-sense-index, in
   /usr/share/wordnet) are copied, and the `lexnames` file NLTK's reader needs but Debian does
   not ship is written from the table in the lexnames(5WN) manual page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading

from witcurate.errors import UserError

DEBIAN_DIR = "/usr/share/wordnet"
# The files NLTK's WordNetCorpusReader opens (lexnames is written, the rest copied).
REQUIRED = ("data.noun", "data.verb", "data.adj", "data.adv",
            "index.noun", "index.verb", "index.adj", "index.adv",
            "noun.exc", "verb.exc", "adj.exc", "adv.exc")
OPTIONAL = ("index.sense", "cntlist.rev", "cntlist", "frames.vrb", "sents.vrb", "sentidx.vrb")

# lexnames(5WN): file number, lexicographer file name; the syntactic category is 1 noun,
# 2 verb, 3 adjective, 4 adverb.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
]
_CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{_CATEGORY[name.split('.')[0]]}\n"
                   for i, name in enumerate(LEXNAMES))


def target_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "corpora", "wordnet")


def is_ready(data_dir: str) -> bool:
    corpora = os.path.join(data_dir, "corpora")
    return (os.path.isfile(os.path.join(corpora, "wordnet", "lexnames"))
            and os.path.isfile(os.path.join(corpora, "wordnet", "data.noun"))) or \
        os.path.isfile(os.path.join(corpora, "wordnet.zip"))


def setup_from_debian(data_dir: str, source: str = DEBIAN_DIR) -> str:
    """Copy Debian's WordNet 3.0 files into DATA_DIR/corpora/wordnet and write `lexnames`."""
    missing = [f for f in REQUIRED if not os.path.isfile(os.path.join(source, f))]
    if missing:
        raise UserError(f"WordNet files missing from {source}: {', '.join(missing)}",
                        "apt-get install -y wordnet-base wordnet-sense-index")
    dest = target_dir(data_dir)
    os.makedirs(dest, exist_ok=True)
    for name in REQUIRED + OPTIONAL:
        src = os.path.join(source, name)
        if os.path.isfile(src):
            shutil.copyfile(src, os.path.join(dest, name))
    with open(os.path.join(dest, "lexnames"), "w", encoding="ascii") as f:
        f.write(lexnames_text())
    return dest


def try_download(data_dir: str, timeout: float) -> bool:
    """nltk.download('wordnet') with a time limit; True if the data is then in place."""
    import socket

    import nltk
    result: dict[str, bool] = {}

    def work() -> None:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)
        try:
            result["ok"] = bool(nltk.download("wordnet", download_dir=data_dir, quiet=True,
                                              raise_on_error=False))
        except Exception:          # any network or archive failure means: fall back
            result["ok"] = False
        finally:
            socket.setdefaulttimeout(old)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result.get("ok")) and is_ready(data_dir)


def setup(data_dir: str, download: bool = True, timeout: float = 20.0,
          source: str = DEBIAN_DIR) -> str:
    """Make WordNet available under data_dir; returns how ("present", "nltk", "debian")."""
    os.makedirs(data_dir, exist_ok=True)
    if is_ready(data_dir):
        return "present"
    if download and try_download(data_dir, timeout):
        return "nltk"
    setup_from_debian(data_dir, source)
    return "debian"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m witcurate.queries.wordnet_setup",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", metavar="DIR", help="NLTK data directory to fill (use NLTK_DATA=DIR)")
    parser.add_argument("--no-download", action="store_true", help="skip nltk.download, copy Debian's files")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds given to nltk.download")
    parser.add_argument("--source", default=DEBIAN_DIR, help="directory holding Debian's WordNet files")
    args = parser.parse_args(argv)
    try:
        how = setup(args.data_dir, download=not args.no_download, timeout=args.timeout,
                    source=args.source)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from witcurate.queries.wordnet import synset_names
    names = synset_names(args.data_dir)
    print(f"WordNet ready in {target_dir(args.data_dir)} ({how}): {len(names)} unique synset names")
    return 0


if __name__ == "__main__":
    sys.exit(main())
