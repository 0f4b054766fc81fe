"""Zoo test helpers: a fake trainer (fast route tests), a local release server, the tiny recipe."""

import functools
import http.server
import json
import os
import threading

import pytest
import torch

from parlai_conkd.zoo.conkd import builder

ZOO_ENV = ('CONKD_ZOO_URL', 'CONKD_ZOO_SHA256', 'CONKD_ZOO_RECIPE', 'CONKD_ZOO_MODELS')


@pytest.fixture
def clean_zoo_env(monkeypatch):
    for name in ZOO_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


class FakeTrainer:
    """Stands in for ``parlai train_model``: writes what ParlAI writes, records the calls."""

    def __init__(self, fail_for=()):
        self.calls = []
        self.fail_for = set(fail_for)

    def __call__(self, args, log_path, desc, epochs, threads=None):
        model_file = args[args.index('-mf') + 1]
        name = os.path.basename(model_file)
        self.calls.append((name, list(args)))
        opt = {
            'model_file': model_file,
            'dict_file': model_file + '.dict',
            'override': {'model_file': model_file},
        }
        for flag in ('--dialogue-teacher-file', '--rec-teacher-file', '--init-model'):
            if flag in args:
                opt[flag.lstrip('-').replace('-', '_')] = args[args.index(flag) + 1]
        torch.save({'model': {'weights': torch.tensor([float(len(name))])}}, model_file)
        for suffix, text in (
            ('.dict', 'a 1\n'),
            ('.checkpoint', 'ckpt'),
            ('.trainstats', '{}'),
        ):
            with open(model_file + suffix, 'w') as f:
                f.write(text)
        with open(log_path, 'w') as f:
            f.write('fake training log\n')
        if name in self.fail_for:  # dies after writing part of its output
            raise builder.ZooError(f'{desc}: parlai train_model exited 1')
        with open(model_file + '.opt', 'w') as f:
            json.dump(opt, f)


@pytest.fixture
def fake_trainer(monkeypatch):
    trainer = FakeTrainer()
    monkeypatch.setattr(builder, '_run_training', trainer)
    return trainer


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_dir(tmp_path):
    """Serves a directory on 127.0.0.1; yields (directory, base URL)."""
    root = tmp_path / 'www'
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def visible_model_files(datapath, model):
    return builder.model_files(builder.zoo_dir(str(datapath)), model)


def tmp_dirs(datapath):
    models = os.path.join(str(datapath), 'models')
    return (
        [n for n in os.listdir(models) if n.startswith(builder.TMP_PREFIX)]
        if os.path.isdir(models)
        else []
    )
