"""Ranking metrics against hand-computed values (parlai_conkd/ranking.py)."""

import math

import pytest
import torch

from parlai_conkd import ranking

SCORES = torch.tensor([[0.9, 0.1, 0.5, 0.3]])  # ranking: item0, item2, item3, item1


def approx(x):
    return pytest.approx(x, abs=1e-6)


def test_single_gold_item_positions():
    rec = ranking.recall_at_k(SCORES, [[2]], ks=(1, 2, 4))  # item 2 is 2nd
    assert rec[1].tolist() == [0.0]
    assert rec[2].tolist() == [1.0]
    assert rec[4].tolist() == [1.0]
    assert ranking.mrr(SCORES, [[2]]).item() == approx(0.5)
    ndcg = ranking.ndcg_at_k(SCORES, [[2]], ks=(1, 2))
    assert ndcg[1].item() == approx(0.0)
    assert ndcg[2].item() == approx(1 / math.log2(3))


def test_several_gold_items_fraction_per_example():
    # item0 at position 1, item1 at position 4
    rec = ranking.recall_at_k(SCORES, [[0, 1]], ks=(1, 3, 4))
    assert rec[1].item() == approx(0.5)
    assert rec[3].item() == approx(0.5)
    assert rec[4].item() == approx(1.0)
    assert ranking.mrr(SCORES, [[0, 1]]).item() == approx((1 + 1 / 4) / 2)
    # duplicates in the gold list count once
    assert ranking.recall_at_k(SCORES, [[0, 0, 1]], ks=(1,))[1].item() == approx(0.5)


def test_all_ties_give_expected_values_not_optimistic_ones():
    flat = torch.zeros(1, 4)
    rec = ranking.recall_at_k(flat, [[1]], ks=(1, 2, 4))
    assert rec[1].item() == approx(0.25)
    assert rec[2].item() == approx(0.5)
    assert rec[4].item() == approx(1.0)
    assert ranking.mrr(flat, [[1]]).item() == approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    assert ranking.ndcg_at_k(flat, [[1]], ks=(2,))[2].item() == approx(
        (1 + 1 / math.log2(3)) / 4
    )


def test_partial_tie_block():
    # gold item 2: positions 2..4 equally likely
    scores = torch.tensor([[3.0, 2.0, 2.0, 2.0, 1.0]])
    rec = ranking.recall_at_k(scores, [[2]], ks=(1, 2, 3, 4))
    assert [rec[k].item() for k in (1, 2, 3, 4)] == [
        approx(0),
        approx(1 / 3),
        approx(2 / 3),
        approx(1),
    ]
    assert ranking.mrr(scores, [[2]]).item() == approx((1 / 2 + 1 / 3 + 1 / 4) / 3)
    ndcg3 = (1 / math.log2(3) + 1 / math.log2(4)) / 3
    assert ranking.ndcg_at_k(scores, [[2]], ks=(3,))[3].item() == approx(ndcg3)


def test_exclude_context_items():
    # excluding item0 lifts item2 to position 1
    assert ranking.recall_at_k(SCORES, [[2]], ks=(1,), exclude=[[0]])[
        1
    ].item() == approx(1.0)
    assert ranking.mrr(SCORES, [[2]], exclude=[[0]]).item() == approx(1.0)
    # a boolean mask works the same
    mask = torch.tensor([[True, False, False, False]])
    assert ranking.mrr(SCORES, [[2]], exclude=mask).item() == approx(1.0)


def test_excluded_gold_item_is_a_counted_miss():
    sums = ranking.ranking_sums(SCORES, [[0, 2]], ks=(1, 4), exclude=[[0]])
    assert sums['count'].tolist() == [2.0]
    assert sums['recall@1'].item() == approx(1.0)  # item2 now first; item0 a miss
    assert sums['recall@4'].item() == approx(1.0)
    assert sums['mrr'].item() == approx(1.0)


def test_sums_give_per_pair_micro_average_over_a_batch():
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.0, 1.0, 2.0, 3.0]])
    gold = [[0, 1], [3]]  # pairs: pos1, pos4, pos1
    sums = ranking.ranking_sums(scores, gold, ks=(1,))
    assert sums['count'].tolist() == [2.0, 1.0]
    assert sums['recall@1'].tolist() == [approx(1.0), approx(1.0)]
    micro = sums['recall@1'].sum() / sums['count'].sum()
    assert micro.item() == approx(2 / 3)  # per (example, gold item) pair
    per_example = ranking.recall_at_k(scores, gold, ks=(1,))[1]
    assert per_example.tolist() == [approx(0.5), approx(1.0)]
    assert set(sums) == {'recall@1', 'mrr', 'ndcg@1', 'count'}


def test_empty_gold_list():
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.3]])
    rec = ranking.recall_at_k(scores, [[], [1]], ks=(1,))[1]
    assert math.isnan(rec[0].item()) and rec[1].item() == approx(1.0)
    sums = ranking.ranking_sums(scores, [[], [1]], ks=(1,))
    assert sums['count'].tolist() == [0.0, 1.0]
    assert sums['recall@1'].tolist() == [0.0, 1.0]
    # a batch with no gold at all
    assert ranking.ranking_sums(scores, [[], []], ks=(1,))['count'].tolist() == [
        0.0,
        0.0,
    ]


def test_minus_inf_scores_rank_last():
    scores = torch.tensor([[float('-inf'), 0.0, 1.0]])
    assert ranking.recall_at_k(scores, [[1]], ks=(2,))[2].item() == approx(1.0)
    assert ranking.mrr(scores, [[1]]).item() == approx(0.5)


def test_bad_input_is_a_clear_error():
    with pytest.raises(IndexError, match='example 0: item index 7'):
        ranking.recall_at_k(SCORES, [[7]])
    with pytest.raises(ValueError, match='2 gold lists for 1 score rows'):
        ranking.recall_at_k(SCORES, [[0], [1]])
    with pytest.raises(ValueError, match=r'\[batch, items\]'):
        ranking.recall_at_k(torch.zeros(4), [[0]])
