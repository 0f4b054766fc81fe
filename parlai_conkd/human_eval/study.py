"""A study: pairings + questions + stored results, and the rules ACUTE-Eval's runner applies.

- Each unit asks one question about ``pairs_per_unit`` comparisons; the question least answered
  so far is asked next, and the comparisons least rated for it that this rater has not rated.
- One rating per rater per comparison and question: a rater with a unit in progress gets that same
  unit back (a page reload), never a second copy; a unit holding a comparison the rater already
  rated is refused at submission (the analysis also counts only a rater's first rating).
- A rater's first unit starts with onboarding comparisons; scoring below ``onboarding_threshold``
  screens the rater out (ACUTE soft-blocks them); their answers are kept but marked
  ``status="screened_out"`` and the analysis drops them, as ACUTE's ``_remove_failed_onboarding``.
"""

import random
import threading
import time
from collections import Counter
from typing import Dict, List, Optional, Sequence

from parlai_conkd.human_eval.questions import Question
from parlai_conkd.human_eval.units import (
    AnswerError,
    ResultStore,
    UnitSpec,
    check_answers,
    make_unit,
    onboarding_score,
    page_view,
    result_record,
)

COMPLETED = 'completed'
SCREENED_OUT = 'screened_out'


class StudyError(ValueError):
    """A request the study cannot serve (unknown unit, screened-out rater, nothing left)."""


class Study:
    def __init__(
        self,
        pairs: Sequence[Dict],
        questions: Sequence[Question],
        store: ResultStore,
        pairs_per_unit: int = 3,
        onboarding_per_worker: int = 1,
        onboarding_threshold: float = 0.75,
        seed: Optional[int] = None,
        unit_timeout_s: float = 2 * 3600,
    ):
        self.pairs = list(pairs)
        self.questions = list(questions)
        self.store = store
        self.pairs_per_unit = pairs_per_unit
        self.onboarding_per_worker = onboarding_per_worker
        self.onboarding_threshold = onboarding_threshold
        self.rng = random.Random(seed)
        self.onboarding_ids = [
            i for i, p in enumerate(self.pairs) if p['is_onboarding']
        ]
        self.eval_ids = [i for i, p in enumerate(self.pairs) if not p['is_onboarding']]
        if not self.eval_ids:
            raise StudyError(
                'the pairings hold no comparisons to evaluate (only onboarding)'
            )
        if onboarding_per_worker and not self.onboarding_ids:
            raise StudyError(
                'onboarding is on but the pairings hold no onboarding pair '
                '(build them with --onboarding, or pass --onboarding-per-worker 0)'
            )
        self.pending: Dict[str, UnitSpec] = {}
        #: an abandoned unit stops holding its comparisons back from other raters after this long
        self.unit_timeout_s = unit_timeout_s
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ bookkeeping
    def _records(self) -> List[Dict]:
        return self.store.records()

    def worker_status(self, worker_id: str) -> Optional[str]:
        statuses = {r['status'] for r in self._records() if r['worker_id'] == worker_id}
        if SCREENED_OUT in statuses:
            return SCREENED_OUT
        return COMPLETED if COMPLETED in statuses else None

    def _expire(self) -> None:
        cutoff = time.time() - self.unit_timeout_s
        for unit_id in [
            u
            for u, unit in self.pending.items()
            if unit.task_start and unit.task_start < cutoff
        ]:
            del self.pending[unit_id]

    def _counts(self):
        per_question, per_pair = Counter(), Counter()
        for record in self._records():
            if record['status'] != COMPLETED:
                continue
            for entry in record['data']['inputs']:
                question = entry['task_specs']['question']
                per_question[question] += 1
                per_pair[(question, entry['pair_id'])] += 1
        for unit in self.pending.values():
            for item in unit.items:
                per_question[unit.question['question']] += 1
                per_pair[(unit.question['question'], item.pair_id)] += 1
        return per_question, per_pair

    def rated(self, worker_id: str, question: str) -> set:
        """Pair ids this rater has a stored rating of for ``question``."""
        return {
            e['pair_id']
            for r in self._records()
            if r['worker_id'] == worker_id
            for e in r['data']['inputs']
            if e['task_specs']['question'] == question
        }

    # ------------------------------------------------------------------ units
    def new_unit(
        self, worker_id: Optional[str], with_onboarding: Optional[bool] = None
    ) -> UnitSpec:
        """The next unit for a rater (``worker_id=None``: an anonymous MTurk HIT)."""
        with self._lock:
            self._expire()
            status = self.worker_status(worker_id) if worker_id else None
            if status == SCREENED_OUT:
                raise StudyError(f'rater {worker_id} was screened out by onboarding')
            if worker_id:
                for unit in self.pending.values():
                    if unit.worker_id == worker_id:
                        return unit  # a reload: the unit in progress, not a second copy of it
            per_question, per_pair = self._counts()
            order = sorted(
                self.questions,
                key=lambda q: (per_question[q.question], self.rng.random()),
            )
            for question in order:
                seen = self.rated(worker_id, question.question) if worker_id else set()
                candidates = [p for p in self.eval_ids if p not in seen]
                if candidates:
                    break
            else:
                raise StudyError(
                    f'rater {worker_id} has rated every comparison for every question'
                )
            candidates.sort(
                key=lambda p: (per_pair[(question.question, p)], self.rng.random())
            )
            chosen = sorted(candidates[: self.pairs_per_unit])
            if with_onboarding is None:
                with_onboarding = status is None
            onboarding = []
            if with_onboarding and self.onboarding_per_worker:
                onboarding = self.rng.sample(
                    self.onboarding_ids,
                    min(self.onboarding_per_worker, len(self.onboarding_ids)),
                )
            unit = make_unit(
                question.to_dict(), chosen, self.pairs, self.rng, onboarding
            )
            unit.worker_id = worker_id
            unit.task_start = time.time()
            self.pending[unit.unit_id] = unit
            return unit

    def view(self, unit: UnitSpec) -> Dict:
        return page_view(unit, self.pairs)

    def _unit(self, unit_id: str, worker_id: str) -> UnitSpec:
        unit = self.pending.get(unit_id)
        if unit is None:
            raise StudyError(f'unknown, expired or finished unit {unit_id!r}')
        if unit.worker_id != worker_id:
            raise StudyError(f'unit {unit_id} belongs to another rater')
        return unit

    def passes(self, unit: UnitSpec, answers: Sequence[Dict]) -> bool:
        score = onboarding_score(unit, self.pairs, answers)
        return score is None or score >= self.onboarding_threshold

    def grade_onboarding(
        self, unit_id: str, worker_id: str, answers: Sequence[Dict]
    ) -> bool:
        """Grade a unit's onboarding answers; a failing rater is stored as screened out."""
        with self._lock:
            unit = self._unit(unit_id, worker_id)
            check_answers(unit, answers, upto=unit.onboarding_count)
            if self.passes(unit, answers):
                return True
            onboarding_only = UnitSpec(
                unit.unit_id,
                unit.question,
                unit.items[: unit.onboarding_count],
                worker_id,
                unit.task_start,
            )
            self.store.append(
                result_record(
                    onboarding_only, self.pairs, answers, worker_id, SCREENED_OUT
                )
            )
            del self.pending[unit_id]
            return False

    def _refuse_repeats(self, unit: UnitSpec, worker_id: str) -> None:
        seen = self.rated(worker_id, unit.question['question'])
        repeated = sorted(
            i.pair_id for i in unit.items if not i.is_onboarding and i.pair_id in seen
        )
        if repeated:
            del self.pending[unit.unit_id]
            raise StudyError(
                f'rater {worker_id} already rated comparison(s) {repeated} for this question; '
                f'unit {unit.unit_id} is not stored'
            )

    def submit(
        self, unit_id: str, worker_id: str, answers: Sequence[Dict], **ids
    ) -> Dict:
        with self._lock:
            unit = self._unit(unit_id, worker_id)
            check_answers(unit, answers)
            self._refuse_repeats(unit, worker_id)
            status = COMPLETED if self.passes(unit, answers) else SCREENED_OUT
            record = result_record(unit, self.pairs, answers, worker_id, status, **ids)
            self.store.append(record)
            del self.pending[unit_id]
            return record


__all__ = ['AnswerError', 'COMPLETED', 'SCREENED_OUT', 'Study', 'StudyError']
