"""Link what a person types to catalog items: ``@<movieId>``, "Title (Year)" and "Title".

ParlAI-free (the stdlib and wordfreq): a plain function of the text and an
:class:`~parlai_conkd.items.ItemCatalog`, shared by interactive chat
(:mod:`parlai_conkd.agents.conkd_student.interactive`), the measurement script
(``projects/conkd/linking_results.py``) and any other reader of typed text.

What is linked (issue #14), in this order of precedence:

1. ``@<movieId>`` (ReDial's own mention syntax): the item with that id; an id that is not in the
   catalog stays as typed and is reported (``unknown_id``). Item tokens already in the text
   (``__item_<id>__``) are left alone.
2. A catalog title followed by a year, ``Title (Year)`` or ``Title Year``: the item with that title
   and year. A title whose typed year matches no item of that title is not linked
   (``year_mismatch``): a wrong year usually means another film.
3. A catalog title without a year: see the ambiguity rule and the guard below.

Titles match case-, whitespace-, accent- and punctuation-insensitively, anywhere in a sentence:
both sides are compared as word sequences (:func:`words`: NFKD accents removed, case folded,
apostrophes dropped, ``&`` read as "and", any other non-alphanumeric character a word break; a
hyphenated title also matches written as one word, "Spiderman"). The longest title starting at a
word wins; matching resumes after it.

**Ambiguity rule.** Several items can share a title (remakes: "Jumanji" 1995 and 2017) or even a
title and a year (duplicate rows in ReDial's movie list: "Meet the Parents (2000)" twice, 57 and 5
mentions). The candidate with the most ReDial mentions is taken when it has at least
:data:`DOMINANCE` (10) times the mentions of the runner-up; otherwise nothing is linked
(``ambiguous``) and the candidates are reported, so a person can add the year or type ``@id``.

**Guard for common-word titles.** Without a year, a title that ordinary chat could contain ("It",
"Up", "Lost", "Dance", "Get Out", "9") is *risky* (:meth:`TitleLinker.is_risky`): a one-word title
that is a common English word, a title of several words that are all very common, a number or a
single letter. A risky title is linked only when the typing marks it as a title
(:meth:`TitleLinker.marked_as_title`): in quotes; every word capitalised in a title of two words or
more ("Get Out was great"); or capitalised inside a sentence, right after a lower-case word, a
digit or a comma ("I loved Up"). Sentence-initial, lower-cased or shouted ("IT") words stay words,
and so does a capitalised one-word title next to another capitalised, uncommon word (a name:
"Jackie Chan"). How common a word is comes from English word frequencies (wordfreq's Zipf scale,
:func:`zipf`), the same for every model: a word of Zipf frequency >= :data:`COMMON_ZIPF` is common,
and a title of several words is risky when every word reaches :data:`PHRASE_ZIPF`;
:data:`FILM_CHAT_WORDS` are common whatever their frequency. (Until issue #22 common words were a
hand-made list plus a model dictionary's 1,000 most frequent words, which missed everyday words
rare in movie chat: "lost", "dogs", "dance", "water".) The parameters were chosen on the train
fold and measured on the test fold (precision, recall and false-link rate:
``projects/conkd/linking_results.py``, results/linking.json, docs/interactive.md).
"""

import functools
import re
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from parlai_conkd.items import ITEM_TOKEN_RE, Item, ItemCatalog

#: ``@<movieId>`` as ReDial writes a mention.
MENTION_RE = re.compile(r'@(\d+)')
_PROTECTED_RE = re.compile(r'@(\d+)|' + ITEM_TOKEN_RE.pattern)
_WORD_RE = re.compile(r'[a-z0-9]+')
_APOSTROPHES = set('\'\u2019\u2018`\u00b4')
_QUOTES = set('"\'\u201c\u201d\u2018\u2019*_')
_SENTENCE_END = set('.!?\n:;')
#: A typed year right after a title: "(1980)", "[1980]" or " 1980".
_YEAR_RE = re.compile(
    r'\s*(?:[\(\[]\s*((?:18|19|20)\d\d)\s*[\)\]]|((?:18|19|20)\d\d)(?![\w]))'
)

#: Titles of at most this many letters/digits ("X", "M") are linked without a year only when quoted.
MIN_CHARS = 1
#: Ambiguity rule: the most-mentioned candidate needs this many times the runner-up's mentions.
#: Chosen on the train fold by projects/conkd/linking_results.py (results/linking.json).
DOMINANCE = 10.0
#: Zipf frequency (:func:`zipf`) from which a word is common: a one-word title of at least this
#: frequency is risky ("up" 6.4, "dance" 4.9, "frozen" 4.3; not "inception" 3.7 or "jumanji" 2.3),
#: and a capitalised word below it next to a one-word title makes a name
#: (:meth:`TitleLinker.part_of_name`). Chosen on the train fold by
#: projects/conkd/linking_results.py (results/linking.json).
COMMON_ZIPF = 4.0
#: A title of several words is risky when every word has at least this Zipf frequency ("Get Out"
#: 6.3 and 6.4, not "The Shining": "shining" 4.0): a run of several common words is rarer in chat
#: than one common word, so the bar is higher. Chosen the same way.
PHRASE_ZIPF = 5.0
#: Common whatever their English frequency: film-chat words that general English under-rates.
#: Only "flick" (Zipf 3.6; the film "Flick", 2008): "a good flick" was the commonest lower-cased
#: false link on the train fold with the thresholds above (14 messages).
FILM_CHAT_WORDS = frozenset({'flick'})


@functools.lru_cache(maxsize=1 << 16)
def zipf(word: str) -> float:
    """How common ``word`` is in English: wordfreq's Zipf frequency (0 for unknown words, 3 is
    about once per million words, 6 once per thousand). ``words()`` folds apostrophes away, and
    wordfreq knows those spellings ("dont", "thats") too."""
    from wordfreq import zipf_frequency  # loads its English table on first use (~0.3 s)

    return zipf_frequency(word, 'en')


def _fold_char(ch: str) -> str:
    """One character as compared: accents removed, case folded; apostrophes vanish, '&' is 'and'."""
    if ch in _APOSTROPHES:
        return ''
    if ch == '&':
        return ' and '
    decomposed = unicodedata.normalize('NFKD', ch)
    return ''.join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def normalize(text: str) -> Tuple[str, List[int]]:
    """``text`` folded for comparison, and for each folded character its index in ``text``."""
    out, where = [], []
    for position, ch in enumerate(text):
        folded = _fold_char(ch)
        out.append(folded)
        where.extend([position] * len(folded))
    return ''.join(out), where


def words(text: str) -> List[str]:
    """The words titles are compared by: ``words("Léon: The Professional")`` is
    ``['leon', 'the', 'professional']``; ``words("Schindler's List")`` is ``['schindlers', 'list']``.
    """
    return _WORD_RE.findall(normalize(text)[0])


def _spans(text: str) -> List[Tuple[str, int, int]]:
    """``(word, start, end)`` with ``start:end`` the word's characters in ``text``."""
    folded, where = normalize(text)
    return [
        (m.group(0), where[m.start()], where[m.end() - 1] + 1)
        for m in _WORD_RE.finditer(folded)
    ]


def title_keys(title: str) -> List[Tuple[str, ...]]:
    """The word sequences a title is found by: its words, and for a hyphenated title also the
    hyphenated parts written as one word ("Spider-Man": spider man / spiderman)."""
    keys = [tuple(words(title))]
    if '-' in title:
        joined = tuple(words(re.sub(r'(?<=\w)-(?=\w)', '', title)))
        if joined != keys[0]:
            keys.append(joined)
    return [k for k in keys if k]


def make_linker(catalog: ItemCatalog) -> 'TitleLinker':
    """The linker in its measured configuration (projects/conkd/results/linking.json): which words
    are common comes from English word frequencies (:func:`zipf`), the same for every model, with
    or without a dictionary (issue #22)."""
    return TitleLinker(catalog)


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Link:
    """A span of the typed text linked to a catalog item."""

    start: int
    end: int
    surface: str
    #: catalog index of the item
    index: int
    #: 'id' (@movieId), 'title_year', or 'title'
    rule: str


@dataclass(frozen=True)
class Unlinked:
    """A span that looked like an item but was not linked, and why."""

    start: int
    end: int
    surface: str
    #: 'unknown_id', 'ambiguous', 'year_mismatch' or 'guarded'
    reason: str
    #: catalog indices of the candidate items (empty for an unknown id)
    candidates: Tuple[int, ...] = ()


@dataclass
class LinkResult:
    #: the typed text with each linked span replaced by the item token
    text: str
    links: List[Link] = field(default_factory=list)
    unlinked: List[Unlinked] = field(default_factory=list)

    @property
    def items(self) -> List[int]:
        """Catalog indices linked, in order of appearance, deduplicated."""
        seen, out = set(), []
        for link in self.links:
            if link.index not in seen:
                seen.add(link.index)
                out.append(link.index)
        return out


# ---------------------------------------------------------------------------- the linker
class TitleLinker:
    """Links typed text to ``catalog`` items (rules: module docstring).

    Args:
        catalog: the items; titles, years and ReDial mention counts are read from it.
        common_words: words that are common whatever their frequency (added to
            :data:`FILM_CHAT_WORDS` and the words of Zipf frequency >= ``common_zipf``).
        guard: False disables the common-word guard (measurement only).
        min_chars: titles of at most this many letters/digits are always guarded.
        single_words_risky: every one-word title needs a cue, common or not.
        dominance: the ambiguity rule's factor.
        common_zipf: words of at least this Zipf frequency (:func:`zipf`) are common.
        phrase_zipf: a title of several words is risky when each has at least this frequency.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        common_words: Iterable[str] = (),
        guard: bool = True,
        min_chars: int = MIN_CHARS,
        single_words_risky: bool = False,
        dominance: float = DOMINANCE,
        common_zipf: float = COMMON_ZIPF,
        phrase_zipf: float = PHRASE_ZIPF,
    ):
        self.catalog = catalog
        self.common_words = FILM_CHAT_WORDS | frozenset(
            w for c in common_words for w in words(c)
        )
        self.common_zipf = common_zipf
        self.phrase_zipf = phrase_zipf
        self.guard = guard
        self.min_chars = min_chars
        self.single_words_risky = single_words_risky
        self.dominance = dominance
        self._by_title: Dict[Tuple[str, ...], List[int]] = defaultdict(list)
        for item in catalog:
            for key in title_keys(item.title):
                self._by_title[key].append(item.index)
        self._max_words = max((len(k) for k in self._by_title), default=0)

    # ---------------------------------------------------------------- rules
    def is_common(self, word: str) -> bool:
        """An everyday English word ("up", "dance"): Zipf frequency >= ``common_zipf``, or one of
        ``common_words``. ``word`` is folded as :func:`words` does ("Don't" is "dont").
        """
        folded = words(word)
        return bool(folded) and all(self._common(w) for w in folded)

    def _common(self, folded_word: str, threshold: Optional[float] = None) -> bool:
        if threshold is None:
            threshold = self.common_zipf
        return folded_word in self.common_words or zipf(folded_word) >= threshold

    def is_risky(self, key: Sequence[str]) -> bool:
        """A title that ordinary chat could contain: a common word (Zipf >= ``common_zipf``),
        several words each of Zipf >= ``phrase_zipf``, a number, or very short."""
        letters = ''.join(key)
        if letters.isdigit() or len(letters) <= self.min_chars:
            return True
        if len(key) == 1:
            return self.single_words_risky or self._common(key[0])
        return all(self._common(w, self.phrase_zipf) for w in key)

    def pick(self, candidates: Sequence[int]) -> Optional[int]:
        """The candidate with the most ReDial mentions when it has more than ``dominance`` times
        the mentions of the runner-up (and strictly more); None otherwise."""
        if len(candidates) == 1:
            return candidates[0]
        ranked = sorted(candidates, key=lambda i: -self.catalog[i].mentions)
        first, second = (
            self.catalog[ranked[0]].mentions,
            self.catalog[ranked[1]].mentions,
        )
        if first > second and first >= self.dominance * second:
            return ranked[0]
        return None

    def marked_as_title(
        self, text: str, start: int, end: int, quotes_only: bool = False
    ) -> bool:
        """The typing marks ``text[start:end]`` as a title: quoted; or every word capitalised in a
        title of two words or more ("Get Out was great"); or capitalised inside a sentence, right
        after a lower-case word, a digit or a comma ("I loved Up", "Frozen, Up and Coco"). Words
        in capitals ("I LOVE it") and texts without lower-case letters carry no case cue.
        """
        surface = text[start:end]
        before = text[:start].rstrip()
        after = text[end:].lstrip()
        if before and after and before[-1] in _QUOTES and after[0] in _QUOTES:
            return True
        if quotes_only or not any(c.islower() for c in text):
            return False
        tokens = [t for t in re.split(r'[^\w]+', surface) if t]
        if not tokens or not _capitalised(tokens[0]):
            return False
        if len(tokens) >= 2:
            return all(
                _capitalised(t) or t.isdigit() or t.lower() in _SMALL_WORDS
                for t in tokens
            )
        previous = before.split()[-1] if before else ''
        return bool(previous) and (
            before[-1] in ',&/(' or previous[0].islower() or previous[0].isdigit()
        )

    def part_of_name(self, text: str, start: int, end: int) -> bool:
        """A one-word title written next to another capitalised, uncommon word: part of a name
        ("Jackie Chan", "Morgan Freeman", "Stephen King"), not the film."""
        if not _capitalised(text[start:end]):
            return False
        following = re.match(r' +([^\W\d_]+)', text[end:])
        preceding = re.search(r'([^\W\d_]+) +$', text[:start])
        return any(
            m is not None
            and _capitalised(m.group(1))
            and not self.is_common(m.group(1))
            for m in (following, preceding)
        )

    # ---------------------------------------------------------------- linking
    def __call__(self, text: str) -> LinkResult:
        result = LinkResult(text='')
        pieces, cursor = [], 0
        for match in _PROTECTED_RE.finditer(text):
            cursor = self._link_titles(text, cursor, match.start(), pieces, result)
            movie_id = match.group(1)
            if movie_id is None:  # an item token already
                pieces.append(match.group(0))
            else:
                item = self.catalog.by_movie_id(movie_id)
                if item is None:
                    result.unlinked.append(
                        Unlinked(
                            match.start(), match.end(), match.group(0), 'unknown_id'
                        )
                    )
                    pieces.append(match.group(0))
                else:
                    result.links.append(
                        Link(
                            match.start(), match.end(), match.group(0), item.index, 'id'
                        )
                    )
                    pieces.append(item.token)
            cursor = match.end()
        self._link_titles(text, cursor, len(text), pieces, result)
        result.text = ''.join(pieces)
        return result

    def _link_titles(
        self, text: str, begin: int, end: int, pieces: List[str], result: LinkResult
    ) -> int:
        """Link titles in ``text[begin:end]``, appending the output to ``pieces``; returns ``end``."""
        spans = [(w, begin + s, begin + e) for w, s, e in _spans(text[begin:end])]
        cursor, i = begin, 0
        while i < len(spans):
            decision = self._match_at(text, end, spans, i)
            if decision is None:
                i += 1
                continue
            span_end, rule, outcome = decision
            start = spans[i][1]
            if isinstance(outcome, int):
                pieces.append(text[cursor:start])
                pieces.append(self.catalog[outcome].token)
                cursor = span_end
                result.links.append(
                    Link(start, span_end, text[start:span_end], outcome, rule)
                )
            else:
                reason, candidates = outcome
                result.unlinked.append(
                    Unlinked(
                        start, span_end, text[start:span_end], reason, tuple(candidates)
                    )
                )
            while i < len(spans) and spans[i][1] < span_end:
                i += 1
        pieces.append(text[cursor:end])
        return end

    def _match_at(self, text: str, limit: int, spans, i: int):
        """``(end of the span, rule, item index | (reason, candidates))`` for the longest title
        starting at word ``i`` (years read up to ``limit``), or None when no title starts there.
        """
        for n in range(min(self._max_words, len(spans) - i), 0, -1):
            key = tuple(w for w, _, _ in spans[i : i + n])
            candidates = self._by_title.get(key)
            if not candidates:
                continue
            start, title_end = spans[i][1], spans[i + n - 1][2]
            guarded = self.guard and (
                (
                    self.is_risky(key)
                    and not self.marked_as_title(
                        text,
                        start,
                        title_end,
                        quotes_only=len(''.join(key)) <= self.min_chars,
                    )
                )
                or (len(key) == 1 and self.part_of_name(text, start, title_end))
            )
            year_match = _YEAR_RE.match(text, title_end, limit)
            if year_match:
                year = int(year_match.group(1) or year_match.group(2))
                dated = [c for c in candidates if self.catalog[c].year == year]
                if dated:  # a year is cue enough: no guard
                    chosen = self.pick(dated)
                    return (
                        year_match.end(),
                        'title_year',
                        chosen if chosen is not None else ('ambiguous', dated),
                    )
                if (
                    year_match.group(1)
                    and not guarded
                    and any(self.catalog[c].year for c in candidates)
                ):
                    # "(Year)" typed and no item of that title has it: another film
                    return (
                        year_match.end(),
                        'title_year',
                        ('year_mismatch', list(candidates)),
                    )
            if guarded:
                return title_end, 'title', ('guarded', list(candidates))
            chosen = self.pick(candidates)
            return (
                title_end,
                'title',
                chosen if chosen is not None else ('ambiguous', list(candidates)),
            )
        return None


def _capitalised(token: str) -> bool:
    """'Up', 'McQueen': an upper-case first letter and some lower-case letters ('UP' is shouting)."""
    return token[:1].isupper() and any(c.islower() for c in token[1:])


#: Words left lower-case inside a title ("Lord of the Rings") when judging Title Case.
_SMALL_WORDS = frozenset(
    'a an and as at but by for from in into of on or the to with vs'.split()
)


def describe_unlinked(
    unlinked: Unlinked, catalog: ItemCatalog, max_candidates: int = 3
) -> Optional[str]:
    """A short note for a person about a span that was not linked (None for guarded words)."""
    if unlinked.reason == 'unknown_id':
        return f'{unlinked.surface} is not a movie id of this model\'s catalog'
    names = [_with_id(catalog[c]) for c in unlinked.candidates[:max_candidates]]
    more = ', ...' if len(unlinked.candidates) > max_candidates else ''
    if unlinked.reason == 'ambiguous':
        return f'"{unlinked.surface}" could be {" or ".join(names)}{more}: add the year or type @id'
    if unlinked.reason == 'year_mismatch':
        return f'"{unlinked.surface}": no such year in the catalog (known: {", ".join(names)}{more})'
    return None


def _with_id(item: Item) -> str:
    return f'{item.display} @{item.movie_id}'
