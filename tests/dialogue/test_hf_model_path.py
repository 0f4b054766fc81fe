"""``--hf-model-path``: a local directory, or a hub name (issue #17). No test here touches the network:
every hub look-up runs with the offline switch on, against an empty or a pre-filled local cache.
"""

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.parse

import pytest

from parlai_conkd.agents.conkd_dialogue_teacher import hf_model
from parlai_conkd.agents.conkd_dialogue_teacher.hf_model import (
    HFModelPathError,
    resolve_hf_model_path,
)
from tests.support import eval_report, run_parlai

COMMIT = '0123456789abcdef0123456789abcdef01234567'


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache for this test, offline; ``fill(repo_id, model_dir)`` caches a model
    the way ``snapshot_download`` leaves it (refs/main -> snapshots/<commit>/files)."""
    from huggingface_hub import constants

    cache = tmp_path / 'hf-cache'
    cache.mkdir()
    # read at import; patch the live value
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(cache))
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
def test_a_path_that_is_no_directory_is_refused_without_a_hub_look_up(
    value, hub_cache, monkeypatch
):
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub,
        'snapshot_download',
        lambda *a, **k: pytest.fail('asked the hub'),
    )
    with pytest.raises(
        HFModelPathError, match=f'--hf-model-path {value!r}: not a directory'
    ):
        resolve_hf_model_path(value)


def test_no_value_names_the_option():
    with pytest.raises(HFModelPathError, match='--backbone hf needs --hf-model-path'):
        resolve_hf_model_path(None)


def test_offline_a_hub_name_that_is_not_cached_fails_naming_the_option_and_the_fix(
    hub_cache,
):
    with pytest.raises(HFModelPathError) as error:
        resolve_hf_model_path('microsoft/DialoGPT-small')
    message = str(error.value)
    assert message.startswith('--hf-model-path microsoft/DialoGPT-small: ')
    assert (
        'offline mode is on' in message and 'Pass a local directory instead' in message
    )


def test_a_hub_that_cannot_be_reached_gives_the_same_advice(monkeypatch):
    """Online but without a network: huggingface_hub raises LocalEntryNotFoundError (a subclass of
    OSError) after its failed look-up; stood in for here so that nothing goes to the network.
    """
    import huggingface_hub

    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    monkeypatch.delenv('TRANSFORMERS_OFFLINE', raising=False)
    calls = []

    def unreachable(repo_id, **kwargs):
        calls.append(kwargs)
        raise huggingface_hub.errors.LocalEntryNotFoundError(
            'Got: ConnectError: Name or service not known'
        )

    monkeypatch.setattr(huggingface_hub, 'snapshot_download', unreachable)
    hf_model._hub_snapshot.cache_clear()
    with pytest.raises(
        HFModelPathError,
        match='could not be fetched from the hub .LocalEntryNotFoundError.',
    ):
        resolve_hf_model_path('microsoft/DialoGPT-small')
    assert (
        calls[0]['local_files_only'] is False
        and 'config.json' in calls[0]['allow_patterns']
    )
    hf_model._hub_snapshot.cache_clear()


def test_a_cached_hub_name_builds_the_hf_agent_offline(
    hub_cache, tiny_gpt2_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    snapshot = hub_cache('someorg/tiny-gpt2', tiny_gpt2_dir)
    assert resolve_hf_model_path('someorg/tiny-gpt2') == str(snapshot)
    agent = make_dialogue_agent(
        tiny_catalog_file, tmp_path, backbone='hf', hf_dir='someorg/tiny-gpt2'
    )
    assert agent.model.lm.name_or_path == str(snapshot)
    assert agent.dict.hf_tokenizer.name_or_path == str(snapshot)


@pytest.mark.cli
def test_train_model_with_an_uncached_hub_name_offline_stops_at_once_with_the_advice(
    tmp_path, shared_redial
):
    """The user's command line: no network attempt (HF_HUB_OFFLINE=1); the subprocess timeout only
    guards against a hang, it is not a speed assertion."""
    env = {
        'HF_HUB_OFFLINE': '1',
        'HF_HOME': str(tmp_path / 'hf-home'),
        'HF_HUB_CACHE': str(tmp_path / 'hf-cache'),
        'CONKD_REDIAL_PATH': str(shared_redial),
        'OMP_NUM_THREADS': '1',
    }
    proc = run_parlai(
        [
            'train_model',
            '-t',
            'redial_crs',
            '-m',
            'conkd_dialogue_teacher',
            '--backbone',
            'hf',
            '--hf-model-path',
            'microsoft/DialoGPT-small',
            '-mf',
            tmp_path / 'model',
            '-dp',
            tmp_path / 'data',
            '--redial-max-dialogues',
            4,
            '--max-train-steps',
            1,
        ],
        env=env,
        check=False,
        timeout=240,
    )
    assert proc.returncode != 0
    assert 'HFModelPathError: --hf-model-path microsoft/DialoGPT-small: ' in proc.stderr
    assert (
        'Pass a local directory instead: --hf-model-path /path/to/model' in proc.stderr
    )
    assert not os.path.exists(tmp_path / 'model')


# --------------------------------------------------------------------------- online: a hub on 127.0.0.1
class _FakeHub(http.server.BaseHTTPRequestHandler):
    """The three hub routes ``snapshot_download`` uses: revision info, the file tree, file resolution."""

    repo, commit, files, seen = 'someorg/tiny-gpt2', 'a' * 40, {}, []

    def log_message(self, *args):
        pass

    def _reply(self, code, body=b'', headers=()):
        self.send_response(code)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(body)

    def do_GET(self):
        path = urllib.parse.urlparse(self.path).path
        self.seen.append((self.command, path))
        as_json = [('Content-Type', 'application/json')]
        if path in (
            f'/api/models/{self.repo}/revision/main',
            f'/api/models/{self.repo}/revision/{self.commit}',
        ):
            info = {
                'id': self.repo,
                'sha': self.commit,
                'siblings': [{'rfilename': f} for f in self.files],
            }
            return self._reply(200, json.dumps(info).encode(), as_json)
        if path.startswith(f'/api/models/{self.repo}/tree/'):
            tree = [
                {
                    'type': 'file',
                    'path': name,
                    'size': len(data),
                    'oid': hashlib.sha1(data).hexdigest(),
                }
                for name, data in self.files.items()
            ]
            return self._reply(200, json.dumps(tree).encode(), as_json)
        prefix = f'/{self.repo}/resolve/'
        if (
            path.startswith(prefix)
            and path[len(prefix) :].split('/', 1)[1] in self.files
        ):
            data = self.files[path[len(prefix) :].split('/', 1)[1]]
            return self._reply(
                200,
                data,
                [
                    ('X-Repo-Commit', self.commit),
                    ('ETag', f'"{hashlib.sha1(data).hexdigest()}"'),
                ],
            )
        return self._reply(404, b'{}', [('X-Error-Code', 'EntryNotFound')])

    do_HEAD = do_GET


@pytest.fixture
def local_hub(tiny_gpt2_dir):
    files = {
        name: open(os.path.join(tiny_gpt2_dir, name), 'rb').read()
        for name in os.listdir(tiny_gpt2_dir)
        if os.path.isfile(os.path.join(tiny_gpt2_dir, name))
    }
    files['tf_model.h5'] = b'TensorFlow weights: never fetched'
    handler = type('Hub', (_FakeHub,), {'files': files, 'seen': []})
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{server.server_address[1]}', handler
    server.shutdown()


def test_online_a_hub_name_is_fetched_into_the_cache_then_builds_the_agent_offline(
    tmp_path, local_hub, hub_cache, tiny_catalog_file, make_dialogue_agent
):
    """Online (the hub served from 127.0.0.1; huggingface_hub reads its endpoint at import, hence a
    fresh interpreter) the name is fetched into the cache; offline the agent is then built from it.
    """
    from huggingface_hub import constants

    endpoint, hub = local_hub
    code = (
        'from parlai_conkd.agents.conkd_dialogue_teacher.hf_model import resolve_hf_model_path; '
        'print(resolve_hf_model_path("someorg/tiny-gpt2"))'
    )
    env = {
        **os.environ,
        'HF_ENDPOINT': endpoint,
        'HF_HUB_CACHE': constants.HF_HUB_CACHE,
        'HF_HUB_OFFLINE': '0',
        'HF_HOME': str(tmp_path / 'hf-home'),
        'HF_HUB_DISABLE_TELEMETRY': '1',
    }
    proc = subprocess.run(
        [sys.executable, '-c', code],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    directory = proc.stdout.strip().splitlines()[-1]
    assert directory.endswith(
        os.path.join('models--someorg--tiny-gpt2', 'snapshots', _FakeHub.commit)
    )
    fetched = {
        path.rsplit('/', 1)[1]
        for method, path in hub.seen
        if method == 'GET' and '/resolve/' in path
    }
    assert {'config.json', 'model.safetensors', 'vocab.json', 'merges.txt'} <= fetched
    # only what a PyTorch GPT-2 and its tokenizer need
    assert 'tf_model.h5' not in fetched
    hub.seen.clear()
    # offline
    agent = make_dialogue_agent(
        tiny_catalog_file, tmp_path, backbone='hf', hf_dir='someorg/tiny-gpt2'
    )
    assert agent.model.lm.name_or_path == directory and hub.seen == []


@pytest.mark.cli
@pytest.mark.slow  # two HF command lines: minutes on a busy 2-core machine
def test_online_a_hub_name_is_fetched_once_and_then_loads_offline(
    tmp_path, local_hub, shared_redial
):
    """train_model with a hub name on an 'online' machine (the hub served from 127.0.0.1), then
    eval_model of the saved model offline: the cached snapshot is reused, nothing is fetched again.
    """
    endpoint, hub = local_hub
    cache = tmp_path / 'hf-cache'
    env = {
        'HF_ENDPOINT': endpoint,
        'HF_HUB_CACHE': str(cache),
        'HF_HOME': str(tmp_path / 'hf-home'),
        'HF_HUB_OFFLINE': '0',
        'HF_HUB_DISABLE_TELEMETRY': '1',
        'CONKD_REDIAL_PATH': str(shared_redial),
        'OMP_NUM_THREADS': '1',
    }
    common = [
        '-t',
        'redial_crs',
        '-dp',
        tmp_path / 'data',
        '--redial-max-dialogues',
        3,
        '--truncate',
        64,
        '--text-truncate',
        48,
        '--label-truncate',
        12,
    ]
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_dialogue_teacher',
            '--backbone',
            'hf',
            '--hf-model-path',
            'someorg/tiny-gpt2',
            '-mf',
            tmp_path / 'model',
            '-bs',
            4,
            '--max-train-steps',
            2,
            '--skip-generation',
            'true',
            '-vme',
            4,
            *common,
        ],
        env=env,
    )
    fetched = {
        path.rsplit('/', 1)[1]
        for method, path in hub.seen
        if method == 'GET' and '/resolve/' in path
    }
    assert {'config.json', 'model.safetensors', 'vocab.json', 'merges.txt'} <= fetched
    # only what a PyTorch GPT-2 and its tokenizer need
    assert 'tf_model.h5' not in fetched
    snapshot = cache / 'models--someorg--tiny-gpt2' / 'snapshots' / _FakeHub.commit
    assert (snapshot / 'config.json').is_file()
    with open(tmp_path / 'model.opt', encoding='utf-8') as f:
        # the option as given
        assert json.load(f)['hf_model_path'] == 'someorg/tiny-gpt2'
    hub.seen.clear()
    evaluated = eval_report(
        [
            '-mf',
            tmp_path / 'model',
            '--num-examples',
            4,
            '--skip-generation',
            'true',
            *common,
        ],
        tmp_path / 'eval.json',
        env={**env, 'HF_HUB_OFFLINE': '1'},
    )
    assert evaluated['exs'] == 4 and evaluated['ppl'] > 1
    assert hub.seen == []
