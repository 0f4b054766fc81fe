"""`parlai display_data` on the real CLI: shared data via option and env var, and a served archive."""
import re

import pytest

from tests.conftest import run_parlai

pytestmark = [pytest.mark.cli, pytest.mark.usefixtures('no_redial_env')]

NEW_EPISODE = re.compile(r'NEW EPISODE: redial_crs')


def display(task, datapath, *args, env=None, check=True):
    return run_parlai(
        ['display_data', '-t', task, '--datapath', datapath, '-n', 3, *args],
        env=env, timeout=300, check=check,
    )


def test_display_default_teacher_with_redial_path_option(shared_redial, tmp_path):
    proc = display('redial_crs', tmp_path / 'dp', '--redial-path', shared_redial)
    assert NEW_EPISODE.search(proc.stdout)
    assert re.search(r'__item_\d+__', proc.stdout)
    assert 'loaded 1811 episodes with a total of 11417 examples' in proc.stdout + proc.stderr


def test_display_rec_readable_with_env_var(shared_redial, tmp_path):
    proc = display('redial_crs:rec_readable', tmp_path / 'dp', '-dt', 'test',
                   env={'CONKD_REDIAL_PATH': str(shared_redial)})
    assert 'NEW EPISODE: redial_crs:rec' in proc.stdout
    assert not re.search(r'__item_\d+__', proc.stdout)  # titles, not tokens
    assert re.search(r'\(\d{4}\)', proc.stdout)


def test_display_rec_from_served_archive_and_reject_checksum_mismatch(served_archive, tmp_path):
    url, sha256 = served_archive
    env = {'NO_PROXY': '127.0.0.1'}
    bad = display('redial_crs:rec', tmp_path / 'dp', '--redial-url', url, '--redial-sha256', '1' * 64,
                  env=env, check=False)
    assert bad.returncode != 0 and 'checksum mismatch' in bad.stderr + bad.stdout
    good = display('redial_crs:rec', tmp_path / 'dp', '--redial-url', url, '--redial-sha256', sha256,
                   '--display-add-fields', 'label_items', env=env)
    assert '__item_222__' in good.stdout and '[label_items]: 1' in good.stdout

