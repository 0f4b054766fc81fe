"""parlai_conkd.linking: what a person types -> catalog items, on a hand-made catalog."""

import json
from pathlib import Path

import pytest

from parlai_conkd import linking
from parlai_conkd.items import Item, ItemCatalog
from parlai_conkd.linking import (
    TitleLinker,
    common_words_from_counts,
    describe_unlinked,
    make_linker,
    words,
)

ROWS = [  # movie id, title, year, ReDial mentions
    ('1', 'The Shining', 1980, 100),
    ('2', 'Meet the Parents', 2000, 5),
    ('3', 'Meet the Parents', 2000, 57),
    ('4', 'Frozen', 2013, 150),
    ('5', 'Frozen', 2010, 10),
    ('6', 'It', 2017, 200),
    ('7', 'It', 1990, 10),
    ('8', 'Up', 2009, 80),
    ('9', 'Get Out', 2017, 120),
    ('10', 'Léon: The Professional', 1994, 30),
    ('11', 'Spider-Man', 2002, 60),
    ('12', 'Jumanji', 1995, 40),
    ('13', 'Jumanji', 2017, 120),
    ('14', 'X', 1986, 3),
    ('15', 'Keanu', 2016, 9),
    ('16', 'Star Wars', None, 40),
    ('17', 'Inception', 2010, 90),
]


@pytest.fixture(scope='module')
def catalog():
    return ItemCatalog([Item(i, m, t, y, n) for i, (m, t, y, n) in enumerate(ROWS)])


@pytest.fixture(scope='module')
def link(catalog):
    return TitleLinker(catalog)


def linked(result, catalog):
    return [
        (link.surface, catalog[link.index].movie_id, link.rule) for link in result.links
    ]


def test_words_fold_case_accents_apostrophes_and_ampersands():
    assert words("LÉON:  the Professional") == ['leon', 'the', 'professional']
    assert (
        words("Schindler's List") == words('schindlers list') == ['schindlers', 'list']
    )
    assert words('Fast & Furious') == ['fast', 'and', 'furious']
    assert linking.title_keys('Spider-Man') == [('spider', 'man'), ('spiderman',)]


def test_mention_ids_link_and_unknown_ids_are_reported(link, catalog):
    result = link('I loved @1 and @999, not __item_4__')
    assert result.text == 'I loved __item_1__ and @999, not __item_4__'
    assert linked(result, catalog) == [('@1', '1', 'id')]
    assert [(u.surface, u.reason) for u in result.unlinked] == [('@999', 'unknown_id')]
    assert (
        describe_unlinked(result.unlinked[0], catalog)
        == "@999 is not a movie id of this model's catalog"
    )


def test_title_with_year_ignores_case_spacing_and_accents(link, catalog):
    for typed in ['the  SHINING   (1980)', 'The Shining 1980', 'the shining [1980]']:
        result = link(f'I loved {typed}!')
        assert result.text == 'I loved __item_1__!', typed
        assert linked(result, catalog) == [(typed, '1', 'title_year')]
    assert linked(link('LEON: the professional (1994)'), catalog) == [
        ('LEON: the professional (1994)', '10', 'title_year')
    ]


def test_titles_without_year_inside_sentences(link, catalog):
    result = link(
        'hi! i loved the shining and leon the professional, any other scary movie?'
    )
    assert (
        result.text == 'hi! i loved __item_1__ and __item_10__, any other scary movie?'
    )
    assert [link.rule for link in result.links] == ['title', 'title']
    assert result.items == [0, 9]
    assert linked(link('I loved Spiderman, spider man or Spider-Man'), catalog) == [
        ('Spiderman', '11', 'title'),
        ('spider man', '11', 'title'),
        ('Spider-Man', '11', 'title'),
    ]


def test_ambiguity_rule_most_mentioned_by_a_factor_of_ten_else_unlinked(link, catalog):
    # duplicate rows with the same title and year: 57 vs 5 mentions
    assert linked(link('Meet the Parents (2000)'), catalog) == [
        ('Meet the Parents (2000)', '3', 'title_year')
    ]
    # no year: Frozen 2013 (150) vs 2010 (10): linked; Jumanji 2017 (120) vs 1995 (40): left to the person
    assert linked(link('I loved Frozen'), catalog) == [('Frozen', '4', 'title')]
    result = link('I loved Jumanji')
    assert result.links == [] and result.unlinked[0].reason == 'ambiguous'
    assert describe_unlinked(result.unlinked[0], catalog) == (
        '"Jumanji" could be Jumanji (1995) @12 or Jumanji (2017) @13: add the year or type @id'
    )
    assert linked(link('I loved Jumanji (2017)'), catalog) == [
        ('Jumanji (2017)', '13', 'title_year')
    ]


def test_a_year_no_item_has_is_not_linked(link, catalog):
    result = link('I loved Frozen (1999)')
    assert result.links == [] and result.unlinked[0].reason == 'year_mismatch'
    assert describe_unlinked(result.unlinked[0], catalog).startswith(
        '"Frozen (1999)": no such year in the catalog'
    )


@pytest.mark.parametrize(
    'text, expected',
    [
        ('it was great', []),  # a common word
        ('It was great', []),  # sentence start
        ('I loved It', [('It', '6')]),  # capitalised inside a sentence
        ('Goodfellas It was great', []),  # after a capitalised word: a new sentence
        ('I LOVED IT', []),  # no case cue in capitals
        ('I LOVED IT (2017)', [('IT (2017)', '6')]),  # a year is cue enough
        ('i loved up', []),
        ('I loved Up, and "up"', [('Up', '8'), ('up', '8')]),  # quotes are a cue
        ('i need to get out more', []),
        ('Get Out was great', [('Get Out', '9')]),  # a title of capitalised words
        ('watch X now', []),
        ('watch "X" now', [('X', '14')]),  # one letter: quotes only
        ('I love Keanu Reeves', []),  # a name, not the film
        ('I loved Keanu', [('Keanu', '15')]),
        ('i loved inception', []),  # without chat counts, one-word titles need a cue
        ('i loved Inception', [('Inception', '17')]),
    ],
)
def test_guard_for_common_word_titles(link, catalog, text, expected):
    assert [(s, m) for s, m, _ in linked(link(text), catalog)] == expected


def test_with_chat_word_counts_rare_one_word_titles_link_lower_cased(catalog):
    counts = {f'filler{i}': 1000 for i in range(linking.COMMON_TOP_N - 1)}
    counts.update(
        {'Frozen': 5000, 'inception': 1}
    )  # 'frozen' is among the common words here
    linker = make_linker(catalog, counts)
    assert not linker.single_words_risky and 'frozen' in linker.common_words
    assert linked(linker('i loved inception'), catalog) == [
        ('inception', '17', 'title')
    ]
    assert linked(linker('i loved frozen'), catalog) == []
    assert linked(linker('i loved up'), catalog) == []  # a built-in common word
    assert make_linker(
        catalog, {'a': 1}
    ).single_words_risky  # too few counts: the fallback


def test_common_words_from_counts_folds_and_ranks():
    counts = {'The': 5, 'the': 3, 'Café': 4, 'cafe': 1, 'zebra': 5, '__item_3__': 10**9}
    assert common_words_from_counts(counts, 2) == {'the', 'cafe'}
    assert common_words_from_counts(counts, 0) == frozenset()


def test_defaults_are_the_measured_choice():
    """linking.py's constants are what projects/conkd/linking_results.py chose on the train fold."""
    results = (
        Path(__file__).resolve().parents[2]
        / 'projects'
        / 'conkd'
        / 'results'
        / 'linking.json'
    )
    chosen = json.loads(results.read_text())['chosen']
    assert chosen['with_chat_counts']['params'] == {
        'dominance': linking.DOMINANCE,
        'single_words_risky': False,
        'top_n': linking.COMMON_TOP_N,
    }
    assert chosen['without_chat_counts']['params'] == {
        'dominance': linking.DOMINANCE,
        'single_words_risky': True,
        'top_n': 0,
    }
    for config in chosen.values():
        for form, row in config['test']['forms'].items():
            assert row['precision'] >= 0.95, (form, row)
