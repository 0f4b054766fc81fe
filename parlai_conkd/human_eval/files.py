"""JSONL reading with line-numbered errors, durable appends, atomic writes: the file habits every
human-evaluation file (logs, pairings, results, HIT manifests, reports) shares."""
import json
import os
import tempfile
from typing import Callable, Dict, Iterator, Tuple, Type

from parlai_conkd.fileio import match_umask


def iter_jsonl(path: str, error: Type[Exception] = ValueError, what: str = 'file') -> Iterator[Tuple[int, object]]:
    """(line number, parsed value) per non-blank line; a missing file or bad line raises ``error``
    naming ``path:line`` and the column in that line."""
    if not os.path.isfile(path):
        raise error(f'{what} not found: {path}')
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip('\r\n'))
            except json.JSONDecodeError as exc:  # column counted from the start of this line
                raise error(f'{path}:{line_no}: invalid JSON ({exc.msg} at column {exc.pos + 1})') from exc
            yield line_no, value


def append_jsonl(path: str, record: Dict) -> None:
    """Append one line and fsync: a record is on disk before anyone is told it was saved."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record, ensure_ascii=False) + '\n')
        f.flush()
        os.fsync(f.fileno())


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """``write(tmp_path)`` then rename over ``path``: readers never see half a file; the mode is
    the umask's, as for a plain ``open``."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=directory, suffix=os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        match_umask(tmp)  # mkstemp made it owner-only
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
