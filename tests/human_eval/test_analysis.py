"""Win rates and exact binomial tests against a hand-computed example."""

import csv
import itertools
import json
import math

import pytest

from parlai_conkd.human_eval.analysis import (
    binomial_two_sided_p,
    first_ratings,
    markdown_table,
    responses,
    win_rates,
    write_reports,
)
from parlai_conkd.human_eval.questions import PRESETS

TALK = PRESETS['talk'].question
FLUENCY = PRESETS['fluency'].question


_PAIR_IDS = itertools.count()


def _entry(question, speakers, winner, onboarding=False, correct=None, pair_id=None):
    """One rated comparison; each gets its own comparison (pair id) unless ``pair_id`` is given."""
    pair_id = next(_PAIR_IDS) if pair_id is None else pair_id
    pairing = {
        'is_onboarding': onboarding,
        'speakers_to_eval': speakers,
        'correct_answer': correct,
        'dialogue_ids': [2 * pair_id, 2 * pair_id + 1],
        'dialogue_dicts': [],
    }
    return (
        {
            'task_specs': {'question': question, 'is_onboarding': onboarding},
            'pairing_dict': pairing,
            'pair_id': pair_id,
        },
        {'speakerChoice': winner, 'textReason': 'because'},
    )


def _record(worker, entries, status='completed'):
    inputs, outputs = zip(*entries)
    return {
        'worker_id': worker,
        'unit_id': f'u-{worker}',
        'status': status,
        'task_start': 0,
        'task_end': 1,
        'data': {'inputs': list(inputs), 'outputs': {'final_data': list(outputs)}},
    }


def _votes(question, winner, n, speakers=('model_a', 'model_b')):
    return [_entry(question, list(speakers), winner) for _ in range(n)]


@pytest.fixture
def records():
    onboarding_ok = _entry(
        TALK, ['good', 'bad'], 'good', onboarding=True, correct='good'
    )
    onboarding_wrong = _entry(
        TALK, ['good', 'bad'], 'bad', onboarding=True, correct='good'
    )
    return [
        # talk: model_a 3 + 4 = 7 wins, model_b 1 + 1 = 2 wins (speaker order must not matter)
        _record(
            'w1',
            [onboarding_ok]
            + _votes(TALK, 'model_a', 3)
            + _votes(TALK, 'model_b', 1)
            + _votes(FLUENCY, 'model_b', 5),
        ),
        _record(
            'w2',
            _votes(TALK, 'model_a', 4, ('model_b', 'model_a'))
            + _votes(TALK, 'model_b', 1)
            + _votes(FLUENCY, 'model_b', 5, ('model_b', 'model_a')),
        ),
        # w3 answered onboarding wrongly: every one of their votes is dropped (ACUTE's rule)
        _record('w3', [onboarding_wrong] + _votes(FLUENCY, 'model_a', 5)),
        # w4 was screened out by the server: dropped too
        _record('w4', [onboarding_wrong], status='screened_out'),
    ]


def test_exact_binomial_matches_hand_computation():
    # 7 of 9: 2 * (C(9,0) + C(9,1) + C(9,2)) / 2^9 = 2 * 46 / 512
    assert binomial_two_sided_p(7, 9) == pytest.approx(92 / 512)
    assert binomial_two_sided_p(2, 9) == pytest.approx(92 / 512)
    assert binomial_two_sided_p(0, 10) == pytest.approx(2 / 1024)
    assert binomial_two_sided_p(5, 10) == 1.0
    assert binomial_two_sided_p(0, 0) == 1.0
    with pytest.raises(ValueError):
        binomial_two_sided_p(4, 3)


def test_win_rates_per_question_and_pair(records):
    talk, fluency = sorted(win_rates(records), key=lambda m: m.question != TALK)
    assert (talk.question, talk.model_a, talk.model_b) == (TALK, 'model_a', 'model_b')
    assert (talk.wins_a, talk.wins_b, talk.total) == (7, 2, 9)
    assert talk.win_rate_a == pytest.approx(7 / 9)
    assert talk.p_value == pytest.approx(92 / 512) and talk.stars == ''
    assert (fluency.wins_a, fluency.wins_b) == (0, 10)
    assert fluency.p_value == pytest.approx(2 / 1024) and fluency.stars == '**'


def test_keeping_failed_raters_changes_the_counts(records):
    fluency = next(
        m for m in win_rates(records, keep_failed=True) if m.question == FLUENCY
    )
    assert (fluency.wins_a, fluency.wins_b) == (5, 10)
    # 2 * sum(C(15, i), i <= 5) / 2^15
    assert fluency.p_value == pytest.approx(
        2 * sum(math.comb(15, i) for i in range(6)) / 2**15
    )


def test_response_rows_follow_acute(records):
    rows = responses(records)
    onboarding = [r for r in rows if r['is_onboarding']]
    assert [(r['worker'], r['correct']) for r in onboarding] == [
        ('w1', True),
        ('w3', False),
        ('w4', False),
    ]
    assert {
        (r['eval_choice_0'], r['eval_choice_1']) for r in rows if not r['is_onboarding']
    } == {('model_a', 'model_b')}
    assert all(r['loser'] != r['winner'] for r in rows)


def test_reports_are_written(records, tmp_path):
    paths = write_reports(win_rates(records), str(tmp_path / 'report'))
    with open(paths['csv']) as f:
        rows = list(csv.DictReader(f))
    assert [
        (r['question_key'], r['wins_a'], r['wins_b'], r['significance']) for r in rows
    ] == [('fluency', '0', '10', '**'), ('talk', '7', '2', '')]
    assert json.load(open(paths['json']))[1]['p_value'] == pytest.approx(92 / 512)
    assert (
        '| talk | model_a | model_b | 7 | 2 | 0 | 9 | 77.8% | 0.1797 |'
        in open(paths['md']).read()
    )
    assert open(paths['png'], 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert markdown_table([]).count('\n') == 1


def test_nothing_to_analyse_is_an_error(tmp_path):
    with pytest.raises(ValueError, match='no rated comparisons'):
        write_reports([], str(tmp_path))


def test_ties_are_reported_apart_from_wins(records, tmp_path):
    """FastChat #1886: a "tie" choice crashed the analysis with "'tie' is not in list"."""
    with_ties = records + [
        _record(
            'w5',
            _votes(TALK, 'model_a', 1)
            + _votes(TALK, 'tie', 2)
            + _votes(FLUENCY, 'Tie', 1),
        )
    ]
    talk, fluency = sorted(win_rates(with_ties), key=lambda m: m.question != TALK)
    assert (talk.wins_a, talk.wins_b, talk.ties, talk.total) == (8, 2, 2, 10)
    assert talk.win_rate_a == pytest.approx(8 / 10)  # of the decisive ratings
    # sign test: ties left out
    assert talk.p_value == pytest.approx(2 * (1 + 10 + 45) / 1024)
    assert (fluency.wins_a, fluency.wins_b, fluency.ties) == (0, 10, 1)
    tie_rows = [r for r in responses(with_ties) if r['tie']]
    assert len(tie_rows) == 3 and all(
        r['winner'] is None and r['loser'] is None for r in tie_rows
    )
    paths = write_reports([talk, fluency], str(tmp_path / 'report'))
    assert (
        '| talk | model_a | model_b | 8 | 2 | 2 | 10 | 80.0% | 0.1094 |'
        in open(paths['md']).read()
    )
    assert json.load(open(paths['json']))[0]['ties'] == 2
    # only ties: reported, no win rate, the chart says so
    only = win_rates([_record('w6', _votes(TALK, 'tie', 3))])
    assert [(m.wins_a, m.wins_b, m.ties) for m in only] == [(0, 0, 3)] and math.isnan(
        only[0].win_rate_a
    )
    assert '| 0 | 0 | 3 | 0 | n/a | 1 |' in markdown_table(only)
    write_reports(only, str(tmp_path / 'ties-only'))


def test_a_choice_that_is_no_speaker_is_named():
    with pytest.raises(
        ValueError,
        match="unit u-w7 \\(worker w7\\): speakerChoice 'model_c' is neither",
    ):
        responses([_record('w7', _votes(TALK, 'model_c', 1))])


def test_a_raters_repeated_rating_of_a_comparison_counts_once():
    """A rater who submitted the same comparison twice (a reloaded page, two HITs) votes once."""
    vote = _entry(TALK, ['model_a', 'model_b'], 'model_a', pair_id=900)
    again = _entry(TALK, ['model_b', 'model_a'], 'model_b', pair_id=900)
    other_rater = _entry(TALK, ['model_a', 'model_b'], 'model_b', pair_id=900)
    records = [
        _record('w8', [vote]),
        _record('w8', [again]),
        _record('w9', [other_rater]),
    ]
    kept, dropped = first_ratings(responses(records))
    assert dropped == 1 and [(r['worker'], r['winner']) for r in kept] == [
        ('w8', 'model_a'),
        ('w9', 'model_b'),
    ]
    assert [(m.wins_a, m.wins_b) for m in win_rates(records)] == [(1, 1)]
