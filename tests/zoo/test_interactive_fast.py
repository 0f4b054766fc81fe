"""InteractiveExplainMixin on an untrained tiny generator built in-process (fast; the real
`parlai interactive` sessions with a tiny zoo and a real rec teacher are in tests/interactive).
"""

import pytest
import torch

from parlai_conkd.agents.conkd_dialogue_teacher.conkd_dialogue_teacher import (
    ConkdDialogueTeacherAgent,
)
from parlai_conkd.agents.conkd_student.interactive import (
    DISPLAY_CHARS,
    InteractiveExplainMixin,
    ReplyExplainer,
    empty_reply_text,
)
from parlai_conkd.formatting import Explanation
from parlai_conkd.items import Item, ItemCatalog
from tests.support import TINY_DIALOGUE_TRANSFORMER, TINY_ITEMS


class ExplainedAgent(InteractiveExplainMixin, ConkdDialogueTeacherAgent):
    pass


def make_agent(tmp_path, *extra):
    from parlai.core.params import ParlaiParser

    catalog = ItemCatalog(
        [
            Item(
                index=i,
                movie_id=m,
                title=t,
                year=y,
                mentions=10,
                metadata={'genre': ['Drama'], 'star': ['A B', 'C D']},
            )
            for i, (m, t, y) in enumerate(TINY_ITEMS)
        ]
    )
    catalog_file = tmp_path / 'catalog.json'
    catalog.save(str(catalog_file))
    parser = ParlaiParser(True, True)
    ExplainedAgent.add_cmdline_args(parser)
    opt = parser.parse_args(
        [
            '--item-catalog',
            str(catalog_file),
            '--dict-file',
            str(tmp_path / 'dict'),
            *TINY_DIALOGUE_TRANSFORMER,
            '--inference',
            'beam',
            '--beam-size',
            '2',
            '--beam-min-length',
            '4',
            '--interactive-mode',
            'true',
            *extra,
        ]
    )
    opt['model'] = 'conkd_dialogue_teacher'
    # an untrained model: fix its weights so that it replies with words
    torch.manual_seed(0)
    agent = ExplainedAgent(opt)
    agent.set_interactive_mode(True)
    return agent


@pytest.fixture
def agent(tmp_path):
    return make_agent(tmp_path, '--show-recs', '2', '--show-gates', 'true')


@pytest.fixture
def self_as_dialogue_teacher(monkeypatch):
    """The agent stands in for its own dialogue teacher (same vocabulary): gates are computable."""
    real = ReplyExplainer.teacher
    monkeypatch.setattr(
        ReplyExplainer,
        'teacher',
        lambda self, role: self.agent if role == 'dial' else real(self, role),
    )


def test_options_are_added_with_safe_defaults():
    from parlai.core.params import ParlaiParser

    parser = ParlaiParser(True, True)
    ExplainedAgent.add_cmdline_args(parser)
    opt = parser.parse_args([])
    assert (
        opt['show_recs'] == 0
        and opt['show_gates'] is False
        and opt['link_titles'] is True
    )


def test_typed_items_reach_history_context_and_the_person(
    agent, self_as_dialogue_teacher
):
    obs = agent.observe(
        {'text': 'I loved The Matrix (1999) and @222', 'episode_done': False}
    )
    assert agent.history.get_history_str() == 'I loved __item_111__ and __item_222__'
    assert obs['context_items'] == [0, 1]
    reply = agent.act()
    assert (
        reply['text'].split('\n')[1]
        == 'understood: The Matrix (1999), Heat (1995) (@222)'
    )
    assert '__item_' not in reply['text']  # items are shown as titles everywhere
    assert 'Matrix (1999)' not in agent.history.get_history_str()
    assert isinstance(reply['recommendations'], list)
    # no rec teacher file: noted in the text
    assert reply['item_rankings']['rec_teacher'] == []
    assert (
        '(no --rec-teacher-file recorded in this model: no teacher ranking)'
        in reply['text']
    )


def forced_item_probs(agent, obs, ids):
    """The model's item distribution at every step of ``ids``, teacher-forced, by hand."""
    batch = agent.batchify([obs])
    batch['label_vec'] = torch.tensor([ids])
    scores = agent.teacher_forced_scores(batch)[0]
    return torch.softmax(scores[:, agent.item_token_ids], -1), torch.softmax(
        scores, -1
    )[:, agent.item_token_ids].sum(-1)


def test_explanation_of_a_reply_naming_items(agent, self_as_dialogue_teacher):
    """[REC] Heat (1995) Alien (1979) __end__: each named item with its probability where it is
    named; the top-2 at the first item slot; the gate of every generated token."""
    obs = agent.observe(
        {'text': 'any thrillers like __item_111__ ?', 'episode_done': False}
    )
    batch = agent.batchify([obs])
    item = agent.item_token_ids.tolist()
    ids = [agent.rec_token_id, item[1], item[2], agent.END_IDX]
    explanation = ReplyExplainer(agent, k=2, show_gates=True).explain(
        batch, [torch.tensor([agent.START_IDX] + ids)]
    )
    probs, _ = forced_item_probs(agent, obs, ids)
    assert explanation.named == [
        (1, pytest.approx(float(probs[1, 1]))),
        (2, pytest.approx(float(probs[2, 2]))),
    ]
    assert explanation.position == 1 and explanation.position_names_item
    top = probs[1].topk(2)
    assert [i for i, _ in explanation.student_items] == top.indices.tolist()
    assert [p for _, p in explanation.student_items] == pytest.approx(
        top.values.tolist()
    )
    assert explanation.tokens == ['<Heat (1995)>', '<Alien (1979)>']
    forced = agent.batchify([obs])
    forced['label_vec'] = torch.tensor([ids])
    log_probs = agent.teacher_forced_log_probs(forced).log_probs[0]
    assert explanation.gates == pytest.approx(
        log_probs[:, agent.item_token_ids].exp().sum(-1)[1:3].tolist(), abs=1e-5
    )
    text = explanation.render(agent.catalog, 'soft', 0.5)
    assert text.startswith('named in this reply:\n')
    assert (
        'top items (this model, at its first item slot):' in text
        and '<Heat (1995)>[' in text
    )
    assert 'Heat (1995) - genre: Drama; stars: A B, C D' in text


def test_a_reply_naming_no_item_is_ranked_where_it_would_most_likely_name_one(agent):
    obs = agent.observe({'text': 'hello', 'episode_done': False})
    word = (
        agent.dict.tok2ind['hello']
        if 'hello' in agent.dict.tok2ind
        else agent.dict.tok2ind[agent.dict.unk_token]
    )
    ids = [agent.gen_token_id, word, word, agent.END_IDX]
    explanation = ReplyExplainer(agent, k=3).explain(
        agent.batchify([obs]), [torch.tensor([agent.START_IDX] + ids)]
    )
    probs, mass = forced_item_probs(agent, obs, ids)
    expected = int(mass[1:].argmax()) + 1
    assert explanation.named == [] and not explanation.position_names_item
    assert explanation.position == expected
    assert [i for i, _ in explanation.student_items] == probs[expected].topk(
        3
    ).indices.tolist()
    assert f'at token {expected}, where it most likely names one' in explanation.render(
        agent.catalog, 'soft', 0.5
    )


def test_reply_carries_the_named_items_as_data_and_the_history_keeps_tokens(
    agent, monkeypatch
):
    named = Explanation(named=[(1, 0.25), (0, 0.125)])
    monkeypatch.setattr(ReplyExplainer, 'explain', lambda self, batch, preds: named)
    agent.observe({'text': 'I loved The Matrix (1999)', 'episode_done': False})
    reply = agent.act()
    assert reply['recommendations'] == [
        {
            'movie_id': '222',
            'title': 'Heat',
            'year': 1995,
            'index': 1,
            'score': 0.25,
            'new': True,
        },
        {
            'movie_id': '111',
            'title': 'The Matrix',
            'year': 1999,
            'index': 0,
            'score': 0.125,
            'new': False,
        },
    ]
    assert (
        agent._history_form('try Heat (1995) or The Matrix (1999)')
        == 'try __item_222__ or __item_111__'
    )


def test_blank_and_long_messages_and_a_new_conversation(tmp_path):
    agent = make_agent(tmp_path, '--text-truncate', '20', '--truncate', '20')
    agent.observe({'text': '', 'episode_done': False})
    assert agent.history.get_history_str() == '__SILENCE__'
    assert agent.act()['text'].strip()
    note = 'this conversation is now longer than the model reads: it sees its last 20 tokens'
    replies = []
    for message in ['so ' * 3000, 'and so on ' * 10]:
        agent.observe({'text': message, 'episode_done': False})
        replies.append(agent.act()['text'])
    assert note in replies[0] and note not in replies[1]  # said once per conversation
    agent.reset()  # [DONE] in parlai interactive
    assert (
        agent.history.get_history_str() is None or agent.history.get_history_str() == ''
    )
    agent.observe({'text': 'so ' * 3000, 'episode_done': False})
    assert note in agent.act()['text']
    # a program ending it
    agent.observe({'text': 'so ' * 3000 + ' The Matrix (1999)', 'episode_done': True})
    last = agent.act()
    assert 'understood: The Matrix (1999)' in last['text'] and 'recommendations' in last
    agent.observe({'text': 'so ' * 3000, 'episode_done': False})
    assert note in agent.act()['text']
    assert '__item_111__' not in agent.history.get_history_str()


def test_the_explanation_fits_the_interactive_display():
    catalog = ItemCatalog(
        [
            Item(
                i,
                str(i),
                f'Movie number {i}',
                2000,
                metadata={
                    'genre': ['drama', 'crime', 'thriller'],
                    'director': ['Some Director Name'],
                    'star': [
                        'First Star Name',
                        'Second Star Name',
                        'Third Star Name',
                        'Fourth',
                    ],
                },
            )
            for i in range(20)
        ]
    )
    explanation = Explanation(
        named=[(3, 0.5)],
        student_items=[(i, 0.01) for i in range(10)],
        position=2,
        position_names_item=True,
        teacher_items=[(i, 0.02) for i in range(10, 20)],
        tokens=['word'] * 60,
        gates=[0.1] * 60,
    )
    full = explanation.render(catalog, 'soft', 0.5)
    assert (
        len(full) > DISPLAY_CHARS
        and 'stars: First Star Name, Second Star Name, Third Star Name, ...' in full
    )
    fitted = explanation.render(catalog, 'soft', 0.5, max_chars=DISPLAY_CHARS)
    assert len(fitted) <= DISPLAY_CHARS
    # the named item keeps its metadata
    assert 'Movie number 3 (2000) - genre: drama, ...' in fitted
    assert (
        'agreement: 0 of the top 10 in both lists' in fitted
        and 'gate per token' in fitted
    )
    assert 'lists cut to ' in fitted and "all in the reply's item_rankings" in fitted
    roomy = explanation.render(catalog, 'soft', 0.5, max_chars=1500)
    assert (
        len(roomy) <= 1500
        and 'lists cut' not in roomy
        and 'Movie number 19 (2000)' in roomy
    )


def test_nothing_changes_outside_interactive_mode(agent):
    agent.set_interactive_mode(False)
    agent.opt['interactive_mode'] = False
    agent.observe({'text': 'The Matrix (1999)', 'episode_done': False})
    assert '__item_111__' not in agent.history.get_history_str()
    reply = agent.act()
    assert 'top items' not in reply.get(
        'text', ''
    ) and empty_reply_text() not in reply.get('text', '')
    assert 'recommendations' not in reply


def test_metadata_comes_from_the_rec_teacher_file_when_the_model_has_none():
    from types import SimpleNamespace

    bare = ItemCatalog([Item(0, '1', 'Heat', 1995)])
    described = ItemCatalog([Item(0, '1', 'Heat', 1995, metadata={'genre': ['crime']})])
    explainer = ReplyExplainer(SimpleNamespace(catalog=bare, opt={}), k=1)
    assert explainer.display_catalog() is bare  # no teacher loaded
    explainer._teachers['rec'] = SimpleNamespace(catalog=described)
    assert explainer.display_catalog() is described
    explainer.agent.catalog = described
    assert explainer.display_catalog() is described
