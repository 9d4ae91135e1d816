"""WordNet head names through nltk's reader, on data set up offline from Debian's packages."""

from __future__ import annotations

import os

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
