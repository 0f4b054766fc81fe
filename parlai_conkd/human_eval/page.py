"""The rating page as one self-contained HTML document (style, script and config inlined).

One document serves both routes: the local server (``mode="server"``: the page asks ``/api``
for a unit) and an MTurk HTMLQuestion (``mode="mturk"``: the unit view is inlined and the answers
go to MTurk's ``externalSubmit``), so raters see the same page whichever route runs the study.
"""

import json
import re
from pathlib import Path
from typing import Dict, Optional

STATIC = Path(__file__).resolve().parent / 'static'
_MARKER_RE = re.compile(r'/\*(STYLE|CONFIG|SCRIPT)\*/')


def _read(name: str) -> str:
    return (STATIC / name).read_text(encoding='utf-8')


def _script_safe_json(obj) -> str:
    # a "</script>" inside conversation text must not close the config block
    return json.dumps(obj, ensure_ascii=False).replace('</', '<\\/')


def render_page(
    mode: str = 'server', api: str = '/api', view: Optional[Dict] = None
) -> str:
    if mode not in ('server', 'mturk'):
        raise ValueError(f'page mode must be "server" or "mturk", got {mode!r}')
    if mode == 'mturk' and view is None:
        raise ValueError('an MTurk page needs the unit view inlined')
    config = {'mode': mode, 'api': api, 'view': view}
    parts = {
        'STYLE': _read('rate.css'),
        'CONFIG': _script_safe_json(config),
        'SCRIPT': _read('rate.js'),
    }
    # one pass, so text inside the inserted parts is never taken for a marker
    return _MARKER_RE.sub(lambda m: parts[m.group(1)], _read('rate.html'))
