"""A rater's unit of work, what the page sees of it, and the stored result in ACUTE-Eval's shape.

A unit is one question and a list of comparisons (onboarding ones first, for a rater's first
unit). Its spec stays with the requester (server memory, or the MTurk manifest); the page only
ever gets the *view*: two transcripts labelled left/right with each turn marked "evaluated" or
"partner", never the model names, nor which onboarding side is correct.

A completed unit is stored as Mephisto stores an ACUTE-Eval unit (``AcuteEvalAgentState``):
``data.inputs[i]`` = ``{"task_specs": {question, s1_choice, s2_choice, is_onboarding, model_left,
model_right}, "pairing_dict": <the pairing>, "pair_id": <line in the pairings file>}`` and
``data.outputs.final_data[i]`` = ``{"speakerChoice": <model name>, "textReason": ...}``, plus
the unit's ``worker_id``, ``unit_id``, ``task_start``, ``task_end`` that ACUTE's analysis reads.
"""

import os
import random
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence

from parlai_conkd.human_eval.files import append_jsonl, iter_jsonl

MIN_REASON_CHARS = 5


class AnswerError(ValueError):
    """Answers that do not fit their unit (wrong count, unknown choice, missing reason)."""


@dataclass
class UnitItem:
    pair_id: int
    #: which of the pairing's two dialogues is shown on the left (0 or 1)
    left: int
    is_onboarding: bool


@dataclass
class UnitSpec:
    unit_id: str
    question: Dict[str, str]
    items: List[UnitItem] = field(default_factory=list)
    worker_id: Optional[str] = None
    task_start: Optional[float] = None

    def to_dict(self) -> Dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict) -> 'UnitSpec':
        return cls(
            d['unit_id'],
            d['question'],
            [UnitItem(**i) for i in d['items']],
            d.get('worker_id'),
            d.get('task_start'),
        )

    @property
    def onboarding_count(self) -> int:
        return sum(1 for i in self.items if i.is_onboarding)


def make_unit(
    question: Dict[str, str],
    pair_ids: Sequence[int],
    pairs: Sequence[Dict],
    rng: random.Random,
    onboarding_ids: Sequence[int] = (),
) -> UnitSpec:
    """Onboarding comparisons first (as ACUTE does), each side placed left at random."""
    items = [UnitItem(p, rng.randint(0, 1), True) for p in onboarding_ids]
    items += [
        UnitItem(p, rng.randint(0, 1), bool(pairs[p]['is_onboarding']))
        for p in pair_ids
    ]
    return UnitSpec(uuid.uuid4().hex[:12], dict(question), items)


def _side_view(dialogue_dict: Dict, speaker: str) -> List[Dict[str, str]]:
    return [
        {'role': 'evaluated' if t['id'] == speaker else 'partner', 'text': t['text']}
        for t in dialogue_dict['dialogue']
    ]


def page_view(unit: UnitSpec, pairs: Sequence[Dict]) -> Dict:
    """What the rating page gets: no model names, no correct answers."""
    comparisons = []
    for item in unit.items:
        pair = pairs[item.pair_id]
        sides = []
        for index in (item.left, 1 - item.left):
            sides.append(
                _side_view(
                    pair['dialogue_dicts'][index], pair['speakers_to_eval'][index]
                )
            )
        comparisons.append({'left': sides[0], 'right': sides[1]})
    return {
        'unit_id': unit.unit_id,
        'question': {
            k: unit.question[k] for k in ('question', 's1_choice', 's2_choice')
        },
        'onboarding_count': unit.onboarding_count,
        'comparisons': comparisons,
        'min_reason_chars': MIN_REASON_CHARS,
    }


def check_answers(
    unit: UnitSpec, answers: Sequence[Dict], upto: Optional[int] = None
) -> None:
    expected = len(unit.items) if upto is None else upto
    if len(answers) != expected:
        raise AnswerError(
            f'unit {unit.unit_id}: {len(answers)} answers for {expected} comparisons'
        )
    for i, answer in enumerate(answers):
        if answer.get('choice') not in ('left', 'right'):
            raise AnswerError(
                f'unit {unit.unit_id}: answer {i} has choice {answer.get("choice")!r}'
            )
        if len((answer.get('reason') or '').strip()) < MIN_REASON_CHARS:
            raise AnswerError(
                f'unit {unit.unit_id}: answer {i} needs a reason of at least '
                f'{MIN_REASON_CHARS} characters'
            )


def chosen_speaker(item: UnitItem, pair: Dict, choice: str) -> str:
    index = item.left if choice == 'left' else 1 - item.left
    return pair['speakers_to_eval'][index]


def onboarding_score(
    unit: UnitSpec, pairs: Sequence[Dict], answers: Sequence[Dict]
) -> Optional[float]:
    """Fraction of the unit's onboarding comparisons answered correctly (None: there were none)."""
    graded = [
        (item, answer)
        for item, answer in zip(unit.items, answers)
        if item.is_onboarding
    ]
    if not graded:
        return None
    correct = sum(
        chosen_speaker(item, pairs[item.pair_id], answer['choice'])
        == pairs[item.pair_id]['correct_answer']
        for item, answer in graded
    )
    return correct / len(graded)


def result_record(
    unit: UnitSpec,
    pairs: Sequence[Dict],
    answers: Sequence[Dict],
    worker_id: str,
    status: str,
    task_end: Optional[float] = None,
    **ids,
) -> Dict:
    """One unit in ACUTE-Eval's stored shape (see module docstring)."""
    inputs, final_data = [], []
    for item, answer in zip(unit.items, answers):
        pair = pairs[item.pair_id]
        sides = [
            {
                'name': pair['speakers_to_eval'][i],
                'dialogue': pair['dialogue_dicts'][i]['dialogue'],
            }
            for i in (item.left, 1 - item.left)
        ]
        inputs.append(
            {
                'task_specs': {
                    's1_choice': unit.question['s1_choice'],
                    's2_choice': unit.question['s2_choice'],
                    'question': unit.question['question'],
                    'is_onboarding': item.is_onboarding,
                    'model_left': sides[0],
                    'model_right': sides[1],
                },
                'pairing_dict': pair,
                'pair_id': item.pair_id,
            }
        )
        final_data.append(
            {
                'speakerChoice': chosen_speaker(item, pair, answer['choice']),
                'textReason': answer['reason'].strip(),
            }
        )
    record = {
        'unit_id': unit.unit_id,
        'worker_id': worker_id,
        'status': status,
        'task_start': unit.task_start,
        'task_end': task_end if task_end is not None else time.time(),
        'data': {'inputs': inputs, 'outputs': {'final_data': final_data}},
    }
    record.update(ids)
    return record


class ResultStore:
    """Completed units, one JSON line each, appended under a lock and fsync'd."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def append(self, record: Dict) -> None:
        with self._lock:
            append_jsonl(self.path, record)

    def records(self) -> List[Dict]:
        return read_results(self.path) if os.path.exists(self.path) else []


def read_results(path: str) -> List[Dict]:
    """Stored units; a torn line (crash mid-write) is reported with its line number."""
    return [record for _, record in iter_jsonl(path, ValueError, 'results file')]
