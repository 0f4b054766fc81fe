"""Shared fixtures for the student tests: two tiny teachers trained once on a slice of shared ReDial."""

import pytest

from tests.support import (
    SLICE,
    TINY_TRANSFORMER,
    TRUNC,
    run_parlai,
    shared_meta_or_skip,
    shared_redial_or_skip,
)


def _env(redial, meta):
    return {
        'CONKD_REDIAL_PATH': str(redial),
        'CONKD_REDIAL_META_PATH': str(meta),
        'OMP_NUM_THREADS': '1',
    }


@pytest.fixture(scope='session')
def teachers(tmp_path_factory):
    redial, meta = shared_redial_or_skip(), shared_meta_or_skip()
    root = tmp_path_factory.mktemp('teachers')
    env = _env(redial, meta)
    common = ['-dp', root / 'data', *SLICE]
    run_parlai(
        [
            'train_model',
            '-t',
            'redial_crs:rec',
            '-m',
            'conkd_rec_teacher',
            '-mf',
            root / 'rec',
            '-bs',
            16,
            '--num-epochs',
            1,
            '--validation-max-exs',
            20,
            *common,
        ],
        env=env,
    )
    run_parlai(
        [
            'train_model',
            '-t',
            'redial_crs',
            '-m',
            'conkd_dialogue_teacher',
            '-mf',
            root / 'dial',
            '-bs',
            8,
            '--num-epochs',
            1,
            '--skip-generation',
            'true',
            '--validation-max-exs',
            20,
            *TINY_TRANSFORMER,
            *TRUNC,
            *common,
        ],
        env=env,
    )
    return root, env, common
