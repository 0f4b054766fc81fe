"""``zoo:conkd/...``: ParlAI calls ``download(datapath)`` here for every ConKD zoo model file.

ParlAI's ``modelzoo_path(datapath, 'zoo:conkd/soft')`` imports this module (``conkd.build``) for
every name under ``zoo:conkd/`` and passes only the datapath. The name asked for is read from that
call (:func:`requested_model`), so ``zoo:conkd/soft`` makes present what the soft student needs (its
two teachers and itself) and not the hard student (issue #22), each through :mod:`.builder`'s routes:
present -> release archive -> local build. Called any other way, the whole family is made present.
``$CONKD_ZOO_MODELS`` (comma-separated, e.g. ``soft``) names the models instead.
"""

import os
import sys
from typing import Optional

from . import dialogue_teacher, hard, rec_teacher, soft

ENV_MODELS = 'CONKD_ZOO_MODELS'
MODULES = {
    'rec_teacher': rec_teacher,
    'dialogue_teacher': dialogue_teacher,
    'soft': soft,
    'hard': hard,
}


def requested_model() -> Optional[str]:
    """The ConKD model of the ``modelzoo_path(datapath, path)`` call running ``download``, if any.

    ParlAI 1.7.2 (its final release) gives ``download`` no name; the calling frame holds it as
    ``path`` (``'zoo:conkd/soft'``, or ``'zoo:conkd/soft.dict'`` for a file beside the model).
    """
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == 'modelzoo_path' and code.co_filename.endswith(
            os.path.join('parlai', 'core', 'build_data.py')
        ):
            path = frame.f_locals.get('path')
            if isinstance(path, str) and path.startswith('zoo:conkd/'):
                return path[len('zoo:conkd/') :].split('/')[0].split('.')[0]
            return None
        frame = frame.f_back
    return None


def download(datapath):
    from .builder import ZooError

    requested = requested_model()
    listed = [
        m.strip() for m in (os.environ.get(ENV_MODELS) or '').split(',') if m.strip()
    ]
    wanted = listed or ([requested] if requested else list(MODULES))
    unknown = [m for m in wanted if m not in MODULES]
    if unknown:
        where = f'${ENV_MODELS}' if listed else f'zoo:conkd/{unknown[0]}'
        raise ZooError(
            f'{where}: no such ConKD zoo model; choose from '
            + ', '.join(f'zoo:conkd/{m}' for m in MODULES)
        )
    for name in MODULES:  # teachers first
        if name in wanted:
            MODULES[name].download(datapath)
