"""parlai_conkd.downloads against a local HTTP server on 127.0.0.1: what is kept, what is refused."""

import hashlib
import io
import os
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from parlai_conkd import downloads
from parlai_conkd.downloads import TAR, ZIP, DownloadError, fetch_archive

HINT = 'Offline: pass --local-copy.'
HTML = b'<!DOCTYPE html><html><body><h1>Not Found</h1></body></html>\n'


def _zip_bytes(members=('a.txt',)):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as archive:
        for name in members:
            archive.writestr(name, 'hello ' * 50)
    return buffer.getvalue()


def _tar_bytes():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode='w:gz') as archive:
        data = b'weights' * 100
        info = tarfile.TarInfo('model')
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Site:
    """Routes: /ok.zip, /ok.tar.gz, /login (HTML, 200), /missing (404), /flaky (503 then the zip),
    /down (always 503), /cut.zip (announces more bytes than it sends)."""

    def __init__(self):
        self.zip, self.tar = _zip_bytes(), _tar_bytes()
        self.hits = {}
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body, content_type, length=None):
                self.send_response(status)
                self.send_header('Content-Type', content_type)
                self.send_header(
                    'Content-Length', str(len(body) if length is None else length)
                )
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                site.hits[self.path] = site.hits.get(self.path, 0) + 1
                if self.path == '/ok.zip':
                    return self._send(200, site.zip, 'application/zip')
                if self.path == '/ok.tar.gz':
                    return self._send(200, site.tar, 'application/gzip')
                if self.path == '/login':
                    return self._send(200, HTML, 'text/html; charset=utf-8')
                if self.path == '/flaky' and site.hits[self.path] == 1:
                    return self._send(503, b'busy', 'text/plain')
                if self.path == '/flaky':
                    return self._send(200, site.zip, 'application/zip')
                if self.path == '/down':
                    return self._send(503, b'busy', 'text/plain')
                if self.path == '/cut.zip':
                    return self._send(
                        200, site.zip[:100], 'application/zip', length=len(site.zip)
                    )
                return self._send(404, HTML, 'text/html; charset=utf-8')

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.base = f'http://127.0.0.1:{self.server.server_address[1]}'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def site(monkeypatch):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    # retries without waiting
    monkeypatch.setattr(downloads.time, 'sleep', lambda s: None)
    served = Site()
    yield served
    served.server.shutdown()
    served.server.server_close()


def test_valid_archives_are_stored_with_the_usual_mode(site, tmp_path):
    dest = tmp_path / 'cache' / 'a.zip'
    assert fetch_archive(
        f'{site.base}/ok.zip', str(dest), sha(site.zip), ZIP, HINT
    ) == str(dest)
    assert dest.read_bytes() == site.zip
    umask = os.umask(0)
    os.umask(umask)
    assert dest.stat().st_mode & 0o777 == 0o666 & ~umask
    fetch_archive(
        f'{site.base}/ok.tar.gz', str(tmp_path / 'm.tar.gz'), sha(site.tar), TAR, HINT
    )
    assert os.listdir(tmp_path / 'cache') == ['a.zip']  # no temporary file left


def test_http_error_names_status_url_and_offline_route(site, tmp_path):
    dest = tmp_path / 'a.zip'
    with pytest.raises(DownloadError) as info:
        # even with the page's checksum
        fetch_archive(f'{site.base}/missing', str(dest), sha(HTML), ZIP, HINT)
    assert str(info.value) == f'HTTP 404 Not Found for {site.base}/missing. {HINT}'
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('kind', [ZIP, TAR])
def test_html_page_is_never_stored_even_with_its_own_checksum(site, tmp_path, kind):
    with pytest.raises(DownloadError) as info:
        fetch_archive(f'{site.base}/login', str(tmp_path / 'a'), sha(HTML), kind, HINT)
    message = str(info.value)
    assert message.startswith(
        f'{site.base}/login did not send the expected {kind} archive'
    )
    assert (
        f"Content-Type text/html; charset=utf-8, {len(HTML)} bytes starting '<!DOCTYPE html>"
        in message
    )
    assert message.endswith(f'nothing was kept. {HINT}') and os.listdir(tmp_path) == []


def test_checksum_mismatch_of_a_valid_archive(site, tmp_path):
    with pytest.raises(DownloadError) as info:
        fetch_archive(
            f'{site.base}/ok.zip', str(tmp_path / 'a.zip'), '0' * 64, ZIP, HINT
        )
    assert f'checksum mismatch for {site.base}/ok.zip' in str(info.value)
    assert sha(site.zip) in str(info.value) and os.listdir(tmp_path) == []


def test_caller_check_refuses_an_archive_without_what_it_needs(site, tmp_path):
    with pytest.raises(DownloadError, match='a zip without b.txt'):
        fetch_archive(
            f'{site.base}/ok.zip',
            str(tmp_path / 'a.zip'),
            sha(site.zip),
            ZIP,
            HINT,
            check=lambda path: 'a zip without b.txt',
        )
    assert os.listdir(tmp_path) == []


def test_server_errors_are_retried_then_reported(site, tmp_path):
    fetch_archive(
        f'{site.base}/flaky', str(tmp_path / 'a.zip'), sha(site.zip), ZIP, HINT
    )
    assert site.hits['/flaky'] == 2
    with pytest.raises(DownloadError) as info:
        fetch_archive(
            f'{site.base}/down', str(tmp_path / 'b.zip'), sha(site.zip), ZIP, HINT
        )
    assert (
        str(info.value)
        == f'HTTP 503 Service Unavailable for {site.base}/down (tried 3 times). {HINT}'
    )
    assert site.hits['/down'] == 3


def test_cut_download_is_not_an_archive(site, tmp_path):
    with pytest.raises(DownloadError) as info:
        fetch_archive(
            f'{site.base}/cut.zip', str(tmp_path / 'a.zip'), sha(site.zip), ZIP, HINT
        )
    assert f'could not download {site.base}/cut.zip' in str(info.value)
    assert f'100 bytes read, {len(site.zip) - 100} more expected' in str(info.value)
    assert (
        str(info.value).endswith(f'(tried 3 times). {HINT}')
        and site.hits['/cut.zip'] == 3
    )
    assert os.listdir(tmp_path) == []


def test_refused_connection_names_the_url(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr(downloads.time, 'sleep', lambda s: None)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError) as info:
        fetch_archive(
            f'http://127.0.0.1:{port}/a.zip',
            str(tmp_path / 'a.zip'),
            '0' * 64,
            ZIP,
            HINT,
        )
    assert str(info.value).startswith(
        f'could not download http://127.0.0.1:{port}/a.zip (ConnectionError'
    )
    assert str(info.value).endswith(f'(tried 3 times). {HINT}')


def test_archive_problem_on_damaged_files(tmp_path):
    good = tmp_path / 'good.zip'
    good.write_bytes(_zip_bytes())
    assert downloads.archive_problem(str(good), ZIP) is None
    damaged = bytearray(good.read_bytes())
    damaged[40] ^= 0xFF  # inside the member's compressed data: CRC fails
    (tmp_path / 'bad.zip').write_bytes(bytes(damaged))
    assert 'damaged zip archive' in downloads.archive_problem(
        str(tmp_path / 'bad.zip'), ZIP
    )
    (tmp_path / 'cut.tar.gz').write_bytes(_tar_bytes()[:-20])
    assert downloads.archive_problem(str(tmp_path / 'cut.tar.gz'), TAR).startswith(
        'not a readable tar archive'
    )
