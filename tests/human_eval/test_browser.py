"""Acceptance: a real browser (Debian chromium + Selenium) completes rating units, onboarding
included, on the local server and on an MTurk HIT served by the local MTurk stand-in; the stored
results are read back by the analysis. All traffic stays on 127.0.0.1."""

import json
import os
import subprocess
import sys

import pytest

from parlai_conkd.human_eval.analysis import win_rates
from parlai_conkd.human_eval.pairings import ONBOARDING_GOOD, read_pairings
from parlai_conkd.human_eval.questions import resolve
from parlai_conkd.human_eval.server import start_server
from parlai_conkd.human_eval.study import Study
from parlai_conkd.human_eval.units import ResultStore, UnitSpec, read_results

WAIT_S = 20


def _wait(driver, condition, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(
        condition, message=f'timed out waiting for {what}'
    )


def _visible(element_id):
    def check(driver):
        element = driver.find_element('id', element_id)
        return element if element.is_displayed() else False

    return check


def side_for(pair, item, speaker):
    """'left'/'right': where ``speaker`` is shown for this unit item."""
    index = pair['speakers_to_eval'].index(speaker)
    return 'left' if index == item['left'] else 'right'


def rate(driver, choices):
    """Answer each comparison with the given side and a reason, as a rater would."""
    for number, choice in enumerate(choices, start=1):
        _wait(
            driver,
            lambda d, number=number: d.find_element('id', 'progress').text.startswith(
                f'Comparison {number} of'
            ),
            f'comparison {number}',
        )
        next_button = driver.find_element('id', 'next')
        assert not next_button.is_enabled(), 'Next must wait for a choice and a reason'
        driver.find_element('id', f'choice-{choice}').click()
        driver.find_element('id', 'reason').send_keys(
            f'reason number {number}: clearer replies'
        )
        _wait(
            driver,
            lambda d: d.find_element('id', 'next').is_enabled(),
            'Next to enable',
        )
        next_button.click()


def _rater_choices(unit: UnitSpec, pairs, winner, onboarding_right=True):
    choices = []
    for item in unit.items:
        pair = pairs[item.pair_id]
        if item.is_onboarding:
            target = (
                ONBOARDING_GOOD
                if onboarding_right
                else next(s for s in pair['speakers_to_eval'] if s != ONBOARDING_GOOD)
            )
        else:
            target = winner
        choices.append(side_for(pair, {'left': item.left}, target))
    return choices


def test_local_study_in_chromium_with_onboarding(browser, pairs, tmp_path):
    results = tmp_path / 'results.jsonl'
    study = Study(
        pairs,
        resolve(['recommend']),
        ResultStore(str(results)),
        pairs_per_unit=2,
        seed=3,
    )
    server, url = start_server(study)
    try:
        # rater 1 passes onboarding and prefers model_a
        browser.get(f'{url}/?worker_id=rater-1')
        _wait(browser, _visible('start-screen'), 'the start screen')
        browser.find_element('id', 'start').click()
        _wait(browser, _visible('task-screen'), 'the first comparison')
        (unit,) = study.pending.values()
        assert [i.is_onboarding for i in unit.items] == [True, False, False]
        page_text = browser.find_element('tag name', 'body').text
        assert 'Which recommender gave better recommendations?' in page_text
        titles = ('The Matrix (1999)', 'Frozen (2013)', 'Heat (1995)')
        assert (
            any(t in page_text for t in titles) and '__item_' not in page_text
        ), page_text
        source = browser.page_source
        assert (
            'model_a' not in source
            and 'model_b' not in source
            and ONBOARDING_GOOD not in source
        )
        rate(browser, _rater_choices(unit, pairs, 'model_a'))
        _wait(browser, _visible('done'), 'the thank-you screen')

        # rater 2 fails onboarding: screened out at once, and refused a new unit
        browser.get(f'{url}/?worker_id=rater-2')
        _wait(browser, _visible('start-screen'), 'the start screen')
        browser.find_element('id', 'start').click()
        _wait(browser, _visible('task-screen'), 'the first comparison')
        (unit2,) = study.pending.values()
        rate(
            browser, _rater_choices(unit2, pairs, 'model_b', onboarding_right=False)[:1]
        )
        _wait(browser, _visible('screened-out'), 'the screened-out screen')
        browser.get(f'{url}/?worker_id=rater-2')
        browser.find_element('id', 'start').click()
        _wait(browser, _visible('screened-out'), 'the screened-out screen on return')
    finally:
        server.shutdown()

    records = read_results(str(results))
    assert [(r['worker_id'], r['status']) for r in records] == [
        ('rater-1', 'completed'),
        ('rater-2', 'screened_out'),
    ]
    final = records[0]['data']['outputs']['final_data']
    assert [f['speakerChoice'] for f in final] == [
        ONBOARDING_GOOD,
        'model_a',
        'model_a',
    ]
    assert all(f['textReason'].startswith('reason number') for f in final)
    (matchup,) = win_rates(records)
    assert (matchup.model_a, matchup.wins_a, matchup.wins_b) == ('model_a', 2, 0)


def _cli(*args, env=None):
    proc = subprocess.run(
        [sys.executable, '-m', 'parlai_conkd.human_eval', *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, f'{args[:2]} failed:\n{proc.stdout}\n{proc.stderr}'
    return proc.stdout


def test_mturk_route_end_to_end_against_local_standin(browser, pairings_file, tmp_path):
    pytest.importorskip(
        'boto3',
        reason='boto3 is not installed (pip install -r requirements/human-eval.txt)',
    )
    from parlai_conkd.human_eval.mturk_standin import start_standin

    standin, turk, endpoint = start_standin()
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID='standin',
        AWS_SECRET_ACCESS_KEY='standin',
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        NO_PROXY='127.0.0.1,localhost',
    )
    manifest, results, report = (
        tmp_path / 'hits.jsonl',
        tmp_path / 'results.jsonl',
        tmp_path / 'report',
    )
    study_args = [
        '--pairings',
        pairings_file,
        '--results',
        results,
        '--manifest',
        manifest,
        '--endpoint-url',
        endpoint,
        '--question',
        'talk',
        '--pairs-per-unit',
        '2',
        '--seed',
        '1',
    ]
    pairs = read_pairings(str(pairings_file))
    try:
        _cli(
            'mturk',
            'create',
            *study_args,
            '--num-hits',
            2,
            '--reward',
            '0.25',
            '--min-approval',
            95,
            '--locale',
            'US',
            env=env,
        )
        hits = [json.loads(line) for line in manifest.read_text().splitlines()]
        assert len(hits) == 2 and all(h['hit_id'] in turk.hits for h in hits)
        created = turk.hits[hits[0]['hit_id']]
        assert created['Reward'] == '0.25'
        assert {q['Comparator'] for q in created['QualificationRequirements']} == {
            'DoesNotExist',
            'GreaterThanOrEqualTo',
            'In',
        }

        # MTurk's preview (before accepting) shows the page but cannot be submitted
        browser.get(
            f'{endpoint}/worker/task?hitId={hits[0]["hit_id"]}&assignmentId=ASSIGNMENT_ID_NOT_AVAILABLE'
        )
        _wait(browser, _visible('preview-note'), 'the preview note')
        browser.find_element('id', 'choice-left').click()
        browser.find_element('id', 'reason').send_keys('just looking around')
        assert not browser.find_element('id', 'next').is_enabled()

        # worker W1 passes onboarding on HIT 1 and prefers model_b; W2 fails it on HIT 2
        for hit, worker, winner, passes in (
            (hits[0], 'W1', 'model_b', True),
            (hits[1], 'W2', 'model_a', False),
        ):
            browser.get(
                f'{endpoint}/worker/accept?hitId={hit["hit_id"]}&workerId={worker}'
            )
            _wait(browser, _visible('task-screen'), f'the HIT page for {worker}')
            assert browser.find_element('id', 'preview-note').is_displayed() is False
            unit = UnitSpec.from_dict(hit['unit'])
            rate(browser, _rater_choices(unit, pairs, winner, onboarding_right=passes))
            _wait(
                browser,
                _visible('mturk-submitted'),
                f'MTurk to accept {worker}\'s submission',
            )

        out = _cli('mturk', 'collect', *study_args, env=env)
        assert json.loads(out.strip().splitlines()[-1]) == {
            'stored': 2,
            'screened_out': 1,
            'approved': 2,
            'invalid': 0,
            'already_stored': 0,
            'repeated': 0,
        }
        assert {a['AssignmentStatus'] for a in turk.assignments.values()} == {
            'Approved'
        }
        block_id = hits[0]['block_qualification_id']
        assert ('W2', block_id) in turk.worker_quals and (
            'W1',
            block_id,
        ) not in turk.worker_quals

        # the soft block keeps W2 away from further HITs; collecting again stores nothing twice
        _cli('mturk', 'create', *study_args, '--num-hits', 1, env=env)
        third = json.loads(manifest.read_text().splitlines()[-1])['hit_id']
        browser.get(f'{endpoint}/worker/accept?hitId={third}&workerId=W2')
        assert 'qualification' in browser.find_element('id', 'mturk-error').text
        out = _cli('mturk', 'collect', *study_args, env=env)
        assert json.loads(out.strip().splitlines()[-1])['already_stored'] == 2
    finally:
        standin.shutdown()

    _cli('analyze', '--results', results, '--outdir', report, env=env)
    rows = json.loads((report / 'winrates.json').read_text())
    assert [
        (r['question_key'], r['model_a'], r['wins_a'], r['wins_b']) for r in rows
    ] == [('talk', 'model_a', 0, 2)]
    assert (report / 'winrates.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
