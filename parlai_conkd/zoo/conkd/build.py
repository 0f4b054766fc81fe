"""``zoo:conkd/...``: ParlAI calls ``download(datapath)`` here for every ConKD zoo model file.

ParlAI passes only the datapath, not which model was asked for, so this makes the whole family
present under ``<datapath>/models/conkd/`` (teachers, then the soft and hard students), each
through :mod:`.builder`'s routes: present -> release archive -> local build.
``$CONKD_ZOO_MODELS`` (comma-separated, e.g. ``soft``) limits that to the named models and their
teachers, for a job that uses only those (asking for another one then finds no model file).
"""

import os

from . import dialogue_teacher, hard, rec_teacher, soft

ENV_MODELS = 'CONKD_ZOO_MODELS'
MODULES = {
    'rec_teacher': rec_teacher,
    'dialogue_teacher': dialogue_teacher,
    'soft': soft,
    'hard': hard,
}


def download(datapath):
    wanted = [
        m.strip() for m in (os.environ.get(ENV_MODELS) or '').split(',') if m.strip()
    ] or list(MODULES)
    unknown = [m for m in wanted if m not in MODULES]
    if unknown:
        raise ValueError(
            f'${ENV_MODELS}: unknown ConKD zoo model(s) {unknown}; choose from {list(MODULES)}'
        )
    for name in MODULES:  # teachers first
        if name in wanted:
            MODULES[name].download(datapath)
