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

from parlai_conkd.errors import UserError, remedy
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
#: The file beside a generator's model file that holds its catalog (``<model>.catalog.json``).
MODEL_CATALOG_SUFFIX = '.catalog.json'
#: What to do about a damaged movie list or movie metadata file (the data layer says more).
MOVIE_LIST_FIX = "restore an intact copy of ReDial's movie list"
META_FIX = 'restore an intact copy of the movie metadata directory (redial-meta layout)'


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
        cls,
        movies_csv: str,
        meta_dir: Optional[str] = None,
        name: Optional[str] = None,
        fix: str = MOVIE_LIST_FIX,
    ) -> 'ItemCatalog':
        """Read ReDial's ``movies_with_mentions.csv`` (movieId,movieName,nbMentions).

        With ``meta_dir`` (redial-meta layout: id2info.json, entity2id.json) each item also gets
        its metadata and KG entity id, matched by movie id then by the KG's movie name.
        A file that cannot be used raises CatalogError naming it as ``name`` (default: the path
        read, e.g. the user's file when a copy is read) and ending with ``fix``, what to do. A
        row with fewer columns than the header is an error (a file cut short ends in one).
        """
        name = name or movies_csv
        if not os.path.isfile(movies_csv):
            raise CatalogError(f'movie list not found: {name}')
        info, entity_ids = {}, {}
        if meta_dir:
            info = read_json(os.path.join(meta_dir, 'id2info.json'), fix=META_FIX)
            entity_ids = read_json(
                os.path.join(meta_dir, 'entity2id.json'), fix=META_FIX
            )
            for path, data in (('id2info.json', info), ('entity2id.json', entity_ids)):
                if not isinstance(data, dict):
                    raise CatalogError(
                        f'{os.path.join(meta_dir, path)}: holds a {type(data).__name__}, not '
                        f'an object; {META_FIX}'
                    )
        items = []
        line_no = 1
        try:
            with open(movies_csv, newline='', encoding='utf-8') as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or ()
                missing = {'movieId', 'movieName'} - set(fields)
                if missing:
                    what = (
                        'is empty' if not fields else f'header lacks {sorted(missing)}'
                    )
                    raise CatalogError(f'{name}: {what}; {fix}')
                for line_no, row in enumerate(reader, start=2):
                    if None in row.values():  # a row cut short, e.g. the file's last
                        present = sum(v is not None for v in row.values())
                        raise CatalogError(
                            f'{name}:{line_no}: the row has {present} of the header\'s '
                            f'{len(fields)} columns; {fix}'
                        )
                    movie_id = (row['movieId'] or '').strip()
                    if not movie_id.isdigit():
                        raise CatalogError(
                            f'{name}:{line_no}: movieId {movie_id!r} is not a number; {fix}'
                        )
                    mentions = (row.get('nbMentions') or '0').strip()
                    if not mentions.isdigit():
                        raise CatalogError(
                            f'{name}:{line_no}: nbMentions {mentions!r} is not a number; {fix}'
                        )
                    title, year = split_title_year(row['movieName'] or '')
                    meta = info.get(movie_id, {})
                    meta = dict(meta) if isinstance(meta, dict) else {}
                    kg_name = meta.pop('name', None)
                    entity = entity_ids.get(kg_name) if kg_name else None
                    items.append(
                        Item(
                            index=len(items),
                            movie_id=movie_id,
                            title=title,
                            year=year,
                            mentions=int(mentions),
                            metadata=meta,
                            kg_entity=entity,
                        )
                    )
        except UnicodeDecodeError as exc:  # decoded in blocks: no line to name
            raise CatalogError(
                f'{name}: not UTF-8 text ({exc.reason}); {fix}'
            ) from None
        except csv.Error as exc:
            raise CatalogError(
                f'{name}:{line_no}: not readable CSV ({exc}); {fix}'
            ) from None
        return cls(items)

    @classmethod
    def load(cls, path: str, fix: Optional[str] = None) -> 'ItemCatalog':
        """The catalog ``save`` wrote to ``path``; CatalogError naming it (and ``fix``, what to do:
        by default, for a model's ``<model>.catalog.json``, retrain or restore the model) when it
        is empty, truncated or not a catalog."""
        fix = fix or _catalog_fix(path)
        data = read_json(path, 'item catalog', fix)
        try:
            return cls([Item(**entry) for entry in data['items']])
        except (KeyError, TypeError) as exc:
            raise CatalogError(f'{path}: not an item catalog ({exc}); {fix}') from None

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


def read_json(path: str, what: str = 'file', fix: str = 'restore an intact copy of it'):
    """Parse a JSON file; a missing, empty, truncated or malformed file raises CatalogError naming
    it (and the line) and ending with ``fix``, what to do."""
    if not os.path.isfile(path):
        raise CatalogError(f'{what} not found: {path}')
    with open(path, 'rb') as f:
        raw = f.read()
    try:
        return json.loads(raw.decode('utf-8'))
    except UnicodeDecodeError as exc:
        raise CatalogError(
            f'{path}: invalid JSON (not UTF-8 text: {exc.reason} at byte {exc.start}); {fix}'
        ) from None
    except json.JSONDecodeError as exc:
        empty = ', the file is empty' if not raw.strip() else ''
        raise CatalogError(
            f'{path}:{exc.lineno}: invalid JSON ({exc.msg}, column {exc.colno}{empty}); {fix}'
        ) from None


def _catalog_fix(path: str) -> str:
    """What to do about a damaged catalog file: the model's for ``<model>.catalog.json``."""
    if path.endswith(MODEL_CATALOG_SUFFIX):
        return remedy(path[: -len(MODEL_CATALOG_SUFFIX)])
    return 'restore an intact copy of it'
