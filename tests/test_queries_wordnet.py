"""WordNet head names, named as nltk's reader names synsets, on data set up offline from
Debian's packages."""

from __future__ import annotations

import os
import random
import zipfile

import pytest

from queries_support import wordnet_data_dir
from witcurate.errors import UserError
from witcurate.queries import wordnet, wordnet_setup


@pytest.fixture(scope="session")
def wordnet_dir(tmp_path_factory):
    return wordnet_data_dir(tmp_path_factory)


def test_lexnames_table():
    lines = wordnet_setup.lexnames_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[1] == "01\tadj.pert\t3"
    assert lines[2] == "02\tadv.all\t4" and lines[3] == "03\tnoun.Tops\t1"
    assert lines[5] == "05\tnoun.animal\t1" and lines[29] == "29\tverb.body\t2"
    assert lines[44] == "44\tadj.ppl\t3"


def test_head_name_rule():
    assert wordnet.head_name("hot_dog.n.01") == "hot dog"
    assert wordnet.head_name("a.d..n.01") == "a"          # the recipe's first-dot rule
    assert wordnet.head_name(".22_caliber.a.01") == ""


def test_wordnet_30_head_names(wordnet_dir):
    names = wordnet.synset_names(wordnet_dir)
    assert len(names) == 86_555
    assert sum(len(s) for s in names.values()) == 117_659
    assert "dog.n.01" in names["dog"] and "dog.n.03" in names["dog"]
    assert "new_york.n.01" in names["new york"]
    assert names["einstein"] == ("einstein.n.01",)
    assert "car.n.01" in names["car"]
    assert not any("_" in n for n in names)
    assert wordnet_setup.is_ready(wordnet_dir)
    assert wordnet_setup.setup(wordnet_dir, download=False) == "present"
    assert sorted(os.listdir(os.path.join(wordnet_dir, "corpora", "wordnet"))) == sorted(
        set(wordnet_setup.REQUIRED + wordnet_setup.OPTIONAL + ("lexnames",)))


def test_every_kind_of_synset_is_named_as_nltk_names_it(wordnet_dir):
    """The names read from the files equal nltk's reader's, synset by synset: every adjective
    satellite (numbered among the lemma's satellites only), every first lemma with a syntactic
    marker or a dot, and 3,000 others drawn at random; and none is named twice."""
    synsets = list(wordnet.synsets_in_order(wordnet.find_wordnet(wordnet_dir)))
    assert len(synsets) == 117_659 and len({name for _, _, name in synsets}) == 117_659
    assert [pos for pos, _, _ in synsets[:1]] == ["a"] and synsets[-1][0] == "v"   # nltk's order
    tricky = [s for s in synsets if s[0] == "s" or "(" in s[2] or s[2].count(".") > 2]
    sample = tricky + random.Random(0).sample(synsets, 3_000)
    assert len(tricky) > 10_000
    reader = wordnet.load_reader(wordnet_dir)
    nltk_names = [reader.synset_from_pos_and_offset(pos, offset).name()
                  for pos, offset, _ in sample]
    assert nltk_names == [name for _, _, name in sample]


def _wordnet_copy(wordnet_dir, tmp_path):
    """A copy of the unpacked WordNet files to change (links to the originals, not copies)."""
    source = os.path.join(wordnet_dir, "corpora", "wordnet")
    copy = tmp_path / "corpora" / "wordnet"
    copy.mkdir(parents=True)
    for name in os.listdir(source):
        (copy / name).symlink_to(os.path.join(source, name))
    return source, copy


def test_nltks_zipped_wordnet_gives_the_same_names(wordnet_dir, tmp_path):
    source, _ = _wordnet_copy(wordnet_dir, tmp_path / "plain")
    zipped = tmp_path / "zipped" / "corpora" / "wordnet.zip"        # nltk.download's layout
    zipped.parent.mkdir(parents=True)
    with zipfile.ZipFile(zipped, "w") as z:
        for name in os.listdir(source):
            z.write(os.path.join(source, name), f"wordnet/{name}")
    assert wordnet.find_wordnet(str(tmp_path / "zipped")) == str(zipped)
    assert wordnet.synset_names(str(tmp_path / "zipped")) == wordnet.synset_names(wordnet_dir)


def test_a_damaged_index_names_the_file_and_line(wordnet_dir, tmp_path):
    source, copy = _wordnet_copy(wordnet_dir, tmp_path)
    lines = open(os.path.join(source, "index.noun"), encoding="utf8").read().splitlines(True)
    (copy / "index.noun").unlink()
    (copy / "index.noun").write_text("".join(l for l in lines if not l.startswith("dog n ")))
    dog = r"inconsistent: data\.noun line '0\d+ 05 n 0\d dog "
    with pytest.raises(UserError, match=dog) as err:
        wordnet.synset_names(str(tmp_path))
    assert "make wordnet" in err.value.hint
    (copy / "index.noun").write_text("".join(lines) + "cat n x\n")
    with pytest.raises(UserError, match=r"damaged: index\.noun line 'cat n x' does not parse"):
        wordnet.synset_names(str(tmp_path))


def test_missing_wordnet_says_how_to_get_it(tmp_path, monkeypatch):
    import nltk
    monkeypatch.chdir(tmp_path)                      # no ./.nltk_data from `make wordnet`
    monkeypatch.setenv("NLTK_DATA", str(tmp_path))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])
    with pytest.raises(UserError) as err:
        wordnet.synset_names(str(tmp_path / "empty"))
    assert "WordNet data not found" in str(err.value) and "make wordnet" in err.value.hint


def test_setup_from_a_directory_without_wordnet_files(tmp_path):
    with pytest.raises(UserError, match="WordNet files missing"):
        wordnet_setup.setup_from_debian(str(tmp_path / "out"), source=str(tmp_path))
