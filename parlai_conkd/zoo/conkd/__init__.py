"""ConKD model zoo: ``-mf zoo:conkd/{soft,hard,dialogue_teacher,rec_teacher}``.

ParlAI resolves every ``zoo:conkd/<name>`` by calling :func:`build.download` (the whole family);
each ``<name>.py`` ensures just that model and its teachers. Machinery: :mod:`.builder`;
what is trained: :mod:`.recipe`.
"""
