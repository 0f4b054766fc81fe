"""Fixtures for a person's chat: a tiny ConKD zoo (soft student + both teachers, the tiny recipe)
and a small real recommendation teacher with enough training to rank by genre."""

import os
import shutil
import subprocess
import sys

import pytest

from tests.support import (
    SHARED_REDIAL,
    SHARED_REDIAL_META,
    ZOO_ENV,
    run_parlai,
    shared_meta_or_skip,
    shared_redial_or_skip,
)

DATA_ENV = ('CONKD_REDIAL_PATH', 'CONKD_REDIAL_META_PATH')


def _base_env():
    env = {k: v for k, v in os.environ.items() if k not in ZOO_ENV + DATA_ENV}
    # ParlAI resolves zoo:conkd/soft through the zoo's build module: only soft and its teachers
    env.update(
        CONKD_ZOO_RECIPE='tiny',
        CONKD_ZOO_MODELS='soft',
        OMP_NUM_THREADS='1',
        PYTHONUNBUFFERED='1',
    )
    return env


@pytest.fixture(scope='session')
def tiny_zoo(tmp_path_factory):
    """``(datapath, chat_env)``: zoo:conkd/soft built with the tiny recipe on the shared ReDial;
    ``chat_env`` has no ReDial or KG path set (a chat must not need them)."""
    shared_redial_or_skip()
    shared_meta_or_skip()
    datapath = tmp_path_factory.mktemp('tiny_zoo')
    build_env = dict(
        _base_env(),
        CONKD_REDIAL_PATH=str(SHARED_REDIAL),
        CONKD_REDIAL_META_PATH=str(SHARED_REDIAL_META),
    )
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'parlai_conkd.zoo.conkd.builder',
            'ensure',
            '-dp',
            str(datapath),
            'soft',
        ],
        env=build_env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return datapath, _base_env()


@pytest.fixture(scope='session')
def small_rec_teacher(tmp_path_factory):
    """A real conkd_rec_teacher (R-GCN over the KG) trained on 300 shared dialogues for 2 epochs:
    small, but its rankings follow the genres named (the tiny zoo's teacher is near-uniform).
    """
    shared_redial_or_skip()
    shared_meta_or_skip()
    root = tmp_path_factory.mktemp('small_rec')
    env = {
        'CONKD_REDIAL_PATH': str(SHARED_REDIAL),
        'CONKD_REDIAL_META_PATH': str(SHARED_REDIAL_META),
        'OMP_NUM_THREADS': '1',
    }
    run_parlai(
        [
            'train_model',
            '-t',
            'redial_crs:rec',
            '-m',
            'conkd_rec_teacher',
            '-mf',
            root / 'rec',
            '-dp',
            root / 'data',
            '--redial-max-dialogues',
            300,
            '--num-epochs',
            2,
            '-bs',
            32,
            '--rec-dim',
            32,
            '--validation-max-exs',
            50,
            '--rec-seed',
            0,
        ],
        env=env,
        timeout=600,
    )
    return root / 'rec'


@pytest.fixture
def fresh_datapath(tiny_zoo, tmp_path):
    """A datapath holding only the installed zoo models (no task data, no downloads)."""
    datapath, _ = tiny_zoo
    target = tmp_path / 'dp'
    shutil.copytree(datapath / 'models', target / 'models')
    return target
