"""InteractiveExplainMixin on an untrained tiny generator built in-process (fast; the real
`parlai interactive -mf zoo:conkd/soft` session is in test_build_real.py)."""
import re

import pytest

from parlai_conkd.agents.conkd_dialogue_teacher.conkd_dialogue_teacher import ConkdDialogueTeacherAgent
from parlai_conkd.explain import InteractiveExplainMixin, ReplyExplainer, empty_reply_text
from parlai_conkd.items import Item, ItemCatalog
from tests.dialogue.conftest import TINY_ITEMS, TINY_TRANSFORMER


class ExplainedAgent(InteractiveExplainMixin, ConkdDialogueTeacherAgent):
    pass


@pytest.fixture
def agent(tmp_path):
    from parlai.core.params import ParlaiParser

    catalog = ItemCatalog([Item(index=i, movie_id=m, title=t, year=y, metadata={'genre': ['Drama']})
                           for i, (m, t, y) in enumerate(TINY_ITEMS)])
    catalog_file = tmp_path / 'catalog.json'
    catalog.save(str(catalog_file))
    parser = ParlaiParser(True, True)
    ExplainedAgent.add_cmdline_args(parser)
    opt = parser.parse_args([
        '--item-catalog', str(catalog_file), '--dict-file', str(tmp_path / 'dict'), *TINY_TRANSFORMER,
        '--inference', 'beam', '--beam-size', '2', '--beam-min-length', '4',
        '--show-recs', '2', '--show-gates', 'true', '--interactive-mode', 'true',
    ])
    opt['model'] = 'conkd_dialogue_teacher'
    import torch

    torch.manual_seed(0)  # an untrained model: fix its weights so that it replies with words
    a = ExplainedAgent(opt)
    a.set_interactive_mode(True)
    return a


def test_options_are_added_with_safe_defaults():
    from parlai.core.params import ParlaiParser

    parser = ParlaiParser(True, True)
    ExplainedAgent.add_cmdline_args(parser)
    opt = parser.parse_args([])
    assert opt['show_recs'] == 0 and opt['show_gates'] is False and opt['link_titles'] is True


def test_reply_is_decorated_and_history_keeps_item_tokens(agent, monkeypatch):
    # the agent itself stands in for the dialogue teacher (same vocabulary): gates are computable
    monkeypatch.setattr(ReplyExplainer, 'teachers', lambda self: (self.agent, None))
    agent.observe({'text': 'I loved The Matrix (1999) and heat (1995)', 'episode_done': False})
    assert '__item_111__' in agent.history.get_history_str()
    assert '__item_222__' in agent.history.get_history_str()
    text = agent.act()['text']
    # an untrained model: either a reply with its gates, or the empty-reply note
    assert 'gate per token' in text or text.startswith(empty_reply_text())
    assert '__item_' not in text  # items are shown as titles everywhere
    assert 'Matrix (1999)' not in agent.history.get_history_str()


def test_explanation_of_a_given_reply(agent, monkeypatch):
    """explain(batch, preds) on a hand-made reply: [REC] Heat (1995) Alien (1979) __end__."""
    import torch

    monkeypatch.setattr(ReplyExplainer, 'teachers', lambda self: (self.agent, None))
    obs = agent.observe({'text': 'any thrillers like __item_111__ ?', 'episode_done': False})
    batch = agent.batchify([obs])
    item = agent.item_token_ids.tolist()
    pred = torch.tensor([agent.START_IDX, agent.rec_token_id, item[1], item[2], agent.END_IDX])
    explainer = ReplyExplainer(agent, k=2, show_gates=True)
    explanation = explainer.explain(batch, [pred])
    assert [index for index, _ in explanation.student_items] != []
    assert len(explanation.student_items) == 2
    assert abs(sum(p for _, p in explanation.student_items)) <= 1.0
    assert explanation.tokens == ['<Heat (1995)>', '<Alien (1979)>']
    # lambda_t recomputed by hand: item mass of the teacher-forced distribution at each step
    ys = torch.tensor([[agent.rec_token_id, item[1], item[2]]])
    forced = agent.batchify([obs])
    forced['label_vec'] = ys
    log_probs = agent.teacher_forced_log_probs(forced).log_probs[0]
    expected = log_probs[:, agent.item_token_ids].exp().sum(-1)[1:].tolist()
    assert explanation.gates == pytest.approx(expected, abs=1e-5)
    rendered = explainer.decorate('reply')
    assert rendered.startswith('reply\ntop items (this model, at its first item slot):')
    assert '<Heat (1995)>[' in rendered and 'genre: Drama' in rendered


def test_empty_and_very_long_messages(agent):
    for message in ['', 'so ' * 3000]:
        agent.observe({'text': message, 'episode_done': False})
        reply = agent.act()
        assert reply['text'].strip()
        assert 'no teacher files recorded in this model' in reply['text']


def test_nothing_changes_outside_interactive_mode(agent):
    agent.set_interactive_mode(False)
    agent.opt['interactive_mode'] = False
    agent.observe({'text': 'The Matrix (1999)', 'episode_done': False})
    assert '__item_111__' not in agent.history.get_history_str()
    reply = agent.act()
    assert 'top items' not in reply.get('text', '') and empty_reply_text() not in reply.get('text', '')
