"""Thin ParlAI Metric wrappers for the corpus-level metrics of parlai_conkd.metrics.

Per-response averages (ReR@k, item precision/F1, item ratio) are plain ``AverageMetric``s; Dist-n
needs a metric that merges n-gram sets across responses and batches, and the "when" precision /
recall / F1 one that sums counts.
"""

from typing import FrozenSet, Sequence, Tuple

from parlai.core.metrics import Metric

from parlai_conkd.metrics import ngrams, precision_recall_f1, when_counts


class BinaryDecisionMetric(Metric):
    """Precision, recall or F1 (``which``) of a binary decision from summed counts: each response
    adds its (tp, fp, fn), so the value is the corpus one, not a mean of per-response values.
    """

    __slots__ = ('_counts', '_which')

    def __init__(self, counts: Tuple[int, int, int], which: str):
        if which not in ('precision', 'recall', 'f1'):
            raise ValueError(f'which must be precision, recall or f1, not {which!r}')
        self._counts = tuple(int(c) for c in counts)
        self._which = which

    @classmethod
    def when(cls, names_item: bool, gold_names_new_item: bool, which: str):
        return cls(when_counts(names_item, gold_names_new_item), which)

    @property
    def macro_average(self) -> bool:
        return False

    def __add__(self, other):
        if other is None:
            return self
        return BinaryDecisionMetric(
            tuple(a + b for a, b in zip(self._counts, other._counts)), self._which
        )

    def value(self) -> float:
        value = precision_recall_f1(*self._counts)[self._which]
        return 0.0 if value is None else value


class DistinctNgramMetric(Metric):
    """Distinct n-grams over every response added so far.

    ``per_response=False``: distinct / all n-grams (``dist-n``, corpus ratio).
    ``per_response=True``: distinct n-grams / responses (``dist_crs-n``, KBRD/KGSF/CRSLab).
    """

    __slots__ = ('_grams', '_total', '_responses', '_per_response')

    def __init__(
        self,
        grams: FrozenSet[Tuple[str, ...]],
        total: int,
        responses: int,
        per_response: bool,
    ):
        self._grams = grams
        self._total = total
        self._responses = responses
        self._per_response = per_response

    @classmethod
    def of_response(
        cls, tokens: Sequence[str], n: int, per_response: bool
    ) -> 'DistinctNgramMetric':
        grams = ngrams(tokens, n)
        return cls(frozenset(grams), len(grams), 1, per_response)

    @property
    def macro_average(self) -> bool:
        return False

    def __add__(self, other):
        if other is None:
            return self
        return DistinctNgramMetric(
            self._grams | other._grams,
            self._total + other._total,
            self._responses + other._responses,
            self._per_response,
        )

    def value(self) -> float:
        denominator = self._responses if self._per_response else self._total
        return len(self._grams) / denominator if denominator else 0.0
