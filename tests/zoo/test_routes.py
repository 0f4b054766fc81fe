"""The three routes of every zoo module (present / release archive / local build) and atomicity,
with a fake trainer so they run in seconds; real training is in test_build_real.py (slow).
"""

import importlib
import json
import os

import pytest

from parlai_conkd.zoo.conkd import builder, recipe
from tests.support import FakeTrainer, tmp_dirs, visible_model_files

ZOO_MODULES = {
    'rec_teacher': ['rec_teacher'],
    'dialogue_teacher': ['rec_teacher', 'dialogue_teacher'],
    'soft': ['rec_teacher', 'dialogue_teacher', 'soft'],
    'hard': ['rec_teacher', 'dialogue_teacher', 'hard'],
    'build': ['rec_teacher', 'dialogue_teacher', 'soft', 'hard'],
}


def built(trainer):
    return [name for name, _ in trainer.calls]


@pytest.mark.parametrize('module', sorted(ZOO_MODULES))
def test_build_route_builds_the_model_and_its_teachers_first(
    module, tmp_path, clean_zoo_env, fake_trainer
):
    mod = importlib.import_module(f'parlai_conkd.zoo.conkd.{module}')
    mod.download(str(tmp_path))
    assert built(fake_trainer) == ZOO_MODULES[module]
    for model in recipe.MODELS:
        assert builder.is_present(str(tmp_path), model) == (
            model in ZOO_MODULES[module]
        )
    # present route: nothing is trained again
    mod.download(str(tmp_path))
    assert built(fake_trainer) == ZOO_MODULES[module]


def test_parlai_resolves_zoo_path_through_build(tmp_path, clean_zoo_env, fake_trainer):
    from parlai.core.build_data import modelzoo_path

    path = modelzoo_path(str(tmp_path), 'zoo:conkd/soft')
    assert path == os.path.join(str(tmp_path), 'models', 'conkd', 'soft')
    # what the soft student needs, not the hard student (issue #22)
    assert built(fake_trainer) == ['rec_teacher', 'dialogue_teacher', 'soft']
    assert (
        builder.weights_sha256(path)
        == builder.read_stamp(os.path.dirname(path), 'soft')['weights_sha256']
    )


def test_installed_model_is_portable_and_without_byproducts(
    tmp_path, clean_zoo_env, fake_trainer
):
    builder.ensure(str(tmp_path), ['soft'])
    names = visible_model_files(tmp_path, 'soft')
    assert 'soft.checkpoint' not in names
    assert {'soft', 'soft.opt', 'soft.dict', 'soft.zoo.json'} <= set(names)
    with open(os.path.join(builder.zoo_dir(str(tmp_path)), 'soft.opt')) as f:
        opt = json.load(f)
    assert opt['dialogue_teacher_file'] == 'zoo:conkd/dialogue_teacher'
    assert opt['rec_teacher_file'] == 'zoo:conkd/rec_teacher'
    assert 'dict_file' not in opt and 'init_model' not in opt
    assert opt['model_file'] == builder.model_file(str(tmp_path), 'soft')
    assert builder.TMP_PREFIX not in json.dumps(opt)
    # the recipe really trained the student from its teachers' final files
    args = dict(fake_trainer.calls)['soft']
    assert args[args.index('--gate') + 1] == 'soft'
    assert args[args.index('--rec-teacher-file') + 1] == builder.model_file(
        str(tmp_path), 'rec_teacher'
    )
    stamp = builder.read_stamp(builder.zoo_dir(str(tmp_path)), 'soft')
    teachers = {
        t: builder.read_stamp(builder.zoo_dir(str(tmp_path)), t)['build_id']
        for t in ('rec_teacher', 'dialogue_teacher')
    }
    assert stamp['depends'] == teachers and stamp['zoo_version'] == recipe.ZOO_VERSION
    # the dialogue teacher's item embeddings start from the rec teacher; its .opt names the zoo
    dialogue_args = dict(fake_trainer.calls)['dialogue_teacher']
    assert dialogue_args[
        dialogue_args.index('--item-embeddings-from') + 1
    ] == builder.model_file(str(tmp_path), 'rec_teacher')
    dialogue_stamp = builder.read_stamp(
        builder.zoo_dir(str(tmp_path)), 'dialogue_teacher'
    )
    assert dialogue_stamp['depends'] == {'rec_teacher': teachers['rec_teacher']}
    # what makes a build reproducible is recorded with it
    assert (
        stamp['seed'] == recipe.SEED
        and stamp['threads'] == recipe.RECIPES['default'].threads
    )
    assert stamp['torch'] and stamp['stopped_by_time_cap'] is False
    assert stamp['weights_sha256'] == builder.weights_sha256(
        builder.model_file(str(tmp_path), 'soft')
    )
    assert '--seed' in args and args[args.index('--seed') + 1] == str(recipe.SEED)
    assert tmp_dirs(tmp_path) == []


def test_version_mismatch_and_replaced_teacher_make_models_stale(
    tmp_path, clean_zoo_env, fake_trainer
):
    dp = str(tmp_path)
    builder.ensure(dp, ['soft'])
    stamp_file = builder.stamp_path(builder.zoo_dir(dp), 'dialogue_teacher')
    stamp = json.load(open(stamp_file))
    stamp['zoo_version'] = 'v0'
    json.dump(stamp, open(stamp_file, 'w'))
    assert 'zoo version v0' in builder.why_not_present(dp, 'dialogue_teacher')
    fake_trainer.calls.clear()
    builder.ensure(dp, ['soft'])
    # the rebuilt teacher invalidates the student distilled from the old one
    assert built(fake_trainer) == ['dialogue_teacher', 'soft']
    assert all(
        builder.is_present(dp, m) for m in ('rec_teacher', 'dialogue_teacher', 'soft')
    )


def test_other_recipe_is_not_taken_as_present(tmp_path, clean_zoo_env, fake_trainer):
    dp = str(tmp_path)
    builder.ensure(dp, ['rec_teacher'], recipe='tiny')
    assert builder.is_present(dp, 'rec_teacher', 'tiny')
    assert "recipe 'tiny'" in builder.why_not_present(dp, 'rec_teacher', 'default')
    clean_zoo_env.setenv('CONKD_ZOO_RECIPE', 'tiny')
    assert builder.is_present(dp, 'rec_teacher')


def test_changed_recipe_arguments_make_the_model_stale(
    tmp_path, clean_zoo_env, fake_trainer
):
    dp = str(tmp_path)
    builder.ensure(dp, ['rec_teacher'])
    stamp_file = builder.stamp_path(builder.zoo_dir(dp), 'rec_teacher')
    stamp = json.load(open(stamp_file))
    stamp['recipe_key'] = (
        '0000000000000000'  # built by an older version of the recipe's arguments
    )
    json.dump(stamp, open(stamp_file, 'w'))
    assert 'other recipe arguments' in builder.why_not_present(dp, 'rec_teacher')
    fake_trainer.calls.clear()
    builder.ensure(dp, ['rec_teacher'])
    assert built(fake_trainer) == ['rec_teacher'] and builder.is_present(
        dp, 'rec_teacher'
    )


def test_failed_build_leaves_nothing_visible(tmp_path, clean_zoo_env, monkeypatch):
    dp = str(tmp_path)
    trainer = FakeTrainer(fail_for={'dialogue_teacher'})
    monkeypatch.setattr(builder, '_run_training', trainer)
    with pytest.raises(builder.ZooError, match='exited 1'):
        builder.ensure(dp, ['soft'])
    assert builder.is_present(dp, 'rec_teacher')  # finished before the failure: kept
    assert visible_model_files(dp, 'dialogue_teacher') == []
    assert visible_model_files(dp, 'soft') == []
    assert tmp_dirs(dp) == []


def test_interrupted_install_is_never_taken_as_done(
    tmp_path, clean_zoo_env, fake_trainer, monkeypatch
):
    """A crash between moving files in and writing the stamp: the model is absent, a rerun rebuilds."""
    dp = str(tmp_path)
    builder.ensure(dp, ['rec_teacher'])
    real_replace = os.replace
    moved = []

    zoo = builder.zoo_dir(dp)

    def crash_after_two(src, dst):
        if builder.TMP_PREFIX in src and os.path.dirname(dst) == zoo:
            if len(moved) == 2:
                raise KeyboardInterrupt('killed mid-install')
            moved.append(dst)
        return real_replace(src, dst)

    monkeypatch.setattr(builder.os, 'replace', crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        builder.ensure(dp, ['dialogue_teacher'])
    monkeypatch.setattr(builder.os, 'replace', real_replace)
    assert len(visible_model_files(dp, 'dialogue_teacher')) == 2  # half-moved, but:
    assert builder.why_not_present(dp, 'dialogue_teacher') == 'not installed'
    fake_trainer.calls.clear()
    builder.ensure(dp, ['dialogue_teacher'])
    assert built(fake_trainer) == ['dialogue_teacher']
    assert builder.is_present(dp, 'dialogue_teacher') and builder.is_present(
        dp, 'rec_teacher'
    )


def test_stale_tmp_dirs_of_killed_builds_are_removed(
    tmp_path, clean_zoo_env, fake_trainer
):
    dp = str(tmp_path)
    stale = os.path.join(dp, 'models', builder.TMP_PREFIX + 'soft-killed')
    os.makedirs(stale)
    open(os.path.join(stale, 'soft'), 'w').close()
    builder.ensure(dp, ['rec_teacher'])
    assert not os.path.exists(stale)


# ---------------------------------------------------------------------------- release route
def _release(tmp_path, http_dir, models=recipe.MODELS):
    """Build (fake) models in one datapath and serve their archive; returns (url, sha256)."""
    source = str(tmp_path / 'source')
    builder.ensure(source, list(models))
    root, base = http_dir
    sha = builder.pack(source, str(root / 'conkd_zoo.tar.gz'), models)
    return f'{base}/conkd_zoo.tar.gz', sha


@pytest.mark.parametrize('module', sorted(ZOO_MODULES))
def test_release_route_installs_from_127_0_0_1(
    module, tmp_path, clean_zoo_env, fake_trainer, http_dir
):
    url, sha = _release(tmp_path, http_dir)
    clean_zoo_env.setenv('CONKD_ZOO_URL', url)
    clean_zoo_env.setenv('CONKD_ZOO_SHA256', sha)
    fake_trainer.calls.clear()
    dp = str(tmp_path / 'user')
    importlib.import_module(f'parlai_conkd.zoo.conkd.{module}').download(dp)
    assert fake_trainer.calls == []  # nothing built locally
    for model in ZOO_MODULES[module]:
        assert builder.is_present(dp, model)
        stamp = builder.read_stamp(builder.zoo_dir(dp), model)
        assert (
            builder.weights_sha256(builder.model_file(dp, model))
            == stamp['weights_sha256']
        )
        assert stamp['source'] == url
    assert tmp_dirs(dp) == []


def test_release_checksum_mismatch_installs_nothing(
    tmp_path, clean_zoo_env, fake_trainer, http_dir
):
    url, sha = _release(tmp_path, http_dir, ['rec_teacher'])
    clean_zoo_env.setenv('CONKD_ZOO_URL', url)
    clean_zoo_env.setenv('CONKD_ZOO_SHA256', '0' * 64)
    fake_trainer.calls.clear()
    dp = str(tmp_path / 'user')
    with pytest.raises(builder.ZooError, match='checksum mismatch'):
        builder.ensure(dp, ['rec_teacher'])
    assert fake_trainer.calls == [] and visible_model_files(dp, 'rec_teacher') == []
    assert tmp_dirs(dp) == []


def test_release_http_404_names_status_url_and_local_build(
    tmp_path, clean_zoo_env, fake_trainer, http_dir, monkeypatch
):
    """UniCRS #9: a 404 answer was reported as a checksum mismatch, whatever was configured."""
    import hashlib

    import requests

    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    root, base = http_dir
    url = f'{base}/conkd_zoo.tar.gz'  # nothing there
    page = requests.get(url).content
    for sha in ('0' * 64, hashlib.sha256(page).hexdigest()):
        clean_zoo_env.setenv('CONKD_ZOO_URL', url)
        clean_zoo_env.setenv('CONKD_ZOO_SHA256', sha)
        dp = str(tmp_path / 'user')
        with pytest.raises(builder.ZooError) as info:
            builder.ensure(dp, ['rec_teacher'])
        assert str(info.value).startswith(
            f'ConKD zoo release: HTTP 404 File not found for {url}. '
            'Unset $CONKD_ZOO_URL (and $CONKD_ZOO_SHA256) to build the models locally'
        )
        assert (
            fake_trainer.calls == []
            and visible_model_files(dp, 'rec_teacher') == []
            and tmp_dirs(dp) == []
        )


def test_release_html_page_is_refused_even_with_its_checksum(
    tmp_path, clean_zoo_env, fake_trainer, http_dir, monkeypatch
):
    import hashlib

    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    root, base = http_dir
    page = b'<!DOCTYPE html><html><body>Sign in</body></html>'
    (root / 'conkd_zoo.html').write_bytes(page)
    clean_zoo_env.setenv('CONKD_ZOO_URL', f'{base}/conkd_zoo.html')
    clean_zoo_env.setenv('CONKD_ZOO_SHA256', hashlib.sha256(page).hexdigest())
    dp = str(tmp_path / 'user')
    with pytest.raises(builder.ZooError) as info:
        builder.ensure(dp, ['rec_teacher'])
    message = str(info.value)
    assert f'{base}/conkd_zoo.html did not send the expected tar archive' in message
    assert 'Content-Type text/html' in message and 'Unset $CONKD_ZOO_URL' in message
    assert (
        fake_trainer.calls == []
        and visible_model_files(dp, 'rec_teacher') == []
        and tmp_dirs(dp) == []
    )


def test_release_url_without_checksum_is_refused(tmp_path, clean_zoo_env, fake_trainer):
    clean_zoo_env.setenv('CONKD_ZOO_URL', 'http://127.0.0.1:9/conkd_zoo.tar.gz')
    with pytest.raises(builder.ZooError, match='CONKD_ZOO_SHA256'):
        builder.ensure(str(tmp_path), ['rec_teacher'])


def test_release_of_another_version_is_refused(
    tmp_path, clean_zoo_env, fake_trainer, http_dir, monkeypatch
):
    monkeypatch.setattr(recipe, 'ZOO_VERSION', 'v0')
    url, sha = _release(tmp_path, http_dir, ['rec_teacher'])
    monkeypatch.setattr(recipe, 'ZOO_VERSION', 'v1')
    clean_zoo_env.setenv('CONKD_ZOO_URL', url)
    clean_zoo_env.setenv('CONKD_ZOO_SHA256', sha)
    dp = str(tmp_path / 'user')
    with pytest.raises(builder.ZooError, match='zoo version v0'):
        builder.ensure(dp, ['rec_teacher'])
    assert visible_model_files(dp, 'rec_teacher') == []


def test_recipe_commands_cover_every_model_in_build_order():
    lines = recipe.commands('data', 'data/models/conkd')
    assert [line.split(' -mf ')[1].split()[0] for line in lines] == [
        f'data/models/conkd/{m}' for m in recipe.MODELS
    ]
    soft = lines[recipe.MODELS.index('soft')]
    assert (
        '--gate soft' in soft
        and '--rec-teacher-file data/models/conkd/rec_teacher' in soft
    )
    assert '--use-kg false' in recipe.commands(use_kg=False)[0]
    assert recipe.recipe_key('soft', True) != recipe.recipe_key('soft', True, 'tiny')
    with pytest.raises(ValueError, match='unknown zoo recipe'):
        recipe.recipe_name('huge')


def test_zoo_models_env_limits_what_build_makes_present(
    tmp_path, clean_zoo_env, fake_trainer
):
    from parlai_conkd.zoo.conkd import build

    clean_zoo_env.setenv('CONKD_ZOO_MODELS', 'soft')
    build.download(str(tmp_path))
    assert built(fake_trainer) == ['rec_teacher', 'dialogue_teacher', 'soft']
    clean_zoo_env.setenv('CONKD_ZOO_MODELS', 'soft,large')
    with pytest.raises(
        builder.ZooError, match=r'CONKD_ZOO_MODELS: no such ConKD zoo model'
    ):
        build.download(str(tmp_path))


def test_each_zoo_name_makes_present_only_what_that_model_needs(
    tmp_path, clean_zoo_env, fake_trainer
):
    """ParlAI resolves every zoo:conkd/X through conkd.build; the name asked for decides (#22)."""
    from parlai.core.build_data import modelzoo_path

    modelzoo_path(str(tmp_path), 'zoo:conkd/dialogue_teacher')
    assert built(fake_trainer) == ['rec_teacher', 'dialogue_teacher']
    # a file beside a present model
    modelzoo_path(str(tmp_path), 'zoo:conkd/rec_teacher.opt')
    assert built(fake_trainer) == ['rec_teacher', 'dialogue_teacher']
    modelzoo_path(str(tmp_path), 'zoo:conkd/hard')
    assert built(fake_trainer) == ['rec_teacher', 'dialogue_teacher', 'hard']
    with pytest.raises(
        builder.ZooError, match=r'zoo:conkd/sfot: no such ConKD zoo model'
    ):
        modelzoo_path(str(tmp_path), 'zoo:conkd/sfot')


def test_a_damaged_zoo_file_is_rebuilt_not_loaded(
    tmp_path, clean_zoo_env, fake_trainer
):
    dp = str(tmp_path)
    builder.ensure(dp, ['rec_teacher'])
    stamp = builder.read_stamp(builder.zoo_dir(dp), 'rec_teacher')
    assert set(stamp['sha256']) == set(stamp['files'])
    target = builder.model_file(dp, 'rec_teacher')
    with open(target, 'r+b') as f:  # one byte changed, size and form kept
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    assert 'does not match the sha256' in builder.why_not_present(dp, 'rec_teacher')
    builder.ensure(dp, ['rec_teacher'])
    assert built(fake_trainer) == ['rec_teacher', 'rec_teacher']
    assert builder.is_present(dp, 'rec_teacher')
