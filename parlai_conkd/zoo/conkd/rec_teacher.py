"""``zoo:conkd/rec_teacher``: the recommendation teacher (and the teachers it is distilled from, if any)."""

from .builder import ensure


def download(datapath):
    return ensure(datapath, ['rec_teacher'])
