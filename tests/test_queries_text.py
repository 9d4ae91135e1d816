"""Wikitext to text, unigram/bigram counting under the shared tokenisation, and PMI."""

from __future__ import annotations

import math
import pickle
import random

import pytest

import wikitext_reference
from queries_support import ALPHA, BETA, ENWIKI
from witcurate.queries import counts, dump, lookups, pmi, wikitext


def test_wikitext_keeps_prose_and_link_text_drops_markup():
    text = wikitext.to_text(
        "'''Albedo''' ({{IPAc-en|æ|l|ˈ|b|iː|d|oʊ}}) is the [[diffuse reflection|diffuse]] "
        "[[reflectivity]] of a [[surface]].<ref name=a>{{cite book|title=Optics}}</ref>\n"
        "== Terrestrial albedo ==\n"
        "Fresh snow&nbsp;reflects &amp; [https://example.org more] <small>light</small>."
        "<!-- hidden note -->\n"
        "[[File:Albedo-e hg.svg|thumb|Percentage of diffusely reflected sunlight]]\n"
        '{| class="wikitable"\n|-\n! Surface !! Albedo\n|-\n| Snow || 0.9\n|}\n'
        "<math>a = b</math> [[Category:Radiometry]] [[de:Albedo]] __NOTOC__\n"
        "* [[:Category:Optics|optics]] list item")
    lines = wikitext.lines(text)
    assert lines[0] == "Albedo (" and lines[1].startswith(") is the diffuse reflectivity of a surface.")
    assert "Terrestrial albedo" in lines
    assert "Fresh snow reflects & more light." in lines
    for gone in ("IPAc", "cite", "Optics", "hidden", "Percentage", "Snow ||", "0.9", "wikitable",
                 "a = b", "Radiometry", "de:", "NOTOC", "http", "'''", "[[", "{{", "<"):
        assert gone not in text, gone
    assert lines[-1] == "list item"          # the [[:Category:...]] link is dropped with its text


def test_removed_elements_break_lines_so_no_false_bigram():
    text = wikitext.to_text("born {{birth date|1990|1|1}} in Paris<ref>x</ref> yesterday")
    assert wikitext.lines(text) == ["born", "in Paris", "yesterday"]
    c = counts.count_text(text)
    assert "born in" not in c.bigrams and "Paris yesterday" not in c.bigrams
    assert c.bigrams == {"in Paris": 1}


def test_handmade_pages_text():
    assert wikitext.lines(wikitext.to_text(ALPHA)) == ["cat sat.", "cat sat.", "dog ran"]
    assert wikitext.lines(wikitext.to_text(BETA)) == ["cat sat", "cat sat on Mouse"]


@pytest.fixture(scope="module")
def enwiki_articles():
    return [p for p in dump.iter_pages(str(ENWIKI)) if dump.is_article(p)]


def test_enwiki_fixture_text_has_no_templates_refs_or_tables(enwiki_articles):
    sample = enwiki_articles[:25]
    texts = [wikitext.to_text(p.text) for p in sample]
    # prose survives, markup does not: the text is a fair share of the wikitext, not all of it
    ratio = sum(map(len, texts)) / sum(len(p.text) for p in sample)
    assert 0.25 < ratio < 0.8
    for page, text in zip(sample, texts):
        assert text, page.title
        for marker in ("{{", "}}", "<ref", "</ref>", "{|", "|}", "[[", "]]", "<!--"):
            assert marker not in text, (page.title, marker)
    first = texts[0]
    assert sample[0].title == "Anarchism" and first.startswith("Anarchism is a political philosophy")
    total = counts.count_texts(texts)
    top = [w for w, _ in total.unigrams.most_common(6)]
    assert top[:3] == ["the", "of", "and"]
    assert total.words == sum(total.unigrams.values()) > 100_000
    assert total.bigrams["political philosophy"] >= 3


# Every kind of node, and the corners where a piece is rendered rather than walked: markup in a
# link title or a tag name, entities (one the tokenizer leaves as text), nowiki, elements left open.
EDGE_CASES = (
    "==A {{tpl|x}} heading==\n"
    "[[{{title}}|shown]] [[Foo&amp;Bar]] [[:de:Foo]] [[de:Foo]] [[File:x.jpg|thumb|[[nested]] cap]] "
    "[[Paris|the {{lang|fr|capitale}} city]] [[a|b|c]]\n"
    "<{{tagname}}>inside</{{tagname}}> <nowiki>[[raw]] &amp; {{raw}}</nowiki> <br> <br/> "
    "<ref name=x/> <ref>cite {{cite web|url=http://x}}</ref> http://bare.example/x "
    "[http://x.example a [[linked]] title] [http://y.example]\n"
    "&#x41;&#65;&#99999999;&bogus; &nbsp;\n"
    "<span>never closed\n{| class=x\n|-\n| cell || cell\n|}\n{{{arg|default}}}\n"
    "; term : definition\n----\n<div style=\"{{x}}\">div text</div> <poem>a poem</poem>\n"
    "<!-- never closed comment")


def test_token_walk_gives_the_node_trees_text(enwiki_articles):
    """to_text reads the tokenizer's output; the node tree it replaced gives the same text on
    real articles and on every construct (wikitext_reference.py walks the tree)."""
    assert wikitext.to_text(EDGE_CASES) == wikitext_reference.to_text(EDGE_CASES)
    assert wikitext.lines(wikitext.to_text(EDGE_CASES))[:4] == ["A", "heading", "shown Foo&amp;Bar de:Foo", "the"]
    for page in enwiki_articles[:25]:
        assert wikitext.to_text(page.text) == wikitext_reference.to_text(page.text), page.title
    # Cut anywhere, an article leaves elements open or closes ones it never opened.
    rng = random.Random(0)
    for _ in range(300):
        text = rng.choice(enwiki_articles).text
        start = rng.randrange(len(text))
        piece = text[start:start + rng.randint(1, 3000)]
        assert wikitext.to_text(piece) == wikitext_reference.to_text(piece), piece


def test_tokens_that_do_not_nest_are_an_error_not_a_hang():
    """The walk jumps from each opening token to its close; a token list that does not nest
    (the tokenizer never makes one, the builder rejects one) is a ValueError, which the counting
    step counts as a wikitext error."""
    from mwparserfromhell.parser import tokens as T
    with pytest.raises(ValueError, match="never closed"):
        wikitext._matching_closes([T.Text(text="a"), T.TemplateOpen(), T.Text(text="b")])
    with pytest.raises(ValueError, match="closes nothing"):
        wikitext._matching_closes([T.Text(text="a"), T.WikilinkClose()])
    assert wikitext._matching_closes([T.TemplateOpen(), T.TemplateClose()]) == [1, 0]


def test_counting_rule_words_bigrams_case_and_punctuation():
    c = counts.count_text('The dog\'s "red ball" (U.S.) fell.\nDog the dog')
    # punctuation is never a word, and breaks bigrams; case is kept
    assert c.unigrams == {"The": 1, "dog": 2, "s": 1, "red": 1, "ball": 1, "U": 1, "S": 1,
                          "fell": 1, "Dog": 1, "the": 1}
    assert c.words == 11
    assert c.bigrams == {"The dog": 1, "red ball": 1, "Dog the": 1, "the dog": 1}
    assert "dog Dog" not in c.bigrams and "fell Dog" not in c.bigrams   # not across lines


def test_lookup_key():
    assert counts.lookup_key("dog") == ("u", "dog")
    assert counts.lookup_key("hot dog") == ("b", "hot dog")
    assert counts.lookup_key("Hot  dog") == ("b", "Hot dog")
    assert counts.lookup_key("New York City") is None
    assert counts.lookup_key("U.S.") is None
    assert counts.lookup_key("!!!") is None


def test_lookup_set_carries_its_weight_so_beams_cache_need_not_walk_it():
    from apache_beam.runners.worker import statecache
    keys = [f"u\tword{i}" for i in range(50_000)]
    sent = pickle.loads(pickle.dumps(lookups.LookupSet(keys)))     # a side input travels pickled
    assert "u\tword7" in sent and "u\tnope" not in sent and len(sent) == 50_000
    assert sent.get_referents_for_cache() == []                      # nothing for the cache to walk
    walked = statecache.get_deep_size(frozenset(keys))               # what it weighed before
    assert 0.9 * walked < statecache.get_deep_size([sent]) < 1.1 * walked


def test_pmi_on_a_hand_computed_corpus():
    # "a b" three times, "b a", "c d" and "e f" once; "b. a" and "b. c" are broken by the full
    # stops: N = 11 words
    c = counts.count_texts(["a b. a b. c d", "a b a", "e f"])
    assert c.words == 11
    assert dict(c.unigrams) == {"a": 4, "b": 3, "c": 1, "d": 1, "e": 1, "f": 1}
    assert dict(c.bigrams) == {"a b": 3, "c d": 1, "b a": 1, "e f": 1}
    # PMI(a b) = log2(3 * 11 / (4 * 3)) = log2(2.75)
    assert pmi.pmi(3, 4, 3, 11) == pytest.approx(math.log2(2.75))
    assert pmi.pmi(3, 4, 3, 11) == pytest.approx(1.4594316186372973)
    # PMI(c d) = log2(1 * 11 / (1 * 1)), the ceiling log2(N / c(xy)) reached by a lone pair
    assert pmi.pmi(1, 1, 1, 11) == pytest.approx(math.log2(11)) == pytest.approx(pmi.max_pmi(11, 1))
    assert pmi.keep_bigram(3, pmi.pmi(3, 4, 3, 11), min_bigram_count=3, min_pmi=1.4)
    assert not pmi.keep_bigram(3, pmi.pmi(3, 4, 3, 11), min_bigram_count=3, min_pmi=1.5)
    assert not pmi.keep_bigram(1, pmi.pmi(1, 1, 1, 11), min_bigram_count=3, min_pmi=1.4)
    assert not pmi.keep_bigram(3, None, 3, 0.0)
    # no PMI floor (the default): the count decides
    assert pmi.keep_bigram(3, -2.5, min_bigram_count=3) and not pmi.keep_bigram(2, 9.0, 3)
    with pytest.raises(ValueError):
        pmi.pmi(0, 1, 1, 10)


def test_pmi_is_nltks_to_the_last_bit():
    from nltk.collocations import BigramAssocMeasures
    for c_xy, c_x, c_y, n in [(3, 4, 3, 11), (30, 4_000_000, 250_000, 4_000_000_000),
                              (31, 31, 31, 4_000_000_000), (97, 1_000, 3_000, 458_857)]:
        assert pmi.pmi(c_xy, c_x, c_y, n) == BigramAssocMeasures.pmi(c_xy, (c_x, c_y), n)


def test_metaclips_pmi_floor_is_out_of_reach_for_wikipedia_sized_corpora():
    # why min_pmi has no default: about 4e9 word tokens in English Wikipedia and bigrams
    # counted >= 30 times cap PMI at log2(4e9 / 30), about 27, under MetaCLIP's 30
    assert 26.9 < pmi.max_pmi(4_000_000_000, 30) < 27
    assert pmi.max_pmi(40_000_000_000, 30) > 30
