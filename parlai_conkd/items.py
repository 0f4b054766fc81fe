"""The item catalog: ReDial movie id <-> item token <-> title / year / metadata / KG entity.

This is the one source of truth for "the items". Every score vector over items, every item
token block in a vocabulary and every item metric uses the catalog's index order 0..N-1.
Stdlib only, so the task, the agents and the metrics can all share it.
"""

import csv
import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

from parlai_conkd.errors import UserError
from parlai_conkd.fileio import atomic_write

ITEM_TOKEN_PREFIX = '__item_'
ITEM_TOKEN_SUFFIX = '__'
UNKNOWN_ITEM_TOKEN = '__item_unk__'
REC_TOKEN = '[REC]'
GEN_TOKEN = '[GEN]'

#: A movie mention in raw ReDial text.
MENTION_RE = re.compile(r'@(\d+)')
#: An item token in processed text.
ITEM_TOKEN_RE = re.compile(r'__item_(\d+|unk)__')
_TITLE_YEAR_RE = re.compile(r'^(.*?)\s*\((\d{4})\)\s*$')
#: The metadata fields shown to people next to an item (genre / director / stars); models that store
#: their catalog without the rest (plots are large) keep these.
DISPLAY_METADATA = ('genre', 'director', 'star')


def item_token(movie_id) -> str:
    return f'{ITEM_TOKEN_PREFIX}{movie_id}{ITEM_TOKEN_SUFFIX}'


def split_title_year(name: str):
    """'Headhunter  (2009)' -> ('Headhunter', 2009); 'The Godfather ' -> ('The Godfather', None)."""
    name = ' '.join(name.split())
    match = _TITLE_YEAR_RE.match(name)
    if match:
        return match.group(1).strip(), int(match.group(2))
    return name.strip(), None


@dataclass(frozen=True)
class Item:
    index: int
    movie_id: str
    title: str
    year: Optional[int] = None
    mentions: int = 0
    #: genre / director / writer / star / plot / imdb_id when a metadata directory was given.
    metadata: Dict = field(default_factory=dict, compare=False, hash=False)
    #: entity id of this movie in the knowledge graph, when one was given.
    kg_entity: Optional[int] = None

    @property
    def token(self) -> str:
        return item_token(self.movie_id)

    @property
    def display(self) -> str:
        return f'{self.title} ({self.year})' if self.year else self.title


class CatalogError(UserError, ValueError):
    """A catalog file or data directory that cannot be used; the message names the file."""


class ItemCatalog:
    """Items in a fixed index order; built from ReDial's movie list (+ optional metadata/KG)."""

    def __init__(self, items: Sequence[Item]):
        self.items: List[Item] = list(items)
        for position, item in enumerate(self.items):
            if item.index != position:
                raise CatalogError(
                    f'item {item.movie_id} has index {item.index}, expected {position}'
                )
        self._by_movie_id = {item.movie_id: item for item in self.items}
        self._by_token = {item.token: item for item in self.items}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_redial(
        cls, movies_csv: str, meta_dir: Optional[str] = None
    ) -> 'ItemCatalog':
        """Read ReDial's ``movies_with_mentions.csv`` (movieId,movieName,nbMentions).

        With ``meta_dir`` (redial-meta layout: id2info.json, entity2id.json) each item also gets
        its metadata and KG entity id, matched by movie id then by the KG's movie name.
        """
        if not os.path.isfile(movies_csv):
            raise CatalogError(f'movie list not found: {movies_csv}')
        info, entity_ids = {}, {}
        if meta_dir:
            info = read_json(os.path.join(meta_dir, 'id2info.json'))
            entity_ids = read_json(os.path.join(meta_dir, 'entity2id.json'))
        items = []
        with open(movies_csv, newline='', encoding='utf-8') as f:
            reader = csv.DictReader(f)
            missing = {'movieId', 'movieName'} - set(reader.fieldnames or ())
            if missing:
                raise CatalogError(f'{movies_csv}: header lacks {sorted(missing)}')
            for line_no, row in enumerate(reader, start=2):
                movie_id = (row['movieId'] or '').strip()
                if not movie_id.isdigit():
                    raise CatalogError(
                        f'{movies_csv}:{line_no}: movieId {movie_id!r} is not a number'
                    )
                title, year = split_title_year(row['movieName'] or '')
                meta = dict(info.get(movie_id, {}))
                kg_name = meta.pop('name', None)
                entity = entity_ids.get(kg_name) if kg_name else None
                items.append(
                    Item(
                        index=len(items),
                        movie_id=movie_id,
                        title=title,
                        year=year,
                        mentions=int(row.get('nbMentions') or 0),
                        metadata=meta,
                        kg_entity=entity,
                    )
                )
        return cls(items)

    @classmethod
    def load(cls, path: str) -> 'ItemCatalog':
        data = read_json(path)
        try:
            return cls([Item(**entry) for entry in data['items']])
        except (KeyError, TypeError) as exc:
            raise CatalogError(f'{path}: not an item catalog ({exc})') from exc

    def save(self, path: str) -> None:
        """Write atomically: a reader never sees a half-written catalog."""
        payload = {
            'fingerprint': self.fingerprint,
            'items': [asdict(i) for i in self.items],
        }
        with atomic_write(path) as f:
            json.dump(payload, f)

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def __getitem__(self, index: int) -> Item:
        return self.items[index]

    @property
    def fingerprint(self) -> str:
        """Identifies the catalog's items and order (not metadata): models store it."""
        return hashlib.sha256(
            '\n'.join(i.movie_id for i in self.items).encode()
        ).hexdigest()[:16]

    def by_movie_id(self, movie_id) -> Optional[Item]:
        return self._by_movie_id.get(str(movie_id))

    def index_of(self, movie_id) -> Optional[int]:
        item = self._by_movie_id.get(str(movie_id))
        return None if item is None else item.index

    def by_token(self, token: str) -> Optional[Item]:
        return self._by_token.get(token)

    def tokens(self) -> List[str]:
        """Item tokens in index order: the vocabulary's item block."""
        return [item.token for item in self.items]

    @property
    def has_kg(self) -> bool:
        return any(item.kg_entity is not None for item in self.items)

    # ------------------------------------------------------------------ text
    def items_in_text(self, text: str) -> List[int]:
        """Catalog indices of the item tokens in ``text``, in order, deduplicated (unknown skipped)."""
        seen, result = set(), []
        for match in ITEM_TOKEN_RE.finditer(text):
            item = self._by_token.get(match.group(0))
            if item is not None and item.index not in seen:
                seen.add(item.index)
                result.append(item.index)
        return result

    def render(self, text: str) -> str:
        """Replace item tokens by "Title (Year)" for people; ids stay in the data for metrics."""

        def title(match):
            item = self._by_token.get(match.group(0))
            return item.display if item is not None else 'an unknown movie'

        return ITEM_TOKEN_RE.sub(title, text)


def dedupe(indices: Iterable[int]) -> List[int]:
    seen, result = set(), []
    for i in indices:
        if i not in seen:
            seen.add(i)
            result.append(i)
    return result


def read_json(path: str, what: str = 'file'):
    """Parse a JSON file; a missing or malformed file raises CatalogError naming it (and the line)."""
    if not os.path.isfile(path):
        raise CatalogError(f'{what} not found: {path}')
    with open(path, encoding='utf-8') as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise CatalogError(
                f'{path}:{exc.lineno}: invalid JSON ({exc.msg})'
            ) from exc
