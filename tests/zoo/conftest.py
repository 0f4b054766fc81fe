"""Zoo fixtures: a clean zoo environment, a fake trainer (fast route tests), a local release server
(the helpers: tests/support.py)."""

import functools
import http.server
import threading

import pytest

from parlai_conkd.zoo.conkd import builder
from tests.support import ZOO_ENV, FakeTrainer, QuietHandler


@pytest.fixture
def clean_zoo_env(monkeypatch):
    for name in ZOO_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def fake_trainer(monkeypatch):
    trainer = FakeTrainer()
    monkeypatch.setattr(builder, '_run_training', trainer)
    return trainer


@pytest.fixture
def http_dir(tmp_path):
    """Serves a directory on 127.0.0.1; yields (directory, base URL)."""
    root = tmp_path / 'www'
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()
