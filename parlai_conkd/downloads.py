"""Download an archive and store it only once it is verified: HTTP status, sha256, and archive form.

ParlAI's ``build_data.download`` writes whatever the server answers, so a 404 page became
"checksum mismatch", and passing that page's checksum stored it as the verified archive
(CRSLab #11, UniCRS #8/#9). :func:`fetch_archive` checks, in order, before anything is kept:

1. the HTTP status (an error names the status, the URL and the caller's offline route);
2. a complete body (requests enforces ``Content-Length``; a cut connection is retried);
3. the archive form: a zip whose members pass their CRC check, or a tar (any compression)
   readable to its end, plus the caller's ``check`` (e.g. the members it needs); an HTML page
   or anything else is refused whatever its checksum;
4. the sha256.

Only then is the file renamed to ``dest`` (same directory, atomic). Used by the ReDial task
(``--redial-url``) and the zoo's release route (``$CONKD_ZOO_URL``).
"""

import hashlib
import os
import tarfile
import time
import zipfile
from typing import Callable, Optional

from parlai_conkd.fileio import atomic_path

ZIP, TAR = 'zip', 'tar'
#: connection errors and 5xx answers are retried this many times in all, after 1 s, 2 s, ...
ATTEMPTS = 3
CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download that was not stored; the message names the URL, what went wrong and what to do."""


def _describe(path: str, content_type: Optional[str]) -> str:
    with open(path, 'rb') as f:
        head = f.read(48)
    size = os.path.getsize(path)
    shown = head.decode('utf-8', 'replace').replace('\n', ' ').strip()
    kind = f'Content-Type {content_type}, ' if content_type else ''
    return f'{kind}{size} bytes starting {shown!r}'


def archive_problem(path: str, kind: str) -> Optional[str]:
    """Why ``path`` is not a readable ``kind`` archive, or None when it is."""
    if kind == ZIP:
        if not zipfile.is_zipfile(path):
            return 'not a zip archive'
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            return f'a damaged zip archive ({exc})'
        return (
            f'a damaged zip archive (member {bad} fails its CRC check)' if bad else None
        )
    if kind == TAR:
        try:
            with tarfile.open(path, 'r:*') as archive:
                for (
                    _
                    # reads (and decompresses) to the end: a cut file fails here
                ) in archive:
                    pass
        except (tarfile.TarError, OSError, EOFError) as exc:
            return f'not a readable tar archive ({exc})'
        return None
    raise ValueError(f'unknown archive kind {kind!r}')


class _Retry(Exception):
    def __init__(self, error: DownloadError):
        super().__init__(str(error))
        self.error = error


def _stream(url: str, tmp: str, timeout: float):
    """GET ``url`` into ``tmp``; returns (sha256, content type). Raises DownloadError, or
    ``_Retry`` for what may pass on a second try (connection errors, 5xx, a cut body).
    """
    import requests

    try:
        with requests.get(url, stream=True, timeout=timeout) as response:
            if response.status_code >= 400:
                error = DownloadError(
                    f'HTTP {response.status_code} {response.reason or ""}'.strip()
                    + f' for {url}'
                )
                if response.status_code >= 500:
                    raise _Retry(error)
                raise error
            digest = hashlib.sha256()
            with open(tmp, 'wb') as out:
                # raises when Content-Length is not met
                for block in response.iter_content(CHUNK):
                    out.write(block)
                    digest.update(block)
            content_type = response.headers.get('Content-Type')
    except (
        requests.ConnectionError,
        requests.Timeout,
        requests.exceptions.ChunkedEncodingError,
    ) as exc:
        raise _Retry(
            DownloadError(f'could not download {url} ({type(exc).__name__}: {exc})')
        ) from exc
    except requests.RequestException as exc:
        raise DownloadError(
            f'could not download {url} ({type(exc).__name__}: {exc})'
        ) from exc
    return digest.hexdigest(), content_type


def fetch_archive(
    url: str,
    dest: str,
    sha256: str,
    kind: str,
    offline_hint: str,
    check: Optional[Callable[[str], Optional[str]]] = None,
    timeout: float = 60.0,
    attempts: int = ATTEMPTS,
) -> str:
    """Download ``url`` to ``dest`` if and only if it is a ``kind`` archive with this ``sha256``.

    ``kind``: :data:`ZIP` or :data:`TAR`. ``check(path)`` may return a reason to refuse a valid
    archive (e.g. a missing member). ``offline_hint`` ends every error message: how to do without
    this download. Returns ``dest``; on any failure nothing is left behind and DownloadError says
    why (HTTP status, truncation, not an archive, checksum mismatch).
    """
    with atomic_path(dest) as tmp:
        for attempt in range(1, attempts + 1):
            try:
                received, content_type = _stream(url, tmp, timeout)
                break
            except _Retry as retry:
                if attempt == attempts:
                    raise DownloadError(
                        f'{retry.error} (tried {attempts} times). {offline_hint}'
                    ) from None
                time.sleep(attempt)
            except DownloadError as exc:
                raise DownloadError(f'{exc}. {offline_hint}') from None
        problem = archive_problem(tmp, kind) or (check(tmp) if check else None)
        if problem:
            raise DownloadError(
                f'{url} did not send the expected {kind} archive: it is {problem} '
                f'({_describe(tmp, content_type)}); nothing was kept. {offline_hint}'
            )
        if received != sha256.lower():
            raise DownloadError(
                f'checksum mismatch for {url}: the downloaded {kind} archive has sha256 {received}, '
                f'expected {sha256.lower()}; nothing was kept. {offline_hint}'
            )
    return dest
