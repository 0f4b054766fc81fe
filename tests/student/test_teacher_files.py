"""Which teacher files a student's run may build or download (issue #22: evaluating a copy of the
soft student started a 14-minute build of its dialogue teacher)."""

import os

import pytest

from parlai_conkd.agents import frozen


@pytest.fixture
def no_zoo_calls(monkeypatch):
    """Any call of ParlAI's modelzoo_path (which downloads or builds zoo models) fails the test."""

    def refuse(datapath, path):
        raise AssertionError(
            f'modelzoo_path({path!r}) called: it would build or download'
        )

    monkeypatch.setattr(frozen, 'modelzoo_path', refuse)


def opt(tmp_path, **files):
    return {'datapath': str(tmp_path), **files}


def test_without_fetch_a_zoo_teacher_not_on_disk_is_refused_naming_the_option(
    tmp_path, no_zoo_calls
):
    o = opt(tmp_path, dialogue_teacher_file='zoo:conkd/dialogue_teacher')
    with pytest.raises(frozen.TeacherError) as error:
        frozen.resolve_model_file(o, '--dialogue-teacher-file', fetch=False)
    message = str(error.value)
    assert message.startswith(
        '--dialogue-teacher-file zoo:conkd/dialogue_teacher: not on disk'
    )
    assert os.path.join(str(tmp_path), 'models', 'conkd', 'dialogue_teacher') in message
    assert not (tmp_path / 'models').exists()  # nothing was built


def test_without_fetch_a_zoo_teacher_on_disk_is_used_where_parlai_keeps_it(
    tmp_path, no_zoo_calls
):
    model = tmp_path / 'models' / 'conkd' / 'rec_teacher'
    model.parent.mkdir(parents=True)
    model.write_bytes(b'weights')
    (tmp_path / 'models' / 'conkd' / 'rec_teacher.opt').write_text('{}')
    o = opt(tmp_path, rec_teacher_file='zoo:conkd/rec_teacher')
    assert frozen.resolve_model_file(o, '--rec-teacher-file', fetch=False) == str(model)


def test_training_resolves_zoo_teachers_through_parlai(tmp_path, monkeypatch):
    calls = []

    def fake_modelzoo_path(datapath, path):
        calls.append(path)
        return str(tmp_path / 'made')

    monkeypatch.setattr(frozen, 'modelzoo_path', fake_modelzoo_path)
    (tmp_path / 'made').write_bytes(b'weights')
    (tmp_path / 'made.opt').write_text('{}')
    o = opt(tmp_path, rec_teacher_file='zoo:conkd/rec_teacher')
    assert frozen.resolve_model_file(o, '--rec-teacher-file') == str(tmp_path / 'made')
    assert calls == ['zoo:conkd/rec_teacher']


def test_local_model_path_maps_zoo_names_and_leaves_files(tmp_path):
    assert frozen.local_model_path('dp', 'zoo:conkd/soft') == os.path.join(
        'dp', 'models', 'conkd', 'soft'
    )
    assert frozen.local_model_path('dp', 'runs/x/model') == 'runs/x/model'
