"""ParlAI's ACUTE-Eval pairings JSONL: one comparison per line.

The shape mirrors ``parlai/crowdsourcing/tasks/acute_eval`` (README, ``task_config/onboarding.json``
and the runner's ``_load_conversation_data``)::

    {"is_onboarding": false, "speakers_to_eval": ["model_a", "model_b"], "correct_answer": null,
     "tags": [...], "dialogue_ids": [3, 53],
     "dialogue_dicts": [{"speakers": ["model_a", "seeker"], "id": "model_a:3",
                         "evaluator_id_hashed": "...", "oz_id_hashed": null,
                         "dialogue": [{"id": "seeker", "text": "..."}, ...]}, {...}]}

Checks are those the ACUTE runner makes (the evaluated speakers appear in dialogue_dicts in the
order of ``speakers_to_eval``) plus onboarding pairs naming a ``correct_answer`` among them, no
internal token (``__silence__``, ``[REC]``, ``__item_12__``, ...) in any text a rater sees, strictly
alternating turns (ACUTE's README assumes them; no speaker has two turns in a row), and, when
pairings are built, no model paired with itself (the same log under two names). Logs are read
with :func:`~parlai_conkd.human_eval.conversations.read_episodes`: a malformed log is refused
naming its file, line and conversation id, or normalised by the rules in that module's doc.
"""

import hashlib
import itertools
import json
import os
import random
from typing import Dict, List, Optional, Sequence

from parlai_conkd.fileio import atomic_write
from parlai_conkd.human_eval.conversations import (
    SEEKER_ID,
    LogError,
    internal_tokens,
    read_episodes,
    seeker_turns,
    to_acute_dialogue,
)
from parlai_conkd.human_eval.files import iter_jsonl


class PairingError(ValueError):
    """A pairing that ACUTE-Eval would reject; the message names the file and line."""


def validate(pair: Dict, where: str = 'pairing') -> Dict:
    """Raise PairingError unless ``pair`` is a usable ACUTE-Eval pairing; returns it."""
    for key in ('is_onboarding', 'speakers_to_eval', 'dialogue_dicts'):
        if key not in pair:
            raise PairingError(f'{where}: missing "{key}"')
    speakers = pair['speakers_to_eval']
    dialogues = pair['dialogue_dicts']
    if not (
        isinstance(speakers, list) and len(speakers) == 2 and speakers[0] != speakers[1]
    ):
        raise PairingError(
            f'{where}: speakers_to_eval must be two different names, got {speakers!r}'
        )
    if not (isinstance(dialogues, list) and len(dialogues) == 2):
        raise PairingError(f'{where}: dialogue_dicts must hold two dialogues')
    for side, d in enumerate(dialogues):
        if not isinstance(d.get('dialogue'), list) or not d['dialogue']:
            raise PairingError(f'{where}: dialogue_dicts[{side}] has no dialogue turns')
        for turn_no, turn in enumerate(d['dialogue']):
            if not isinstance(turn, dict) or 'id' not in turn or 'text' not in turn:
                raise PairingError(
                    f'{where}: dialogue_dicts[{side}].dialogue[{turn_no}] needs "id" and "text"'
                )
            if turn_no and turn['id'] == d['dialogue'][turn_no - 1]['id']:
                raise PairingError(
                    f'{where}: dialogue_dicts[{side}].dialogue[{turn_no}] is a second turn in a row '
                    f'by {turn["id"]!r}: ACUTE-Eval shows strictly alternating turns; rebuild the '
                    'pairings with `python -m parlai_conkd.human_eval pairings` (it merges them)'
                )
            leaked = internal_tokens(str(turn['text']))
            if leaked:
                raise PairingError(
                    f'{where}: dialogue_dicts[{side}].dialogue[{turn_no}] would show raters the internal '
                    f'token {leaked[0]!r}; rebuild the pairings with `python -m parlai_conkd.human_eval '
                    'pairings` (it renders items as titles and drops the rest)'
                )
    evaluated = [s for d in dialogues for s in d.get('speakers', []) if s in speakers]
    if evaluated != speakers:
        raise PairingError(
            f'{where}: the evaluated speakers appear in dialogue_dicts as {evaluated}, '
            f'expected {speakers} (one per dialogue, in order)'
        )
    if pair['is_onboarding']:
        if pair.get('correct_answer') not in speakers:
            raise PairingError(
                f'{where}: onboarding pair needs correct_answer in {speakers}'
            )
    return pair


def read_pairings(path: str) -> List[Dict]:
    """All pairings of a JSONL file (a single JSON object file such as onboarding.json works too)."""
    if not os.path.isfile(path):
        raise PairingError(f'pairings file not found: {path}')
    with open(path, encoding='utf-8') as f:
        content = f.read()
    try:
        whole = json.loads(content)
    except json.JSONDecodeError:
        whole = None
    if isinstance(whole, dict):
        return [validate(whole, path)]
    pairs = [
        validate(pair, f'{path}:{line_no}')
        for line_no, pair in iter_jsonl(path, PairingError, 'pairings file')
    ]
    if not pairs:
        raise PairingError(f'{path}: no pairings')
    return pairs


def write_pairings(pairs: Sequence[Dict], path: str) -> None:
    """Validate and write atomically (readers never see half a file)."""
    for i, pair in enumerate(pairs):
        validate(pair, f'pairing {i}')
    with atomic_write(path) as f:
        for pair in pairs:
            f.write(json.dumps(pair, ensure_ascii=False) + '\n')


def _replies(episode: Dict) -> List[str]:
    """The model side of a (checked) episode."""
    return [pair[1]['text'] for pair in episode['dialog']]


def _hash(*parts) -> str:
    return hashlib.sha1(':'.join(map(str, parts)).encode()).hexdigest()[:16]


def build_pairings(
    logs: Dict[str, str],
    catalog=None,
    max_turns: Optional[int] = None,
    pairs_per_matchup: Optional[int] = None,
    source: str = 'redial_crs:test',
    seed: int = 0,
) -> List[Dict]:
    """Model-vs-model pairings over the same contexts, from one Conversations log per model.

    Episode *i* of every log must replay the same seeker turns (same task, datatype and order) of
    the same conversation id; that is checked. A malformed log raises LogError naming its file,
    line and conversation id. For each pair of models (in the given order), each shared context
    becomes one pairing; ``pairs_per_matchup`` samples that many contexts (seeded).
    """
    if len(logs) < 2:
        raise PairingError(f'need logs of at least two models, got {list(logs)}')
    entries = {name: read_episodes(path) for name, path in logs.items()}
    episodes = {
        name: [entry.episode for entry in found] for name, found in entries.items()
    }
    count = min(len(e) for e in episodes.values())
    names = list(logs)
    for name in names[1:]:
        for i in range(count):
            ours, first = entries[name][i], entries[names[0]][i]
            if seeker_turns(ours.episode) != seeker_turns(first.episode) or (
                ours.conversation_id != first.conversation_id
            ):
                raise PairingError(
                    f'{ours.where}: episode {i} replays other seeker turns than episode {i} of '
                    f'{first.where}: make every log with the same --task, --datatype and '
                    '--num-examples'
                )
    for a, b in itertools.combinations(names, 2):
        same_file = os.path.realpath(logs[a]) == os.path.realpath(logs[b])
        if same_file or all(
            _replies(episodes[a][i]) == _replies(episodes[b][i]) for i in range(count)
        ):
            raise PairingError(
                f'{logs[a]} ({a}) and {logs[b]} ({b}) '
                + (
                    'are the same file'
                    if same_file
                    else f'hold the same replies in all {count} episodes'
                )
                + ': one model under two names would be compared with itself; give one log per model'
            )
    # dialogue ids unique across the whole file, as Fast-ACUTE's _assign_unique_ids does
    dialogue_id = {
        (name, i): m * count + i for m, name in enumerate(names) for i in range(count)
    }
    rng = random.Random(seed)
    pairs = []
    for a, b in itertools.combinations(names, 2):
        contexts = list(range(count))
        if pairs_per_matchup is not None and pairs_per_matchup < count:
            contexts = sorted(rng.sample(contexts, pairs_per_matchup))
        for i in contexts:
            dicts = []
            for name in (a, b):
                try:
                    d = to_acute_dialogue(
                        episodes[name][i],
                        name,
                        catalog,
                        max_turns,
                        source=entries[name][i].where,
                    )
                except LogError as exc:
                    raise PairingError(str(exc)) from exc
                d.update(
                    {
                        'id': f'{name}:{i}',
                        # the replayed human is the ReDial seeker of this test context, not a live
                        # evaluator; there is no wizard-of-oz side
                        'evaluator_id_hashed': _hash(source, i),
                        'oz_id_hashed': None,
                    }
                )
                dicts.append(d)
            pairs.append(
                {
                    'is_onboarding': False,
                    'speakers_to_eval': [a, b],
                    'correct_answer': None,
                    'tags': [source, f'context:{i}', f'{a}__vs__{b}'],
                    'dialogue_ids': [dialogue_id[(a, i)], dialogue_id[(b, i)]],
                    'dialogue_dicts': dicts,
                }
            )
    return pairs


#: The degenerate side of generated attention checks: any attentive rater prefers the other one.
BROKEN_REPLY = 'movie movie movie the the the movie movie.'
ONBOARDING_GOOD = 'onboarding_good'
ONBOARDING_BAD = 'onboarding_bad'


def onboarding_from_gold(
    log_path: str,
    count: int = 1,
    catalog=None,
    max_turns: Optional[int] = 6,
    source: str = 'redial_crs:test',
    seed: int = 0,
) -> List[Dict]:
    """Attention-check pairs from a log's own contexts: the human (gold) recommender's replies vs
    a repeated broken reply. ACUTE's paper used human-human vs weak-model chats the same way.

    Gold replies come from the teacher act's ``eval_labels`` that ``--world-logs`` records.
    """
    entries = read_episodes(log_path)
    episodes = [entry.episode for entry in entries]
    usable = [
        i
        for i, e in enumerate(episodes)
        if all((p[0].get('eval_labels') or p[0].get('labels')) for p in e['dialog'])
    ]
    if len(usable) < count:
        raise PairingError(
            f'{log_path}: {len(usable)} episodes with gold replies, need {count}'
        )
    rng = random.Random(seed)
    pairs = []
    for i in sorted(rng.sample(usable, count)):
        gold, broken = [], []
        for act_pair in episodes[i]['dialog']:
            teacher = act_pair[0]
            labels = teacher.get('eval_labels') or teacher.get('labels')
            gold.append([teacher, {'id': ONBOARDING_GOOD, 'text': labels[0]}])
            broken.append([teacher, {'id': ONBOARDING_BAD, 'text': BROKEN_REPLY}])
        dicts = []
        for name, dialog in ((ONBOARDING_GOOD, gold), (ONBOARDING_BAD, broken)):
            d = to_acute_dialogue(
                {'dialog': dialog}, name, catalog, max_turns, source=entries[i].where
            )
            d.update(
                {
                    'id': f'{name}:{i}',
                    'evaluator_id_hashed': _hash(source, i),
                    'oz_id_hashed': None,
                }
            )
            dicts.append(d)
        # the correct side is not always shown first in the file; the page shuffles sides anyway
        if rng.random() < 0.5:
            dicts.reverse()
        speakers = [d['speakers'][0] for d in dicts]
        pairs.append(
            {
                'is_onboarding': True,
                'speakers_to_eval': speakers,
                'correct_answer': ONBOARDING_GOOD,
                'tags': [f'onboarding{i:04d}', source],
                'dialogue_ids': [-1 - 2 * len(pairs), -2 - 2 * len(pairs)],
                'dialogue_dicts': dicts,
            }
        )
    return pairs


__all__ = [
    'BROKEN_REPLY',
    'ONBOARDING_BAD',
    'ONBOARDING_GOOD',
    'PairingError',
    'SEEKER_ID',
    'build_pairings',
    'onboarding_from_gold',
    'read_pairings',
    'validate',
    'write_pairings',
]
