"""The command line on a real ParlAI generator model: logs via `parlai eval_model --world-logs`,
then ACUTE-Eval pairings from them."""

import json
import os
import subprocess
import sys

import pytest

from parlai_conkd.human_eval.pairings import read_pairings
from tests.support import run_parlai

TINY = [
    '--n-layers',
    1,
    '--embedding-size',
    16,
    '--ffn-size',
    32,
    '--n-heads',
    2,
    '--truncate',
    32,
    '--text-truncate',
    32,
    '--label-truncate',
    8,
]
ENV = {'OMP_NUM_THREADS': '1'}


def _human_eval(*args):
    proc = subprocess.run(
        [sys.executable, '-m', 'parlai_conkd.human_eval', *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, **ENV),
    )
    return proc


@pytest.mark.cli
def test_logs_and_pairings_from_a_parlai_model_file(tmp_path):
    first, second = tmp_path / 'first' / 'model', tmp_path / 'second' / 'model'
    for model_file, steps in ((first, 5), (second, 60)):  # two different models
        run_parlai(
            [
                'train_model',
                '-m',
                'transformer/generator',
                '-t',
                'integration_tests:multiturn',
                '-mf',
                model_file,
                *TINY,
                '--max-train-steps',
                steps,
                '--batchsize',
                8,
                '-vtim',
                100000,
                '--validation-max-exs',
                1,
                '--skip-generation',
                'true',
            ],
            env=ENV,
        )
    logdir = tmp_path / 'logs'
    args = [
        '--outdir',
        logdir,
        '-t',
        'integration_tests:multiturn',
        '-dt',
        'valid',
        '-n',
        8,
        '--',
        *TINY,
        '--inference',
        'greedy',
    ]
    # one model under two names would be compared with itself
    proc = _human_eval(
        'logs', '-mf', first, '-mf', first, '--name', 'a', '--name', 'b', *args
    )
    assert (
        proc.returncode == 2 and f'{first} is given twice (as a and b)' in proc.stderr
    )
    proc = _human_eval(
        'logs',
        '-mf',
        first,
        '-mf',
        second,
        '--name',
        'first',
        '--name',
        'second',
        *args,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [
        'first',
        str(logdir / 'first.jsonl'),
        'second',
        str(logdir / 'second.jsonl'),
    ]
    episode = json.loads((logdir / 'first.jsonl').read_text().splitlines()[0])
    teacher_act, model_act = episode['dialog'][0]
    assert (
        teacher_act['id'] == 'integration_tests:multiturn'
        and 'eval_labels' in teacher_act
    )
    # generation was forced on although the model was trained without it
    assert 'text' in model_act
    # no partial logs left
    assert not any(p.name.startswith('.') for p in logdir.iterdir())

    out = tmp_path / 'pairings.jsonl'
    common = [
        '--out',
        out,
        '-t',
        'integration_tests:multiturn',
        '-dt',
        'valid',
        '--onboarding',
        1,
    ]
    proc = _human_eval(
        'pairings',
        '--log',
        f'first={logdir / "first.jsonl"}',
        '--log',
        f'second={logdir / "first.jsonl"}',
        *common,
    )
    assert (
        proc.returncode == 2
        and 'are the same file: one model under two names' in proc.stderr
    )
    assert not out.exists()
    proc = _human_eval(
        'pairings',
        '--log',
        f'first={logdir / "first.jsonl"}',
        '--log',
        f'second={logdir / "second.jsonl"}',
        *common,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pairs = read_pairings(str(out))
    assert [p['is_onboarding'] for p in pairs][0] is True
    model_pairs = [p for p in pairs if not p['is_onboarding']]
    assert model_pairs and all(
        p['speakers_to_eval'] == ['first', 'second'] for p in model_pairs
    )
    assert model_pairs[0]['tags'][0] == 'integration_tests:multiturn:valid'


def test_bad_arguments_are_named():
    proc = _human_eval('pairings', '--log', 'nopath', '--out', 'x.jsonl')
    assert (
        proc.returncode != 0 and "--log expects NAME=PATH, got 'nopath'" in proc.stderr
    )
    proc = _human_eval('mturk', 'balance', '--target', 'live')
    assert proc.returncode != 0 and 'without --i-mean-live' in proc.stderr


def test_missing_log_is_reported(tmp_path):
    proc = _human_eval(
        'pairings',
        '--log',
        f'a={tmp_path / "a.jsonl"}',
        '--log',
        f'b={tmp_path / "b.jsonl"}',
        '--out',
        tmp_path / 'p.jsonl',
        '--onboarding',
        0,
    )
    assert (
        proc.returncode == 2
        and f'conversation log not found: {tmp_path / "a.jsonl"}' in proc.stderr
    )
