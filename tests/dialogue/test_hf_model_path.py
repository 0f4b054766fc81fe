"""``--hf-model-path``: a local directory, or a hub name (issue #17). No test here touches the network:
every hub look-up runs with the offline switch on, against an empty or a pre-filled local cache."""
import os
import shutil

import pytest

from parlai_conkd.agents.conkd_dialogue_teacher import hf_model
from parlai_conkd.agents.conkd_dialogue_teacher.hf_model import HFModelPathError, resolve_hf_model_path
from tests.conftest import run_parlai

COMMIT = '0123456789abcdef0123456789abcdef01234567'


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test, offline; ``fill(repo_id, model_dir)`` caches a model
    the way ``snapshot_download`` leaves it (refs/main -> snapshots/<commit>/files)."""
    from huggingface_hub import constants

    cache = tmp_path / 'hf-cache'
    cache.mkdir()
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))  # read at import; patch the live value
    monkeypatch.setenv('HF_HUB_CACHE', str(cache))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    hf_model._hub_snapshot.cache_clear()

    def fill(repo_id, model_dir):
        storage = cache / ('models--' + repo_id.replace('/', '--'))
        (storage / 'refs').mkdir(parents=True)
        (storage / 'refs' / 'main').write_text(COMMIT)
        shutil.copytree(model_dir, storage / 'snapshots' / COMMIT)
        return storage / 'snapshots' / COMMIT

    yield fill
    hf_model._hub_snapshot.cache_clear()


def test_a_local_directory_is_used_as_it_is(tmp_path):
    assert resolve_hf_model_path(str(tmp_path)) == str(tmp_path)


@pytest.mark.parametrize('value', ['./no-such-dir', '/no/such/dir', 'a/b/c'])
def test_a_path_that_is_no_directory_is_refused_without_a_hub_look_up(value, hub_cache, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, 'snapshot_download', lambda *a, **k: pytest.fail('asked the hub'))
    with pytest.raises(HFModelPathError, match=f'--hf-model-path {value!r}: not a directory'):
        resolve_hf_model_path(value)


def test_no_value_names_the_option():
    with pytest.raises(HFModelPathError, match='--backbone hf needs --hf-model-path'):
        resolve_hf_model_path(None)


def test_offline_a_hub_name_that_is_not_cached_fails_naming_the_option_and_the_fix(hub_cache):
    with pytest.raises(HFModelPathError) as error:
        resolve_hf_model_path('microsoft/DialoGPT-small')
    message = str(error.value)
    assert message.startswith('--hf-model-path microsoft/DialoGPT-small: ')
    assert 'offline mode is on' in message and 'Pass a local directory instead' in message


def test_a_hub_that_cannot_be_reached_gives_the_same_advice(monkeypatch):
    """Online but without a network: huggingface_hub raises LocalEntryNotFoundError (a subclass of
    OSError) after its failed look-up; stood in for here so that nothing goes to the network."""
    import huggingface_hub

    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.delenv('TRANSFORMERS_OFFLINE', raising=False)
    calls = []

    def unreachable(repo_id, **kwargs):
        calls.append(kwargs)
        raise huggingface_hub.errors.LocalEntryNotFoundError('Got: ConnectError: Name or service not known')

    monkeypatch.setattr(huggingface_hub, 'snapshot_download', unreachable)
    hf_model._hub_snapshot.cache_clear()
    with pytest.raises(HFModelPathError, match='could not be fetched from the hub .LocalEntryNotFoundError.'):
        resolve_hf_model_path('microsoft/DialoGPT-small')
    assert calls[0]['local_files_only'] is False and 'config.json' in calls[0]['allow_patterns']
    hf_model._hub_snapshot.cache_clear()


def test_a_cached_hub_name_builds_the_hf_agent_offline(hub_cache, tiny_gpt2_dir, tiny_catalog_file, tmp_path,
                                                        make_dialogue_agent):
    snapshot = hub_cache('someorg/tiny-gpt2', tiny_gpt2_dir)
    assert resolve_hf_model_path('someorg/tiny-gpt2') == str(snapshot)
    agent = make_dialogue_agent(tiny_catalog_file, tmp_path, backbone='hf', hf_dir='someorg/tiny-gpt2')
    assert agent.opt['model_name'] == str(snapshot)
    assert agent.dict.hf_tokenizer.name_or_path == str(snapshot)


@pytest.mark.cli
def test_train_model_with_an_uncached_hub_name_offline_stops_at_once_with_the_advice(tmp_path, shared_redial):
    """The user's command line: no network attempt (HF_HUB_OFFLINE=1); the subprocess timeout only
    guards against a hang, it is not a speed assertion."""
    env = {'HF_HUB_OFFLINE': '1', 'HF_HOME': str(tmp_path / 'hf-home'), 'HF_HUB_CACHE': str(tmp_path / 'hf-cache'),
           'CONKD_REDIAL_PATH': str(shared_redial), 'OMP_NUM_THREADS': '1'}
    proc = run_parlai(['train_model', '-t', 'redial_crs', '-m', 'conkd_dialogue_teacher', '--backbone', 'hf',
                       '--hf-model-path', 'microsoft/DialoGPT-small', '-mf', tmp_path / 'model',
                       '-dp', tmp_path / 'data', '--redial-max-dialogues', 4, '--max-train-steps', 1],
                      env=env, check=False, timeout=240)
    assert proc.returncode != 0
    assert 'HFModelPathError: --hf-model-path microsoft/DialoGPT-small: ' in proc.stderr
    assert 'Pass a local directory instead: --hf-model-path /path/to/model' in proc.stderr
    assert not os.path.exists(tmp_path / 'model')
