"""``--inference greedy`` on a model saved with a beam (issue #22: the README's first eval command)."""

import pytest

from parlai_conkd.agents.conkd_dialogue_teacher.item_search import greedy_beam_size


def saved(**command):
    """Options as ParlAI loads them: the zoo's saved decoding, then what the command set."""
    opt = {'inference': 'delayedbeam', 'beam_size': 5, 'override': dict(command)}
    opt.update(command)
    return opt


def test_greedy_asked_alone_takes_beam_size_one():
    opt = saved(inference='greedy')
    greedy_beam_size(opt)
    assert opt['beam_size'] == 1


@pytest.mark.parametrize(
    'command', [{}, {'inference': 'beam'}, {'beam_size': 3}, {'inference': 'nucleus'}]
)
def test_other_searches_keep_their_beam(command):
    opt = saved(**command)
    greedy_beam_size(opt)
    assert opt['beam_size'] == command.get('beam_size', 5)


def test_greedy_with_an_explicit_beam_is_refused_naming_both_options():
    opt = saved(inference='greedy', beam_size=4)
    with pytest.raises(ValueError, match='--inference greedy .* --beam-size 4'):
        greedy_beam_size(opt)


def test_greedy_with_beam_size_one_given_is_left_alone():
    opt = saved(inference='greedy', beam_size=1)
    greedy_beam_size(opt)
    assert opt['beam_size'] == 1
