"""A validation fold whose dialogues name no movie (CRSLab #40): training goes on.

train_model's validate() read ``report[--validation-metric]`` and died with KeyError when the fold
gave no value for it. The fixture is a tiny ReDial copy in the official layout whose validation
fold (chosen by the task's salted hash of conversationId) holds only dialogues without mentions.
"""

import json

import pytest

from parlai_conkd.redial.preprocess import is_valid_fold
from tests.support import dialogue, run_parlai, write_redial

pytestmark = pytest.mark.cli

MOVIES = 'movieId,movieName,nbMentions\n' + ''.join(
    f'{100 + i},Movie {i} ({1950 + i}),1\n' for i in range(60)
)
STEPS = 12


@pytest.fixture(scope='module')
def redial_without_valid_items(tmp_path_factory):
    train = []
    for cid in range(1000, 1060):
        if is_valid_fold(cid):
            train.append(
                dialogue(
                    cid,
                    [
                        (1, 'hi, any good film?'),
                        (2, 'what do you like?'),
                        (1, 'scary ones'),
                        (2, 'sorry, none comes to mind'),
                    ],
                )
            )
        else:
            a, b, c = (100 + (cid * k) % 60 for k in (1, 7, 13))
            train.append(
                dialogue(
                    cid,
                    [
                        (1, f'hi, I liked @{a}'),
                        (2, f'try @{b}'),
                        (1, 'seen it, thanks'),
                        (2, f'then @{c}'),
                    ],
                )
            )
    assert sum(is_valid_fold(d['conversationId']) for d in train) >= 3
    root = tmp_path_factory.mktemp('no-valid-items')
    return write_redial(root / 'redial', train=train, movies=MOVIES)


@pytest.mark.parametrize(
    'model,args,metric',
    [
        (
            'conkd_rec_teacher',
            ['-t', 'redial_crs:rec', '-vmt', 'recall@10', '-vmm', 'max'],
            'recall@10',
        ),
        # the agent's default metric
        (
            'conkd_rec_teacher',
            ['-t', 'redial_crs:rec'],
            'recall@10',
        ),
        ('conkd_rec_teacher', ['-t', 'redial_crs'], 'recall@10'),
        (
            'conkd_dialogue_teacher',
            [
                '-t',
                'redial_crs',
                '-vmt',
                'tf_rer@10',
                '--n-layers',
                1,
                '--embedding-size',
                16,
                '--ffn-size',
                32,
                '--n-heads',
                2,
                '--skip-generation',
                'true',
            ],
            'tf_rer@10',
        ),
    ],
)
def test_training_goes_on_when_the_validation_metric_is_absent(
    redial_without_valid_items, tmp_path, model, args, metric
):
    mf = tmp_path / 'model'
    env = {
        'CONKD_REDIAL_PATH': '',
        'CONKD_REDIAL_META_PATH': '',
        'OMP_NUM_THREADS': '1',
    }
    extra = ['--use-kg', 'false'] if model == 'conkd_rec_teacher' else []
    out = run_parlai(
        [
            'train_model',
            '-m',
            model,
            *extra,
            *args,
            '--redial-path',
            redial_without_valid_items,
            '-dp',
            tmp_path / 'data',
            '-mf',
            mf,
            '-bs',
            8,
            '--max-train-steps',
            STEPS,
            '-vstep',
            5,
        ],
        env=env,
    )
    log = out.stdout + out.stderr
    assert 'KeyError' not in log
    # steps 5, 10
    assert (
        log.count(f'validation metric {metric!r} is absent from this validation report')
        == 2
    )
    assert 'not compared with the best so far (none yet) and training goes on' in log
    stats = json.loads((tmp_path / 'model.trainstats').read_text())
    assert stats['train_steps'] == STEPS and stats['best_valid'] is None
    assert len(stats['valid_reports']) == 2 and all(
        metric not in r for r in stats['valid_reports']
    )
    assert mf.is_file() and stats['final_valid_report']['total_train_updates'] == STEPS
