"""``python -m parlai_conkd.leaderboard`` end to end on a slice of the shared ReDial copy.

One module-scoped fixture trains a popularity model and a tiny dialogue teacher through the real
CLI on 12 dialogues; the leaderboard then evaluates them (popularity twice, as two "seeds") with
the real ``parlai eval_model``.
"""

import json
import os
import subprocess
import sys

import pytest

from tests.support import run_parlai, shared_meta_or_skip, shared_redial_or_skip

# the module fixture trains two models and runs a leaderboard (3 eval_model processes): about
# 1.5 minutes on an idle 2-core machine, 6 under a load of 6-7; pytest.ini's 600 s is for hangs
pytestmark = [pytest.mark.cli, pytest.mark.timeout(1200)]

SLICE = ['--redial-max-dialogues', '12']
TRUNC = ['--truncate', '64', '--text-truncate', '64', '--label-truncate', '20']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    redial, meta = shared_redial_or_skip(), shared_meta_or_skip()
    root = tmp_path_factory.mktemp('leaderboard')
    env = {
        'OMP_NUM_THREADS': '1',
        'CONKD_REDIAL_PATH': '',
        'CONKD_REDIAL_META_PATH': '',
    }
    data = [
        '-dp',
        root / 'data',
        '--redial-path',
        redial,
        '--redial-meta-path',
        meta,
        *SLICE,
    ]
    pop = run_parlai(
        [
            'train_model',
            '-m',
            'conkd_popularity',
            '-t',
            'redial_crs:rec',
            '-mf',
            root / 'pop' / 'model',
            '-eps',
            '1',
            '-bs',
            '16',
            *data,
        ],
        env=env,
    )
    final_test = json.loads(
        [line for line in pop.stdout.splitlines() if line.startswith('{')][-1]
    )
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_dialogue_teacher',
            '-t',
            'redial_crs',
            '-mf',
            root / 'dial' / 'model',
            '-bs',
            '8',
            '--max-train-steps',
            '4',
            '--skip-generation',
            'true',
            '--validation-max-exs',
            '16',
            '--short-final-eval',
            'true',
            '--n-layers',
            '1',
            '--embedding-size',
            '16',
            '--ffn-size',
            '32',
            '--n-heads',
            '2',
            *TRUNC,
            *data,
        ],
        env=env,
    )
    return root, redial, meta, env, final_test


def leaderboard(root, redial, meta, *args, env=None, check=True):
    command = [
        sys.executable,
        '-m',
        'parlai_conkd.leaderboard',
        '-dp',
        str(root / 'data'),
        '--redial-path',
        str(redial),
        '--redial-meta-path',
        str(meta),
        '--work-dir',
        str(root / 'work'),
        *map(str, args),
    ]
    proc = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=root,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f'{command} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}'
        )
    return proc


def rows_args(root):
    pop, dial = root / 'pop' / 'model', root / 'dial' / 'model'
    return [
        '--row',
        f'popularity={pop},{pop}',
        '--row',
        f'dialogue teacher={dial}',
        '--row-args',
        'dialogue teacher=--inference greedy ' + ' '.join(TRUNC),
        '--eval-args',
        ' '.join(SLICE),
    ]


def stamps(root):
    return {str(p): p.stat().st_mtime_ns for p in (root / 'work').rglob('run.json')}


@pytest.fixture(scope='module')
def board(trained):
    root, redial, meta, env, _ = trained
    proc = leaderboard(
        root, redial, meta, '--out', root / 'board', *rows_args(root), env=env
    )
    return json.loads((root / 'board.json').read_text()), proc


def test_leaderboard_writes_both_protocols_counts_and_commands(trained, board):
    root, redial, meta, env, _ = trained
    board, proc = board
    pop, dial = board['rows']
    assert (pop['kind'], dial['kind']) == ('ranker', 'generator')
    # the two "seeds" are one model: n = 2, no spread; the second is not evaluated again
    recall = pop['metrics']['recall@1']
    assert (
        recall['n'] == 2
        and recall['std'] == 0.0
        and recall['values'][0] == recall['values'][1]
    )
    assert 'same model, command and data as popularity [1/2]' in proc.stderr
    for name in ('recall@10', 'new_recall@10', 'pairs', 'new_pairs'):
        assert name in pop['metrics'], name
    assert pop['metrics']['pairs']['mean'] >= pop['metrics']['new_pairs']['mean'] > 0
    assert not {'accuracy', 'f1', 'recall', 'precision'} & set(pop['metrics'])
    for name in (
        'rer@1',
        'rer_all@1',
        'rer_responses',
        'rer_all_responses',
        'item_recall',
        'item_f1',
        'item_ratio',
        'rec_flag_acc',
        'dist-2',
        'dist_crs-2',
        'bleu-4',
        'ppl',
        'item_unk_targets',
    ):
        assert name in dial['metrics'], name
    assert 'redial_crs:rec_all' in pop['runs'][0]['command']
    assert (
        '--skip-generation false' in dial['runs'][0]['command']
        and '--inference greedy' in dial['runs'][0]['command']
    )
    assert board['versions']['parlai'] == '1.7.2' and board['data']['fold_sha256']
    assert 'rec_seed' in pop['runs'][0]['seeds']
    text = (root / 'board.md').read_text()
    assert (
        '| popularity | 2 |' in text
        and 'R@1 all' in text
        and 'ReR@1 new' in text
        and 'PPL' in text
    )
    assert (root / 'board.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_numbers_are_eval_models_own(trained, board):
    """The "new" pairs of redial_crs:rec_all are the examples of redial_crs:rec: train_model's own
    final test report on redial_crs:rec (same popularity counts) must give the same new recall.
    """
    board, _ = board
    final_test = trained[4]
    report = board['rows'][0]['runs'][0]['report']
    assert report['new_pairs'] == final_test['exs']
    for k in (1, 10, 50):
        assert report[f'new_recall@{k}'] == pytest.approx(
            final_test[f'recall@{k}'], abs=1e-4
        )


def test_unchanged_inputs_are_not_recomputed(trained, board):
    root, redial, meta, env, _ = trained
    before = stamps(root)
    proc = leaderboard(
        root, redial, meta, '--out', root / 'board', *rows_args(root), env=env
    )
    assert stamps(root) == before and proc.stderr.count('cached result reused') == 2
    assert (
        json.loads((root / 'board.json').read_text())['rows'][0]['runs'][0]['cached']
        is True
    )


@pytest.mark.slow  # the cache's reuse of unchanged rows is tested by default (test above)
def test_a_changed_row_runs_alone(trained, board):
    root, redial, meta, env, _ = trained
    before = stamps(root)
    changed = rows_args(root)
    position = changed.index('--row-args') + 1
    changed[position] = changed[position].replace(
        '--inference greedy', '--inference beam --beam-size 2'
    )
    leaderboard(root, redial, meta, '--out', root / 'board', *changed, env=env)
    after = stamps(root)
    rerun = [path for path in after if after[path] != before[path]]
    assert len(rerun) == 1 and 'dialogue_teacher' in rerun[0]


def test_spec_file_and_clear_errors(trained, tmp_path):
    root, redial, meta, env, _ = trained
    spec = tmp_path / 'board.json'
    spec.write_text(
        json.dumps(
            {
                'rows': [
                    {'name': 'popularity', 'models': [str(root / 'pop' / 'model')]},
                    {'name': 'missing', 'models': [str(tmp_path / 'nope')]},
                ]
            }
        )
    )
    proc = leaderboard(root, redial, meta, '--spec', spec, env=env, check=False)
    assert proc.returncode != 0
    assert (
        "row 'missing': model file not found" in proc.stderr
        and 'Traceback' not in proc.stderr
    )
    proc = leaderboard(
        root, redial, meta, '--out', tmp_path / 'x', env=env, check=False
    )
    assert proc.returncode != 0 and 'no rows' in proc.stderr
