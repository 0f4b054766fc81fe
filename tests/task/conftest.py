"""Fixtures of the task tests: a tiny ReDial copy in the official layout per test, the same copy served
as the official archive (the copies themselves: tests/support.py)."""

import functools
import hashlib
import http.server
import threading

import pytest

from tests.support import QuietHandler, write_redial, zip_redial


@pytest.fixture
def tiny_redial(tmp_path):
    return write_redial(tmp_path / 'redial')


@pytest.fixture
def no_redial_env(monkeypatch):
    """Tests must not pick up a developer's CONKD_REDIAL_PATH / CONKD_REDIAL_META_PATH."""
    monkeypatch.delenv('CONKD_REDIAL_PATH', raising=False)
    monkeypatch.delenv('CONKD_REDIAL_META_PATH', raising=False)


@pytest.fixture
def served_archive(tmp_path, tiny_redial):
    """The tiny copy zipped in the official layout, served over HTTP on 127.0.0.1."""
    served = tmp_path / 'www'
    served.mkdir()
    archive = zip_redial(tiny_redial, served / 'redial_dataset.zip')
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f'http://127.0.0.1:{server.server_address[1]}/redial_dataset.zip'
    yield url, hashlib.sha256(archive.read_bytes()).hexdigest()
    server.shutdown()
    server.server_close()
