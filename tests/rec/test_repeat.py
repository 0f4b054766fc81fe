"""``-m conkd_repeat`` on hand-checked dialogues: recency order, both protocols, --repeat-fill."""

import pytest
import torch

from parlai_conkd.agents.conkd_repeat.conkd_repeat import RepeatModel, recency_order
from parlai_conkd.items import Item, ItemCatalog
from tests.support import ALIEN, GODFATHER, HEAT, UP, dialogue, write_redial

#: training-label counts set by hand (index order ALIEN, HEAT, GODFATHER, UP)
COUNTS = [0.0, 5.0, 3.0, 3.0]


def _catalog():
    return ItemCatalog(
        [
            Item(index=i, movie_id=m, title=m)
            for i, m in enumerate(['111', '222', '333', '444'])
        ]
    )


def test_recency_order_is_last_mention_first():
    catalog = _catalog()
    text = 'liked __item_111__\ntry __item_222__\nand __item_111__ again'
    assert recency_order([ALIEN, HEAT], text, catalog) == [ALIEN, HEAT]
    assert recency_order([ALIEN, HEAT], 'x __item_111__ y __item_222__', catalog) == [
        HEAT,
        ALIEN,
    ]
    # the task's list is the authority: unnamed context items follow (latest first), text-only ones are ignored
    assert recency_order(
        [ALIEN, GODFATHER, UP], '__item_111__ __item_222__', catalog
    ) == [ALIEN, UP, GODFATHER]
    assert recency_order([], '__item_111__', catalog) == []


def test_repeat_model_lifts_context_items_above_every_count_in_recency_order():
    model = RepeatModel(4)
    model.counts.copy_(torch.tensor(COUNTS))
    context = torch.tensor([[UP, ALIEN], [-1, -1]])
    scores = model(context)
    # row 0: UP (most recent) > ALIEN > HEAT (5) > GODFATHER (3); row 1: the counts alone
    assert scores[0].argsort(descending=True)[:3].tolist() == [UP, ALIEN, HEAT]
    assert scores[0, UP] > scores[0, ALIEN] > scores[0, HEAT] == 5.0
    assert scores[1].tolist() == COUNTS
    log_probs = model.item_log_probs(context)
    assert torch.allclose(log_probs.exp().sum(1), torch.ones(2))
    assert log_probs[0].argmax().item() == UP


@pytest.fixture
def repeat_data(tmp_path, monkeypatch):
    monkeypatch.delenv('CONKD_REDIAL_PATH', raising=False)
    monkeypatch.delenv('CONKD_REDIAL_META_PATH', raising=False)
    monkeypatch.setenv('PARLAI_DATAPATH', str(tmp_path / 'dp'))
    test = [
        # the recommender repeats Alien (seeker's), recommends Heat twice in one turn, later repeats Heat
        dialogue(
            7,
            [
                (1, 'I liked @111'),
                (2, 'like @111? try @222 @222'),
                (1, 'ok'),
                (2, 'again @222, or @444'),
            ],
        ),
        # the recommender opens with a recommendation: nothing mentioned before
        dialogue(8, [(2, 'hi, seen @222?'), (1, 'no')]),
    ]
    return tmp_path / 'dp', write_redial(tmp_path / 'r', test=test)


def _world(model, datapath, source, batchsize=2, **extra):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    opt = ParlaiParser(True, True).parse_kwargs(
        task='redial_crs:rec_all',
        datatype='test',
        model=model,
        datapath=str(datapath),
        redial_path=str(source),
        batchsize=batchsize,
        rank_ks='1,2,3',
        ndcg_ks='1',
        **extra,
    )
    agent = create_agent(opt)
    agent.model.counts.copy_(torch.tensor(COUNTS))
    return create_task(opt, agent)


def _evaluate(model, datapath, source, **extra):
    world = _world(model, datapath, source, **extra)
    while not world.epoch_done():
        world.parley()
    return {k: v for k, v in world.report().items()}


def test_repeat_scores_both_protocols_as_computed_by_hand(repeat_data):
    # rec_all test examples: (gold, context recency order) =
    #   ALIEN [ALIEN] -> rank 1 | HEAT (new) [ALIEN] -> rank 2 | HEAT [HEAT, ALIEN] -> rank 1
    #   UP (new) [HEAT, ALIEN] -> behind 2, tied with GODFATHER | HEAT (new) [] -> popularity rank 1
    report = _evaluate('conkd_repeat', *repeat_data)
    assert (report['exs'], report['pairs'], report['new_pairs']) == (5, 5, 3)
    assert report['recall@1'] == pytest.approx(3 / 5)
    assert report['recall@2'] == pytest.approx(4 / 5)
    assert report['recall@3'] == pytest.approx(4.5 / 5)
    # new items: only the empty-context example can be first; UP is behind both context items
    assert report['new_recall@1'] == pytest.approx(1 / 3)
    assert report['new_recall@2'] == pytest.approx(2 / 3)
    assert report['new_recall@3'] == pytest.approx(2.5 / 3)
    # no ParlAI word-overlap metrics on item tokens
    for name in ('accuracy', 'f1', 'precision', 'recall', 'bleu-4'):
        assert name not in report, name


def test_repeat_fill_none_scores_exactly_zero_on_new_items(repeat_data):
    report = _evaluate('conkd_repeat', *repeat_data, repeat_fill='none')
    assert report['recall@1'] == pytest.approx(2 / 5) and report[
        'recall@3'
    ] == pytest.approx(2 / 5)
    for k in (1, 2, 3):
        assert report[f'new_recall@{k}'] == 0.0


def test_popularity_on_the_same_examples(repeat_data):
    # ALIEN has count 0 (last); UP ties with GODFATHER behind HEAT
    report = _evaluate('conkd_popularity', *repeat_data)
    assert report['recall@1'] == pytest.approx(3 / 5)
    assert report['recall@2'] == pytest.approx(3.5 / 5)
    assert report['new_recall@1'] == pytest.approx(2 / 3)


def test_ranker_reply_carries_its_top_items_as_item_records(repeat_data):
    """The one ``recommendations`` shape (docs/architecture.md): item records with the probability
    item_log_probs gives. First rec_all example: context [ALIEN]; repeat scores ALIEN 5 + 1 + 1 = 7,
    the others their counts; probabilities (score + 1) / sum = 8/22, 6/22, 4/22, 4/22.
    """
    world = _world('conkd_repeat', *repeat_data, batchsize=1)
    world.parley()
    reply = world.get_acts()[1]
    records = reply['recommendations']
    assert [set(r) for r in records] == [
        {'movie_id', 'title', 'year', 'index', 'score', 'new'}
    ] * 4
    assert [(r['index'], r['movie_id'], r['new']) for r in records[:2]] == [
        (ALIEN, '111', False),
        (HEAT, '222', True),
    ]
    assert {r['index']: r['score'] for r in records} == pytest.approx(
        {ALIEN: 8 / 22, HEAT: 6 / 22, GODFATHER: 4 / 22, UP: 4 / 22}, abs=1e-6
    )
    assert reply['item_ranking'][:2] == [ALIEN, HEAT] and 'text' not in reply
