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
    cache.put('x', CachedTargets(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.int32), torch.zeros(1),
                                 torch.zeros(2), torch.zeros(2, dtype=torch.int32)))
    cache.save()
    plain = tmp_path / 'plain'
    plain.write_text('x')
    assert _mode(tmp_path / 'teacher.cache') == _mode(plain) == umask_027
    assert len(TeacherCache.open(str(tmp_path / 'teacher.cache'), {'k': 'v'})) == 1


def test_human_eval_and_zoo_outputs_follow_the_umask(tmp_path, umask_027):
    from parlai_conkd.human_eval.files import atomic_write
    from parlai_conkd.zoo.conkd.builder import _atomic_write_json

    atomic_write(str(tmp_path / 'winrates.md'), lambda tmp: open(tmp, 'w').write('| a |\n'))
    _atomic_write_json(str(tmp_path / 'model.zoo.json'), {'a': 1})
    assert _mode(tmp_path / 'winrates.md') == _mode(tmp_path / 'model.zoo.json') == umask_027
