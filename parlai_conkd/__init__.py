"""parlai-conkd: Contextualized Knowledge Distillation (Jung, Jung & Chen, EMNLP 2023) in ParlAI.

Importing this package is cheap (no ParlAI, no torch). It makes sure the start-up finder is
installed even in a process that did not run our ``.pth`` file, and patches any ParlAI module
that was imported before it.
"""

from parlai_conkd import _startup

__version__ = '0.1.0'

_startup.install()
if any(
    name == 'parlai' or name.startswith('parlai.')
    for name in list(__import__('sys').modules)
):
    from parlai_conkd import compat as _compat

    _compat.apply_to_loaded_modules()
