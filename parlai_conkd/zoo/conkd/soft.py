"""``zoo:conkd/soft``: the ConKD student with the soft gate (and the teachers it is distilled from, if any)."""

from .builder import ensure


def download(datapath):
    return ensure(datapath, ['soft'])
