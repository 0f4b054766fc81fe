"""`parlai display_data` on the real CLI: shared data via option and env var, and a served archive."""

import re

import pytest

from tests.support import run_parlai, write_redial

pytestmark = [pytest.mark.cli, pytest.mark.usefixtures('no_redial_env')]

NEW_EPISODE = re.compile(r'NEW EPISODE: redial_crs')


def display(task, datapath, *args, env=None, check=True):
    return run_parlai(
        ['display_data', '-t', task, '--datapath', datapath, '-n', 3, *args],
        env=env,
        timeout=300,
        check=check,
    )


def test_display_default_teacher_with_redial_path_option(shared_redial, tmp_path):
    proc = display('redial_crs', tmp_path / 'dp', '--redial-path', shared_redial)
    assert NEW_EPISODE.search(proc.stdout)
    assert re.search(r'__item_\d+__', proc.stdout)
    assert (
        'loaded 1811 episodes with a total of 11417 examples'
        in proc.stdout + proc.stderr
    )


def test_display_rec_readable_with_env_var(shared_redial, tmp_path):
    proc = display(
        'redial_crs:rec_readable',
        tmp_path / 'dp',
        '-dt',
        'test',
        env={'CONKD_REDIAL_PATH': str(shared_redial)},
    )
    assert 'NEW EPISODE: redial_crs:rec' in proc.stdout
    assert not re.search(r'__item_\d+__', proc.stdout)  # titles, not tokens
    assert re.search(r'\(\d{4}\)', proc.stdout)


def test_display_rec_from_served_archive_and_reject_checksum_mismatch(
    served_archive, tmp_path
):
    url, sha256 = served_archive
    env = {'NO_PROXY': '127.0.0.1'}
    bad = display(
        'redial_crs:rec',
        tmp_path / 'dp',
        '--redial-url',
        url,
        '--redial-sha256',
        '1' * 64,
        env=env,
        check=False,
    )
    assert bad.returncode != 0 and 'checksum mismatch' in bad.stderr + bad.stdout
    good = display(
        'redial_crs:rec',
        tmp_path / 'dp',
        '--redial-url',
        url,
        '--redial-sha256',
        sha256,
        '--display-add-fields',
        'label_items',
        env=env,
    )
    assert '__item_222__' in good.stdout and '[label_items]: 1' in good.stdout


@pytest.mark.parametrize(
    'task,extra',
    [
        ('redial_crs', []),
        ('redial_crs:rec', ['--verbose']),
        ('redial_crs:readable', ['--display-add-fields', 'label_items']),
    ],
)
def test_display_of_an_empty_fold_shows_no_fake_example(tmp_path, task, extra):
    """ParlAI's loop parleys before it checks for the end: an empty fold showed the teacher's
    batch padding as an example ([no text field], or [batch_padding] with --verbose)."""

    # an official layout with an empty test file
    redial = write_redial(tmp_path / 'redial', test=[])
    proc = display(
        task, tmp_path / 'dp', '--redial-path', redial, '-dt', 'test', *extra
    )
    assert 'NEW EPISODE' not in proc.stdout and 'no text field' not in proc.stdout
    assert 'batch_padding' not in proc.stdout + proc.stderr
    assert (
        f'-t {task} -dt test: the fold has no examples; nothing to display'
        in proc.stdout + proc.stderr
    )
    if extra == ['--verbose']:  # a fold with examples is shown as before, to its end
        proc = display(
            task,
            tmp_path / 'dp',
            '--redial-path',
            redial,
            '-dt',
            'train',
            '-n',
            1000,
            *extra,
        )
        log = proc.stdout + proc.stderr
        assert (
            log.count('__item_') > 0
            and 'nothing to display' not in log
            and 'batch_padding' not in log
        )
        assert 'epoch done' in log
