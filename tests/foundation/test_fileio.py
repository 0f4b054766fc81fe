"""Outputs written through a temporary file get the umask's mode, like every other output."""

import os

import pytest
import torch

from parlai_conkd import fileio


@pytest.fixture
def umask_027():
    previous = os.umask(0o027)
    yield 0o640
    os.umask(previous)


def test_umask_is_read_without_changing_it(umask_027):
    assert fileio.umask() == 0o027 and fileio.plain_file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # unchanged by the read


def _mode(path):
    return os.stat(path).st_mode & 0o777


def test_teacher_cache_file_mode_follows_the_umask(tmp_path, umask_027):
    """The teacher cache was created 0600 (mkstemp) unlike the model files next to it."""
    from parlai_conkd.teacher_cache import CachedTargets, TeacherCache

    cache = TeacherCache(str(tmp_path / 'teacher.cache'), {'k': 'v'})
    cache.put(
        'x',
        CachedTargets(
            torch.zeros(1, 2),
            torch.zeros(1, 2, dtype=torch.int32),
            torch.zeros(1),
            torch.zeros(2),
            torch.zeros(2, dtype=torch.int32),
        ),
    )
    cache.save()
    plain = tmp_path / 'plain'
    plain.write_text('x')
    assert _mode(tmp_path / 'teacher.cache') == _mode(plain) == umask_027
    assert len(TeacherCache.open(str(tmp_path / 'teacher.cache'), {'k': 'v'})) == 1


def test_human_eval_and_zoo_outputs_follow_the_umask(tmp_path, umask_027):
    from parlai_conkd.human_eval.analysis import Matchup, write_reports
    from parlai_conkd.zoo.conkd.builder import _atomic_write_json

    matchup = Matchup(
        question='engaging', model_a='a', model_b='b', wins_a=3, wins_b=1, ties=0
    )
    paths = write_reports([matchup], str(tmp_path / 'report'))
    _atomic_write_json(str(tmp_path / 'model.zoo.json'), {'a': 1})
    for path in list(paths.values()) + [str(tmp_path / 'model.zoo.json')]:
        assert _mode(path) == umask_027, path


def test_atomic_write_replaces_whole_files_and_leaves_nothing_on_error(
    tmp_path, umask_027
):
    target = tmp_path / 'sub' / 'report.json'
    with fileio.atomic_write(str(target)) as f:
        f.write('first')
    assert target.read_text() == 'first' and _mode(target) == umask_027
    with pytest.raises(RuntimeError, match='cut'):
        with fileio.atomic_write(str(target)) as f:
            f.write('half of the sec')
            raise RuntimeError('cut')
    assert target.read_text() == 'first'  # the old file, untouched
    # no temporary left
    assert sorted(p.name for p in target.parent.iterdir()) == ['report.json']
    with fileio.atomic_path(str(tmp_path / 'chart.png')) as tmp:
        # savefig picks the format
        assert tmp.endswith('.png') and os.path.dirname(tmp) == str(tmp_path)
        open(tmp, 'wb').write(b'png')
    assert (tmp_path / 'chart.png').read_bytes() == b'png'
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with fileio.atomic_write(str(target), 'a'):
            pass


def test_sha256_file_is_the_hash_of_the_bytes(tmp_path):
    import hashlib

    path = tmp_path / 'blob'
    path.write_bytes(b'abc' * 1000)
    assert (
        fileio.sha256_file(str(path), chunk=7)
        == hashlib.sha256(b'abc' * 1000).hexdigest()
    )
    assert fileio.sha256_file(str(path)) == fileio.sha256_file(str(path), chunk=1 << 20)
