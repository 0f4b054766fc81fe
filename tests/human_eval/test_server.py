"""The study rules and the local server's API, over real HTTP on 127.0.0.1 (no browser)."""

import json
import urllib.error
import urllib.request

import pytest

from parlai_conkd.human_eval.page import render_page
from parlai_conkd.human_eval.questions import resolve
from parlai_conkd.human_eval.server import start_server
from parlai_conkd.human_eval.study import Study, StudyError
from parlai_conkd.human_eval.units import ResultStore, chosen_speaker, page_view


def _call(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={'Content-Type': 'application/json'}
    )
    # 127.0.0.1 only, no proxy
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _answers(study, unit, pick):
    """pick(item, pair) -> speaker name; turned into the page's left/right answers."""
    answers = []
    for item in unit.items:
        pair = study.pairs[item.pair_id]
        left_name = chosen_speaker(item, pair, 'left')
        answers.append(
            {
                'choice': 'left' if pick(item, pair) == left_name else 'right',
                'reason': 'clearly better',
            }
        )
    return answers


@pytest.fixture
def study(pairs, tmp_path):
    return Study(
        pairs,
        resolve(['talk', 'fluency']),
        ResultStore(str(tmp_path / 'r.jsonl')),
        pairs_per_unit=2,
        seed=0,
    )


def test_units_rotate_questions_and_spread_pairs(study):
    first = study.new_unit('w1')
    second = study.new_unit('w2')
    assert {first.question['question'], second.question['question']} == {
        q.question for q in resolve(['talk', 'fluency'])
    }
    assert first.items[0].is_onboarding and not any(
        i.is_onboarding for i in first.items[1:]
    )
    third = study.new_unit('w3')
    # with 4 comparisons and 2 per unit, the third unit's question gets the two not yet planned
    same = [u for u in (first, second) if u.question == third.question][0]
    assert not {i.pair_id for i in same.items[1:]} & {
        i.pair_id for i in third.items[1:]
    }


def test_view_hides_names_and_answers(study):
    unit = study.new_unit('w1')
    text = json.dumps(page_view(unit, study.pairs))
    assert (
        'model_a' not in text
        and 'onboarding_good' not in text
        and 'correct' not in text
    )
    view = page_view(unit, study.pairs)
    assert view['onboarding_count'] == 1 and len(view['comparisons']) == 3
    assert {
        t['role']
        for c in view['comparisons']
        for side in ('left', 'right')
        for t in c[side]
    } == {'evaluated', 'partner'}


def test_api_flow_onboarding_then_submit(study):
    server, url = start_server(study)
    try:
        status, view = _call(f'{url}/api/unit?worker_id=w1')
        assert status == 200
        unit = study.pending[view['unit_id']]
        good = _answers(
            study,
            unit,
            lambda item, pair: pair['correct_answer'] or pair['speakers_to_eval'][1],
        )
        assert _call(
            f'{url}/api/onboarding',
            {'unit_id': unit.unit_id, 'worker_id': 'w1', 'answers': good[:1]},
        ) == (200, {'passed': True})
        status, body = _call(
            f'{url}/api/submit',
            {'unit_id': unit.unit_id, 'worker_id': 'w2', 'answers': good},
        )
        assert status == 400 and 'another rater' in body['error']
        status, body = _call(
            f'{url}/api/submit',
            {'unit_id': unit.unit_id, 'worker_id': 'w1', 'answers': good[:2]},
        )
        assert status == 400 and '2 answers for 3 comparisons' in body['error']
        bad_reason = [dict(a, reason=' ') for a in good]
        status, body = _call(
            f'{url}/api/submit',
            {'unit_id': unit.unit_id, 'worker_id': 'w1', 'answers': bad_reason},
        )
        assert status == 400 and 'needs a reason' in body['error']
        assert _call(
            f'{url}/api/submit',
            {'unit_id': unit.unit_id, 'worker_id': 'w1', 'answers': good},
        ) == (200, {'unit_id': unit.unit_id, 'status': 'completed'})
        # a returning rater is not onboarded again
        status, again = _call(f'{url}/api/unit?worker_id=w1')
        assert status == 200 and again['onboarding_count'] == 0
        assert _call(f'{url}/api/status') == (
            200,
            {'completed': 1, 'screened_out': 0, 'pending': 1},
        )
        record = study.store.records()[0]
        assert [
            f['speakerChoice'] for f in record['data']['outputs']['final_data']
        ] == ['onboarding_good', 'model_b', 'model_b']
        assert record['data']['inputs'][1]['task_specs']['model_left']['name'] in (
            'model_a',
            'model_b',
        )
    finally:
        server.shutdown()


def test_failed_onboarding_screens_out(study):
    unit = study.new_unit('w9')
    wrong = _answers(
        study,
        unit,
        lambda item, pair: next(
            s for s in pair['speakers_to_eval'] if s != pair['correct_answer']
        ),
    )
    assert study.grade_onboarding(unit.unit_id, 'w9', wrong[:1]) is False
    assert study.store.records()[0]['status'] == 'screened_out'
    with pytest.raises(StudyError, match='screened out'):
        study.new_unit('w9')


def test_page_inlines_everything_and_escapes_config():
    html = render_page(
        'mturk',
        view={'comparisons': [{'left': [{'role': 'partner', 'text': '</script><b>'}]}]},
    )
    assert (
        '/*SCRIPT*/' not in html
        and '/*STYLE*/' not in html
        and '/*CONFIG*/' not in html
    )
    assert '<\\/script><b>' in html and html.count('</script>') == 2
    assert 'src=' not in html  # nothing fetched from elsewhere
    with pytest.raises(ValueError):
        render_page('mturk')


def test_abandoned_units_expire(study):
    abandoned = study.new_unit('w1')
    study.unit_timeout_s = 60
    abandoned.task_start -= 120
    study.new_unit('w2')
    assert abandoned.unit_id not in study.pending and len(study.pending) == 1
    with pytest.raises(StudyError, match='expired'):
        study.submit(abandoned.unit_id, 'w1', [])


def test_reload_gets_the_same_unit_back_and_never_a_second_counted_copy(study):
    """ParlAI #89 / PR #3344: a reloaded page got a second unit with the same comparisons, and both
    submissions were counted."""
    server, url = start_server(study)
    try:
        status, view = _call(f'{url}/api/unit?worker_id=w1')
        assert status == 200
        # reload: the same unit, same sides
        assert _call(f'{url}/api/unit?worker_id=w1') == (
            200,
            view,
        )
        assert len(study.pending) == 1
        unit = study.pending[view['unit_id']]
        answers = _answers(
            study,
            unit,
            lambda item, pair: pair['correct_answer'] or pair['speakers_to_eval'][0],
        )
        body = {'unit_id': unit.unit_id, 'worker_id': 'w1', 'answers': answers}
        assert _call(f'{url}/api/submit', body)[0] == 200
        # the same answers posted again
        status, error = _call(f'{url}/api/submit', body)
        assert status == 400 and 'finished unit' in error['error']
        assert len(study.store.records()) == 1
        # next unit: other comparisons for that question, or another question
        status, nxt = _call(f'{url}/api/unit?worker_id=w1')
        assert status == 200 and nxt['unit_id'] != view['unit_id']
        later = study.pending[nxt['unit_id']]
        if later.question == unit.question:
            assert not {i.pair_id for i in later.items} & {
                i.pair_id for i in unit.items
            }
    finally:
        server.shutdown()


def test_a_unit_repeating_rated_comparisons_is_not_stored(study):
    from parlai_conkd.human_eval.units import make_unit

    first = study.new_unit('w1')
    study.submit(
        first.unit_id,
        'w1',
        _answers(study, first, lambda item, pair: pair['speakers_to_eval'][0]),
    )
    repeat = make_unit(
        first.question,
        [i.pair_id for i in first.items if not i.is_onboarding],
        study.pairs,
        study.rng,
    )
    repeat.worker_id = 'w1'
    study.pending[repeat.unit_id] = (
        repeat  # e.g. planned before the first one was stored
    )
    with pytest.raises(
        StudyError,
        match=r'rater w1 already rated comparison\(s\) \[.*\] for this question',
    ):
        study.submit(
            repeat.unit_id,
            'w1',
            _answers(study, repeat, lambda item, pair: pair['speakers_to_eval'][1]),
        )
    assert len(study.store.records()) == 1 and repeat.unit_id not in study.pending
