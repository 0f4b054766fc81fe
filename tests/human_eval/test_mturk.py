"""The MTurk route's pieces through the real boto3 client against the local stand-in (no browser)."""

import json

import pytest

from parlai_conkd.human_eval import mturk
from parlai_conkd.human_eval.questions import resolve
from parlai_conkd.human_eval.study import Study
from parlai_conkd.human_eval.units import ResultStore, UnitSpec, chosen_speaker

boto3 = pytest.importorskip(
    'boto3',
    reason='boto3 is not installed (pip install -r requirements/human-eval.txt)',
)


@pytest.fixture
def standin(monkeypatch):
    from parlai_conkd.human_eval.mturk_standin import start_standin

    for key, value in (
        ('AWS_ACCESS_KEY_ID', 'standin'),
        ('AWS_SECRET_ACCESS_KEY', 'standin'),
        ('AWS_CONFIG_FILE', '/dev/null'),
        ('AWS_SHARED_CREDENTIALS_FILE', '/dev/null'),
        ('NO_PROXY', '127.0.0.1,localhost'),
    ):
        monkeypatch.setenv(key, value)
    server, turk, url = start_standin()
    yield turk, mturk.make_client(endpoint_url=url)
    server.shutdown()


@pytest.fixture
def study(pairs, tmp_path):
    return Study(
        pairs,
        resolve(['fluency']),
        ResultStore(str(tmp_path / 'results.jsonl')),
        pairs_per_unit=2,
        seed=2,
    )


def test_html_question_keeps_cdata_intact_and_enforces_the_size_limit():
    question = mturk.html_question('<p>a ]]> b</p>')
    assert question.count('<![CDATA[') == 2 and ']]]]><![CDATA[>' in question
    with pytest.raises(mturk.MTurkRouteError, match='131072'):
        mturk.html_question('x' * mturk.MAX_QUESTION_CHARS)


def test_parse_answer_reads_question_form_answers():
    xml = (
        '<QuestionFormAnswers xmlns="http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/'
        '2005-10-01/QuestionFormAnswers.xsd"><Answer><QuestionIdentifier>answer</QuestionIdentifier>'
        '<FreeText>{"a": "&lt;b&gt;"}</FreeText></Answer></QuestionFormAnswers>'
    )
    assert mturk.parse_answer(xml) == {'answer': '{"a": "<b>"}'}


def test_block_qualification_is_created_once(standin):
    turk, client = standin
    first = mturk.ensure_block_qualification(client, 'blocked_here')
    assert mturk.ensure_block_qualification(client, 'blocked_here') == first
    assert len(turk.qualification_types) == 1


def test_collect_stores_valid_answers_and_leaves_bad_ones(standin, study, tmp_path):
    turk, client = standin
    manifest = str(tmp_path / 'hits.jsonl')
    hits = mturk.create_hits(client, study, manifest, num_hits=2, reward='0.10')
    assert study.pending == {}
    assert client.get_account_balance()['AvailableBalance'] == '10000.00'
    good_hit, bad_hit = hits
    unit = UnitSpec.from_dict(good_hit['unit'])
    answers = [{'choice': 'left', 'reason': 'reads well'} for _ in unit.items]
    onboarding_pair = study.pairs[unit.items[0].pair_id]
    if (
        chosen_speaker(unit.items[0], onboarding_pair, 'left')
        != onboarding_pair['correct_answer']
    ):
        answers[0]['choice'] = 'right'
    good = turk.accept(good_hit['hit_id'], 'W1')
    turk.submit(
        good['AssignmentId'],
        {
            'assignmentId': good['AssignmentId'],
            'answer': json.dumps(
                {'answers': answers, 'task_start': 1.0, 'task_end': 9.0}
            ),
        },
    )
    bad = turk.accept(bad_hit['hit_id'], 'W2')
    turk.submit(
        bad['AssignmentId'],
        {'assignmentId': bad['AssignmentId'], 'answer': '{"answers": []}'},
    )

    counts = mturk.collect(client, study, manifest)
    assert counts == {
        'stored': 1,
        'screened_out': 0,
        'approved': 1,
        'invalid': 1,
        'already_stored': 0,
        'repeated': 0,
    }
    (record,) = study.store.records()
    assert (record['worker_id'], record['assignment_id'], record['hit_id']) == (
        'W1',
        good['AssignmentId'],
        good_hit['hit_id'],
    )
    assert (record['task_start'], record['task_end']) == (1.0, 9.0)
    assert (
        record['data']['outputs']['final_data'][0]['speakerChoice']
        == onboarding_pair['correct_answer']
    )
    # the invalid one stays Submitted for a person to look at
    assert turk.assignments[bad['AssignmentId']]['AssignmentStatus'] == 'Submitted'


def test_a_worker_rating_a_comparison_in_two_hits_counts_once(standin, study, tmp_path):
    from parlai_conkd.human_eval.analysis import win_rates

    turk, client = standin
    manifest = str(tmp_path / 'hits.jsonl')
    # 4 comparisons, 2 per HIT
    hits = mturk.create_hits(client, study, manifest, num_hits=3, reward='0.10')
    planned = [
        [i.pair_id for i in UnitSpec.from_dict(h['unit']).items if not i.is_onboarding]
        for h in hits
    ]
    # the third HIT repeats comparisons
    assert len({p for unit in planned for p in unit}) == 4
    for hit in hits:
        unit = UnitSpec.from_dict(hit['unit'])
        answers = []
        for item in unit.items:
            pair = study.pairs[item.pair_id]
            wanted = pair['correct_answer'] or 'model_a'
            answers.append(
                {
                    'choice': (
                        'left'
                        if chosen_speaker(item, pair, 'left') == wanted
                        else 'right'
                    ),
                    'reason': 'reads well',
                }
            )
        assignment = turk.accept(hit['hit_id'], 'W1')
        turk.submit(
            assignment['AssignmentId'],
            {
                'assignmentId': assignment['AssignmentId'],
                'answer': json.dumps({'answers': answers}),
            },
        )
    counts = mturk.collect(client, study, manifest)
    assert (counts['stored'], counts['repeated']) == (3, 1)
    (matchup,) = win_rates(study.store.records())
    # 6 ratings stored, 4 comparisons counted
    assert (matchup.wins_a, matchup.wins_b) == (
        4,
        0,
    )


def test_missing_manifest_is_named(standin, study, tmp_path):
    _, client = standin
    with pytest.raises(mturk.MTurkRouteError, match='HIT manifest .* not found'):
        mturk.collect(client, study, str(tmp_path / 'nope.jsonl'))
