"""ParlAI's AutoTeacherTest for every redial_crs teacher on the shared ReDial copy.

AutoTeacherTest compares the first 5 acts and the episode/example counts of each fold with the
regression files committed in tests/task/test_auto_teachers/ (pytest-regressions). After an
intended change to preprocessing (and a VERSION bump in build.py), regenerate them with
``pytest tests/task/test_auto_teachers.py --force-regen`` and review the diff.
"""

import pytest
from parlai.utils.testing import AutoTeacherTest

from tests.support import shared_redial_or_skip


@pytest.fixture(scope='module')
def shared_build_datapath(tmp_path_factory):
    # One build of the shared data for the whole module (the teachers then only load JSON).
    return tmp_path_factory.mktemp('redial_crs_datapath')


@pytest.fixture(autouse=True)
def shared_data_env(monkeypatch, shared_build_datapath):
    source = shared_redial_or_skip()
    monkeypatch.setenv('CONKD_REDIAL_PATH', str(source))
    monkeypatch.delenv('CONKD_REDIAL_META_PATH', raising=False)
    monkeypatch.setenv('PARLAI_DATAPATH', str(shared_build_datapath))


class TestDefaultTeacher(AutoTeacherTest):
    task = 'redial_crs'


class TestRecTeacher(AutoTeacherTest):
    task = 'redial_crs:rec'


class TestReadableTeacher(AutoTeacherTest):
    task = 'redial_crs:readable'


class TestRecReadableTeacher(AutoTeacherTest):
    task = 'redial_crs:rec_readable'


class TestRecAllTeacher(AutoTeacherTest):
    task = 'redial_crs:rec_all'
