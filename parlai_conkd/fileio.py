"""Writing outputs safely: atomic replacement with the umask's file mode, and file checksums.

Every output of the plugin that another process may read while it is written (model stamps, item
catalogs, teacher caches, downloads, reports, plots, human-evaluation files) goes through
:func:`atomic_path` / :func:`atomic_write`: the content is written to a temporary file in the same
directory and renamed over the target only when complete, so a reader (or a crash) never sees half
a file, and a failed write leaves the old file as it was.

``tempfile.mkstemp`` creates files owner-only (0600) whatever the umask, so an output renamed
into place from one was unreadable for the group, unlike every other output of a run (model files,
dictionaries, logs) on a shared datapath; the helpers give it the mode a plain ``open(path, 'w')``
would (:func:`match_umask`).

Checksums: :func:`sha256_file` (a file's sha256, hex), the one used for teacher files, data folds,
downloads and release archives.
"""

import contextlib
import hashlib
import os
import tempfile
from typing import IO, BinaryIO, Iterator, Optional

#: bytes read at a time when hashing
CHUNK = 1 << 20


def umask() -> int:
    """The process umask, read without changing it (``os.umask`` would, for a moment, in every
    thread) where Linux reports it; else by setting and restoring it."""
    try:
        with open('/proc/self/status', encoding='ascii') as status:
            for line in status:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_file_mode() -> int:
    """0o666 without the umask's bits: e.g. 0o644 under umask 022, 0o640 under 027."""
    return 0o666 & ~umask()


def match_umask(path_or_fd) -> None:
    """Give a temporary file (path or open descriptor) the mode a plain ``open`` would have."""
    if isinstance(path_or_fd, int):
        os.fchmod(path_or_fd, plain_file_mode())
    else:
        os.chmod(path_or_fd, plain_file_mode())


@contextlib.contextmanager
def atomic_path(path: str, fsync: bool = False) -> Iterator[str]:
    """Yield a temporary file name beside ``path`` to write to; install it when the block ends.

    The temporary file is in ``path``'s directory (created if needed; same file system, so the
    rename is atomic) and ends with ``path``'s extension, so writers that choose the format from
    the name (``matplotlib``'s ``savefig``) still work. When the block ends without an error the
    file gets the plain-``open`` mode and replaces ``path`` in one ``os.replace``; when it raises,
    the temporary file is removed and ``path`` is left as it was. ``fsync``: flush the content to
    disk before the rename (for the records that say another file is complete).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f'.{os.path.basename(path)}.tmp-',
        suffix=os.path.splitext(path)[1],
        dir=directory,
    )
    os.close(fd)
    try:
        yield tmp
        if fsync:
            with open(tmp, 'rb') as written:
                os.fsync(written.fileno())
        match_umask(tmp)  # mkstemp made it owner-only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(
    path: str,
    mode: str = 'w',
    encoding: str = 'utf-8',
    newline: Optional[str] = None,
    fsync: bool = False,
) -> Iterator[IO]:
    """``open(path, mode)`` for writing, installed atomically (see :func:`atomic_path`)::

        with atomic_write('report.json') as f:
            json.dump(report, f)

    ``mode``: ``'w'`` (text, ``encoding`` and ``newline`` as for ``open``) or ``'wb'``. Raises ValueError for any other mode.
    """
    if mode not in ('w', 'wb'):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path, fsync=fsync) as tmp:
        text = mode == 'w'
        with open(
            tmp,
            mode,
            encoding=encoding if text else None,
            newline=newline if text else None,
        ) as f:
            yield f


def sha256_stream(stream: BinaryIO, chunk: int = CHUNK) -> str:
    """sha256 (hex) of what is left to read in a binary stream (a file, a zip member)."""
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(chunk), b''):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str, chunk: int = CHUNK) -> str:
    """sha256 (hex) of a file's bytes, read ``chunk`` bytes at a time."""
    with open(path, 'rb') as f:
        return sha256_stream(f, chunk)
