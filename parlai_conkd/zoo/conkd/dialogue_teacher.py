"""``zoo:conkd/dialogue_teacher``: the dialogue teacher (and the teachers it is distilled from, if any)."""

from .builder import ensure


def download(datapath):
    return ensure(datapath, ['dialogue_teacher'])
