"""The rec teacher's co-occurrence term and temperature scaling against hand-computed values."""

import math

import pytest
import torch

from parlai_conkd.calibration import fit_temperature, mean_nll, sharpness
from parlai_conkd.rgcn import (
    ItemCooccurrence,
    KnowledgeRecommender,
    cooccurrence_counts,
    leave_one_out,
)


def test_counts_are_symmetric_pairs_of_one_dialogue():
    counts = cooccurrence_counts([[0, 1, 2], [1, 2], [2, 2, 3]], 5).to_dense()
    expected = torch.zeros(5, 5)
    for a, b in [(0, 1), (0, 2), (1, 2), (1, 2), (2, 3)]:
        expected[a, b] += 1
        expected[b, a] += 1
    assert torch.equal(counts, expected)


def test_totals_sum_rows_of_the_context_items_and_ignore_other_ids():
    term = ItemCooccurrence(cooccurrence_counts([[0, 1, 2], [1, 2], [2, 3]], 4))
    # context ids: items 1 and 2, a text entity (id 7 >= N) and padding
    totals = term.totals(torch.tensor([[1, 2, 7, -1], [-1, -1, -1, -1]]))
    # C[1] = [1, 0, 2, 0], C[2] = [1, 2, 0, 1]
    assert totals.tolist() == [[2, 2, 2, 1], [0, 0, 0, 0]]
    scores = term(torch.tensor([[1, 2, 7, -1]]))
    assert torch.allclose(scores, torch.log1p(torch.tensor([[2.0, 2, 2, 1]])))


def test_leave_one_out_removes_exactly_the_dialogue_own_pairs():
    dialogues = [[0, 1, 2], [1, 2], [2, 3]]
    term = ItemCooccurrence(cooccurrence_counts(dialogues, 4))
    context = [1, 2]  # a training example from dialogue 0, before item 0 was named
    own = leave_one_out(context, dialogues[0], 4)
    # dialogue 0 added: to item 0 one pair with 1 and one with 2; to item 1 one pair with 2;
    # to item 2 one pair with 1; nothing to item 3
    assert own.tolist() == [2, 1, 1, 0]
    without = term.totals(torch.tensor([context])) - own
    with_others_only = cooccurrence_counts(dialogues[1:], 4).to_dense()[context].sum(0)
    assert torch.equal(without[0], with_others_only)
    assert leave_one_out([], [0, 1], 4).tolist() == [0, 0, 0, 0]


def test_recommender_adds_the_term_and_leaves_out_on_request():
    counts = cooccurrence_counts([[0, 1], [0, 1], [1, 2]], 3)
    torch.manual_seed(0)
    model = KnowledgeRecommender(3, dim=4, cooccurrence=counts)
    plain = KnowledgeRecommender(3, dim=4)
    plain.load_state_dict(
        {
            k: v
            for k, v in model.state_dict().items()
            if not k.startswith('cooccurrence')
        }
    )
    context = torch.tensor([[0]])
    assert torch.allclose(
        model(context) - plain(context), torch.log1p(torch.tensor([[0.0, 2, 0]]))
    )
    leave = torch.tensor([[0.0, 1, 0]])
    assert torch.allclose(
        model(context, leave) - plain(context), torch.log1p(torch.tensor([[0.0, 1, 0]]))
    )


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    torch.manual_seed(0)
    logits = torch.randn(4000, 8) * 3
    true_t = 2.5  # gold drawn from softmax(logits / 2.5): the best fit is T = 2.5
    gold = torch.multinomial(torch.softmax(logits / true_t, -1), 1).squeeze(1)
    fitted = fit_temperature(logits, gold)
    assert fitted == pytest.approx(true_t, rel=0.08)
    assert mean_nll(logits, gold, fitted) < mean_nll(logits, gold, 1.0)
    for other in (fitted * 0.8, fitted * 1.25):
        assert mean_nll(logits, gold, fitted) <= mean_nll(logits, gold, other)


def test_fit_temperature_hand_case_and_bad_input():
    # two items, scores (1, 0), gold = item 0 in 3 of 4 rows: the MLE has p(0) = 3/4,
    # i.e. 1 / T = log(3): T = 1 / ln 3
    logits = torch.tensor([[1.0, 0.0]] * 4)
    gold = torch.tensor([0, 0, 0, 1])
    assert fit_temperature(logits, gold) == pytest.approx(1 / math.log(3), rel=1e-4)
    with pytest.raises(ValueError):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))


def test_sharpness_of_a_uniform_distribution():
    result = sharpness(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    assert result.top1_prob == pytest.approx(0.25)
    assert result.entropy == pytest.approx(math.log(4))
    assert result.gold_nll == pytest.approx(math.log(4))


def test_new_agent_starts_from_the_popularity_prior_and_counts_its_training_dialogues(
    tmp_path,
):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    from tests.support import shared_meta_or_skip, shared_redial_or_skip

    redial, meta = shared_redial_or_skip(), shared_meta_or_skip()
    common = [
        '-m',
        'conkd_rec_teacher',
        '-t',
        'redial_crs:rec',
        '--redial-path',
        str(redial),
        '--redial-meta-path',
        str(meta),
        '--redial-max-dialogues',
        '25',
        '-dp',
        str(tmp_path),
        '--rec-dim',
        '8',
        '--num-bases',
        '2',
        '--text-entity-min-movies',
        '30',
    ]
    agents = {}
    for init in ('popularity', 'zero'):
        opt = ParlaiParser(True, True).parse_args([*common, '--item-bias-init', init])
        agents[init] = create_agent(opt)
    agent = agents['popularity']
    assert 20 <= len(agent.train_dialogues) <= 25  # the slice's training fold
    naming = torch.zeros(len(agent.catalog))
    for items in agent.train_dialogues.values():
        for item in set(items):
            naming[item] += 1
    assert naming.sum() > 0
    assert torch.allclose(agent.model.item_bias.detach(), torch.log1p(naming))
    assert torch.count_nonzero(agents['zero'].model.item_bias) == 0
    # the co-occurrence counts are the training dialogues' item pairs
    dense = agent.model.cooccurrence.counts.to_dense()
    assert torch.equal(
        dense,
        cooccurrence_counts(
            agent.train_dialogues.values(), len(agent.catalog)
        ).to_dense(),
    )
