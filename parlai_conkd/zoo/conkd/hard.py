"""``zoo:conkd/hard``: the ConKD student with the hard gate (and the teachers it is distilled from, if any)."""

from .builder import ensure


def download(datapath):
    return ensure(datapath, ['hard'])
