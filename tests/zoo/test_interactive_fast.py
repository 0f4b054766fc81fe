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
    a = ExplainedAgent(opt)
    a.set_interactive_mode(True)
    return a


def test_options_are_added_with_safe_defaults():
    from parlai.core.params import ParlaiParser

    parser = ParlaiParser(True, True)
    ExplainedAgent.add_cmdline_args(parser)
    opt = parser.parse_args([])
    assert opt['show_recs'] == 0 and opt['show_gates'] is False and opt['link_titles'] is True


def test_reply_with_gates_top_items_and_linked_history(agent, monkeypatch):
    # the agent itself stands in for the dialogue teacher (same vocabulary): gates are computable
    monkeypatch.setattr(ReplyExplainer, 'teachers', lambda self: (self.agent, None))
    agent.observe({'text': 'I loved The Matrix (1999) and heat (1995)', 'episode_done': False})
    assert '__item_111__' in agent.history.get_history_str()
    assert '__item_222__' in agent.history.get_history_str()
    reply = agent.act()
    text = reply['text']
    lines = text.split('\n')
    assert 'gate per token' in text
    gate_line = lines[lines.index(next(l for l in lines if l.startswith('gate per token'))) + 1]
    gates = [float(g) for g in re.findall(r'\[(\d\.\d\d)\]', gate_line)]
    assert len(gates) >= 4 and all(0.0 <= g <= 1.0 for g in gates)
    assert '__item_' not in text  # items are shown as titles everywhere
    # the reply went into the history as item tokens, not as titles
    assert 'Matrix (1999)' not in agent.history.get_history_str()


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
