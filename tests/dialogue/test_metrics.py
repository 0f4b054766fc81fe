"""Response metrics (parlai_conkd/metrics.py) against hand-computed values."""

import math

import pytest
import torch

from parlai_conkd.metrics import (
    dist_per_response,
    dist_ratio,
    distinct_tokens,
    first_item_slot,
    generated_items,
    item_overlap,
    response_recall_at_k,
)

# three responses: 7 unigrams (5 distinct), 4 bigrams (3 distinct), 2 trigrams (2 distinct), no 4-gram
THREE = [['i', 'like', 'it'], ['i', 'like', 'movies'], ['great']]


@pytest.mark.parametrize(
    'n, ratio, per_response',
    [(1, 5 / 7, 5 / 3), (2, 3 / 4, 3 / 3), (3, 2 / 2, 2 / 3), (4, 0.0, 0.0)],
)
def test_dist_conventions_on_three_sentences(n, ratio, per_response):
    assert dist_ratio(THREE, n) == pytest.approx(ratio)
    assert dist_per_response(THREE, n) == pytest.approx(per_response)


def test_dist_of_nothing_is_zero():
    assert dist_ratio([], 1) == 0.0
    assert dist_per_response([], 2) == 0.0


def test_distinct_tokens_keeps_item_tokens_whole_and_splits_punctuation():
    assert distinct_tokens('I LIKE __item_12__, a lot!') == [
        'i',
        'like',
        '__item_12__',
        ',',
        'a',
        'lot',
        '!',
    ]


def test_item_overlap_repeated_items_count_once():
    scores = item_overlap([7, 7, 3], [7])
    assert scores['precision'] == pytest.approx(1 / 2)
    assert scores['recall'] == pytest.approx(1.0)
    assert scores['f1'] == pytest.approx(2 / 3)


def test_item_overlap_no_item_generated():
    scores = item_overlap([], [4, 5])
    assert scores['precision'] is None  # undefined: not averaged
    assert scores['recall'] == 0.0
    assert scores['f1'] == 0.0


def test_item_overlap_wrong_item_and_empty_gold():
    assert item_overlap([1], [2])['f1'] == 0.0
    chit_chat = item_overlap([1], [])
    assert (
        chit_chat['precision'] == 0.0
        and chit_chat['recall'] is None
        and chit_chat['f1'] == 0.0
    )
    assert item_overlap([], []) == {'precision': None, 'recall': None, 'f1': None}


def test_first_item_slot_and_generated_items():
    item_of = {50: 0, 51: 1, 52: 2}
    seq = [9, 8, 51, 4, 50, 51, 2]
    assert first_item_slot(seq, item_of) == 2
    assert generated_items(seq, item_of) == [1, 0]
    assert first_item_slot([9, 8], item_of) is None
    assert generated_items([], item_of) == []


def test_response_recall_hand_computed():
    # one response ranks items 1 > 2 > 3 > 4 > 0 at its first item slot; gold new = {2, 3}
    scores = torch.tensor(
        [
            [0.1, 0.9, 0.5, 0.3, 0.2],
            [0.0, 0.0, 0.0, 0.0, 0.0],  # no slot: ignored
            [0.5, 0.4, 0.3, 0.2, 0.1],  # slot, but chit-chat: no gold
        ]
    )
    rer = response_recall_at_k(
        scores, [True, False, True], [[2, 3], [1], []], ks=(1, 2, 3)
    )
    assert rer[1] == [0.0, 0.0, None]
    assert rer[2] == [pytest.approx(0.5), 0.0, None]
    assert rer[3] == [pytest.approx(1.0), 0.0, None]


def test_response_recall_no_item_generated_is_zero_even_with_perfect_scores():
    scores = torch.tensor([[0.0, 10.0, 0.0]])
    assert response_recall_at_k(scores, [False], [[1]], ks=(1,))[1] == [0.0]
    assert response_recall_at_k(scores, [True], [[1]], ks=(1,))[1] == [1.0]


def test_response_recall_checks_lengths():
    with pytest.raises(ValueError, match='must match'):
        response_recall_at_k(torch.zeros(2, 3), [True], [[1], [2]])


def test_distinct_metric_wrapper_merges_like_the_pure_function():
    pytest.importorskip('parlai')
    from parlai_conkd.agents.conkd_dialogue_teacher.response_metrics import (
        DistinctNgramMetric,
    )

    for n in (1, 2, 3, 4):
        for per_response, pure in ((False, dist_ratio), (True, dist_per_response)):
            total = None
            for tokens in THREE:
                total = DistinctNgramMetric.of_response(tokens, n, per_response) + total
            assert math.isclose(total.value(), pure(THREE, n)), (n, per_response)


# ---------------------------------------------------------------------------- "when" (issue #24)
def test_when_counts_by_hand():
    from parlai_conkd.metrics import when_counts

    assert when_counts(True, True) == (1, 0, 0)
    assert when_counts(True, False) == (0, 1, 0)
    assert when_counts(False, True) == (0, 0, 1)
    assert when_counts(False, False) == (0, 0, 0)


def test_precision_recall_f1_by_hand():
    from parlai_conkd.metrics import precision_recall_f1

    # 3 replies name a film (2 should), 1 reply that should stays silent
    assert precision_recall_f1(2, 1, 1) == pytest.approx(
        {'precision': 2 / 3, 'recall': 2 / 3, 'f1': 2 / 3}
    )
    assert precision_recall_f1(1, 0, 3) == pytest.approx(
        {'precision': 1.0, 'recall': 0.25, 'f1': 0.4}
    )
    assert precision_recall_f1(0, 0, 2) == {
        'precision': None,
        'recall': 0.0,
        'f1': None,
    }
    assert precision_recall_f1(0, 2, 2)['f1'] == 0.0


def test_binary_decision_metric_sums_counts_not_per_response_values():
    from parlai_conkd.agents.conkd_dialogue_teacher.response_metrics import (
        BinaryDecisionMetric,
    )

    decisions = [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
        (True, True),
    ]
    for which, expected in (('precision', 2 / 3), ('recall', 2 / 3), ('f1', 2 / 3)):
        total = None
        for named, gold in decisions:
            metric = BinaryDecisionMetric.when(named, gold, which)
            total = metric if total is None else total + metric
        assert total.value() == pytest.approx(expected)
    with pytest.raises(ValueError, match='which must be'):
        BinaryDecisionMetric((0, 0, 0), 'accuracy')
