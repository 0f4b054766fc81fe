"""Shared test helpers: where the shared ReDial data is, and how to run the real `parlai` CLI."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(
    os.environ.get('CONKD_SHARED_DATA', REPO_ROOT.parent / 'shared' / 'data')
)
SHARED_REDIAL = SHARED_DATA / 'redial'
SHARED_REDIAL_META = SHARED_DATA / 'redial-meta'
PARLAI = str(Path(sys.executable).with_name('parlai'))


def shared_redial_or_skip():
    """Path of the shared ReDial copy; skips the calling test with the reason when it is absent."""
    if not (SHARED_REDIAL / 'train_data.jsonl').is_file():
        pytest.skip(
            f'shared ReDial data not found at {SHARED_REDIAL} (set CONKD_SHARED_DATA)'
        )
    return SHARED_REDIAL


def shared_meta_or_skip():
    if not (SHARED_REDIAL_META / 'kg.json').is_file():
        pytest.skip(
            f'shared movie KG not found at {SHARED_REDIAL_META} (set CONKD_SHARED_DATA)'
        )
    return SHARED_REDIAL_META


@pytest.fixture
def shared_redial():
    return shared_redial_or_skip()


@pytest.fixture
def shared_meta():
    return shared_meta_or_skip()


def run_parlai(args, cwd=None, env=None, input=None, timeout=300, check=True):
    """Run the installed `parlai` CLI in a subprocess; on failure show its output."""
    full_env = dict(os.environ)
    full_env.setdefault('PYTHONUNBUFFERED', '1')
    full_env.update(env or {})
    proc = subprocess.run(
        [PARLAI, *[str(a) for a in args]],
        cwd=cwd,
        env=full_env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f'parlai {" ".join(map(str, args))} exited {proc.returncode}\n'
            f'--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}'
        )
    return proc


@pytest.fixture
def parlai_cli():
    return run_parlai


def train_stats(model_file):
    """``train_model``'s own record of a run (``<model_file>.trainstats``: ``train_reports``,
    ``final_valid_report``, ``final_test_report``). Unlike the printed reports, which ParlAI renders as
    tables when pandas is installed (as on the GPU machine), this is JSON everywhere."""
    import json

    with open(f'{model_file}.trainstats', encoding='utf-8') as f:
        return json.load(f)


def eval_report(args, report_file, **kwargs):
    """Run ``parlai eval_model`` with ``--report-filename`` and return its report (JSON everywhere)."""
    import json

    run_parlai(['eval_model', *args, '--report-filename', report_file], **kwargs)
    with open(report_file, encoding='utf-8') as f:
        return json.load(f)['report']


#: the environment of a smoke-recipe zoo on the shared data (``smoke_zoo``)
def smoke_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith('CONKD_')}
    env.update(
        CONKD_ZOO_RECIPE='smoke',
        CONKD_REDIAL_PATH=str(SHARED_REDIAL),
        CONKD_REDIAL_META_PATH=str(SHARED_REDIAL_META),
        OMP_NUM_THREADS='1',
        PYTHONUNBUFFERED='1',
    )
    return env


@pytest.fixture(scope='session')
def smoke_zoo(tmp_path_factory):
    """``(datapath, env)``: the whole ConKD zoo built once per test session from the ``smoke``
    recipe (the default recipe's saved options at the tiny size, about 1.5 CPU-minutes) on the
    shared ReDial. Tests read it or copy files out of it; none may change it."""
    shared_redial_or_skip()
    shared_meta_or_skip()
    datapath = tmp_path_factory.mktemp('smoke_zoo') / 'data'
    env = smoke_env()
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'parlai_conkd.zoo.conkd.builder',
            'ensure',
            '-dp',
            str(datapath),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return datapath, env
