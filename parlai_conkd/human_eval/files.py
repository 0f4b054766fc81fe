"""JSONL reading with line-numbered errors and durable appends: the file habits every
human-evaluation file (logs, pairings, results, HIT manifests, reports) shares; atomic writes are
:mod:`parlai_conkd.fileio`'s."""

import json
import os
from typing import Dict, Iterator, Tuple, Type


def iter_jsonl(
    path: str, error: Type[Exception] = ValueError, what: str = 'file'
) -> Iterator[Tuple[int, object]]:
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
            except (
                json.JSONDecodeError
            ) as exc:  # column counted from the start of this line
                raise error(
                    f'{path}:{line_no}: invalid JSON ({exc.msg} at column {exc.pos + 1})'
                ) from exc
            yield line_no, value


def append_jsonl(path: str, record: Dict) -> None:
    """Append one line and fsync: a record is on disk before anyone is told it was saved."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'a', encoding='utf-8') as f:
        f.write(json.dumps(record, ensure_ascii=False) + '\n')
        f.flush()
        os.fsync(f.fileno())
