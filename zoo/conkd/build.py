"""``zoo:conkd/...``: ParlAI calls ``download(datapath)`` here for every ConKD zoo model file.

It makes the whole family present under ``<datapath>/models/conkd/`` (teachers, then the soft and
hard students), each through :mod:`.builder`'s routes: present -> release archive -> local build.
"""
from . import dialogue_teacher, hard, rec_teacher, soft


def download(datapath):
    for module in (rec_teacher, dialogue_teacher, soft, hard):
        module.download(datapath)
