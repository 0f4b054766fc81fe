"""Session-wide fixtures: the shared ReDial data, the real `parlai` CLI, the smoke zoo (the helpers
they use, and every test's, are in tests/support.py)."""

import subprocess
import sys

import pytest

from tests.support import (
    run_parlai,
    shared_meta_or_skip,
    shared_redial_or_skip,
    smoke_env,
)


@pytest.fixture
def shared_redial():
    return shared_redial_or_skip()


@pytest.fixture
def shared_meta():
    return shared_meta_or_skip()


@pytest.fixture
def parlai_cli():
    return run_parlai


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
