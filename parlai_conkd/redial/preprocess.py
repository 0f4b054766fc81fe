"""Raw ReDial dialogues -> processed episodes (roles, merged turns, item tokens, folds).

Stdlib, the item catalog and the error base only, so every rule here is unit-testable without ParlAI. The rules
are documented in this task's README ("Preprocessing"); change them only with a VERSION bump in
build.py, because built data is cached under that version.
"""

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from parlai_conkd.errors import UserError
from parlai_conkd.items import MENTION_RE, UNKNOWN_ITEM_TOKEN, ItemCatalog, item_token

SEEKER = 'seeker'
RECOMMENDER = 'recommender'

#: The validation fold: VALID_PERCENT % of the official train dialogues, chosen by a salted hash of
#: conversationId. Salted so it is independent of any other hash split of the same ids (the shared
#: data's own train/test division is one such split).
VALID_SALT = 'redial_crs/valid/v1'
VALID_PERCENT = 10

REQUIRED_DIALOGUE_KEYS = (
    'conversationId',
    'messages',
    'initiatorWorkerId',
    'respondentWorkerId',
)


class RedialDataError(UserError, ValueError):
    """Input that cannot be used; the message names the file (and line) and what to do."""


def is_valid_fold(conversation_id) -> bool:
    """True when this train dialogue belongs to the validation fold (deterministic, seeded)."""
    digest = hashlib.sha256(
        f'{VALID_SALT}:{conversation_id}'.encode('utf-8')
    ).hexdigest()
    return int(digest[:8], 16) % 100 < VALID_PERCENT


@dataclass
class PreprocessStats:
    dialogues: int = 0
    messages: int = 0
    turns: int = 0
    mentions: int = 0
    unknown_mentions: int = 0
    unknown_movie_ids: Counter = field(default_factory=Counter)
    #: messages whose sender is neither the initiator nor the respondent (dropped).
    foreign_messages: int = 0
    #: dialogues without any recommender turn (kept, but they give no examples).
    dialogues_without_recommender: int = 0

    def as_dict(self) -> Dict:
        return {
            'dialogues': self.dialogues,
            'messages': self.messages,
            'turns': self.turns,
            'mentions': self.mentions,
            'unknown_mentions': self.unknown_mentions,
            'unknown_movie_ids': dict(self.unknown_movie_ids.most_common()),
            'foreign_messages': self.foreign_messages,
            'dialogues_without_recommender': self.dialogues_without_recommender,
        }


def read_jsonl(lines: Iterable[str], source: str) -> Iterator[Tuple[int, Dict]]:
    """Yield (line number, dialogue) from JSON lines; bad lines raise naming ``source:line`` and
    the column, counted from the start of that line (1-based)."""
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            # without its line break: an error at the end of a cut line is past its last character,
            # not at "column 1" after the newline
            dialogue = json.loads(line.rstrip('\r\n'))
        except json.JSONDecodeError as exc:
            raise RedialDataError(
                f'{source}:{line_no}: malformed JSON ({exc.msg} at column {exc.pos + 1})'
            ) from exc
        if not isinstance(dialogue, dict):
            raise RedialDataError(
                f'{source}:{line_no}: expected a JSON object, got {type(dialogue).__name__}'
            )
        missing = [key for key in REQUIRED_DIALOGUE_KEYS if key not in dialogue]
        if missing:
            raise RedialDataError(f'{source}:{line_no}: dialogue lacks {missing}')
        if not isinstance(dialogue['messages'], list):
            raise RedialDataError(f'{source}:{line_no}: "messages" is not a list')
        yield line_no, dialogue


def replace_mentions(text: str, catalog: ItemCatalog, stats: PreprocessStats) -> str:
    """``@<movieId>`` -> item token; ids missing from the catalog -> the one unknown-item token."""

    def token(match):
        movie_id = match.group(1)
        stats.mentions += 1
        if catalog.by_movie_id(movie_id) is None:
            stats.unknown_mentions += 1
            stats.unknown_movie_ids[movie_id] += 1
            return UNKNOWN_ITEM_TOKEN
        return item_token(movie_id)

    return MENTION_RE.sub(token, text)


def process_dialogue(
    dialogue: Dict, catalog: ItemCatalog, stats: PreprocessStats, where: str
) -> Dict:
    """One raw dialogue -> ``{'conversation_id', 'turns': [{'role', 'text', 'items'}]}``.

    Roles come from worker ids (ReDial's initiator is the seeker, the respondent recommends), not
    from alternation; consecutive messages of one speaker are merged into one turn (joined by a
    space); ``items`` are the catalog indices mentioned in the turn (in order, deduplicated).
    """
    roles = {
        str(dialogue['initiatorWorkerId']): SEEKER,
        str(dialogue['respondentWorkerId']): RECOMMENDER,
    }
    turns: List[Dict] = []
    for position, message in enumerate(dialogue['messages']):
        if not isinstance(message, dict) or 'senderWorkerId' not in message:
            raise RedialDataError(f'{where}: message {position} lacks "senderWorkerId"')
        stats.messages += 1
        role = roles.get(str(message['senderWorkerId']))
        if role is None:
            stats.foreign_messages += 1
            continue
        text = ' '.join(str(message.get('text') or '').split())
        if not text:
            continue
        text = replace_mentions(text, catalog, stats)
        if turns and turns[-1]['role'] == role:
            turns[-1]['text'] += ' ' + text
        else:
            turns.append({'role': role, 'text': text})
    for turn in turns:
        turn['items'] = catalog.items_in_text(turn['text'])
    stats.dialogues += 1
    stats.turns += len(turns)
    if not any(turn['role'] == RECOMMENDER for turn in turns):
        stats.dialogues_without_recommender += 1
    return {'conversation_id': str(dialogue['conversationId']), 'turns': turns}


def process_file(
    lines: Iterable[str],
    source: str,
    catalog: ItemCatalog,
    stats: Optional[PreprocessStats] = None,
) -> Tuple[List[Dict], PreprocessStats]:
    stats = stats if stats is not None else PreprocessStats()
    episodes = [
        process_dialogue(dialogue, catalog, stats, f'{source}:{line_no}')
        for line_no, dialogue in read_jsonl(lines, source)
    ]
    return episodes, stats


def split_train_valid(episodes: List[Dict]) -> Tuple[List[Dict], List[Dict]]:
    train = [e for e in episodes if not is_valid_fold(e['conversation_id'])]
    valid = [e for e in episodes if is_valid_fold(e['conversation_id'])]
    return train, valid


def stats_warnings(stats: PreprocessStats, source: str) -> List[str]:
    """What the user must be told about a processed file (unknown ids, dropped messages)."""
    warnings = []
    if stats.unknown_mentions:
        top = ', '.join(f'@{i} x{n}' for i, n in stats.unknown_movie_ids.most_common(5))
        warnings.append(
            f'{source}: {stats.unknown_mentions} of {stats.mentions} movie mentions '
            f'({len(stats.unknown_movie_ids)} distinct ids) are not in movies_with_mentions.csv; '
            f'they became {UNKNOWN_ITEM_TOKEN}. Most frequent: {top}'
        )
    if stats.foreign_messages:
        warnings.append(
            f'{source}: dropped {stats.foreign_messages} messages whose sender is neither '
            'initiatorWorkerId nor respondentWorkerId'
        )
    return warnings
