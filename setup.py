"""parlai-conkd: Contextualized Knowledge Distillation for conversational recommendation, as a ParlAI plugin.

Install with ``bash scripts/setup.sh`` (see README.md): ParlAI 1.7.2 must be installed
without its dependency pins, so this distribution does not list it in install_requires.
"""

import os
import re

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = os.path.dirname(os.path.abspath(__file__))
STARTUP_PTH = 'parlai_conkd_startup.pth'
#: site.py executes `import` lines of .pth files at every interpreter start (see parlai_conkd/_startup.py).
STARTUP_PTH_CONTENT = b'import parlai_conkd._startup\n'


def read_version() -> str:
    """``parlai_conkd.__version__``, the one place the version is written (read, not imported:
    importing the package installs its start-up hook)."""
    with open(os.path.join(HERE, 'parlai_conkd', '__init__.py'), encoding='utf-8') as f:
        match = re.search(r"^__version__ = '([^']+)'$", f.read(), re.M)
    if match is None:
        raise RuntimeError('parlai_conkd/__init__.py has no __version__ line')
    return match.group(1)


class BuildPyWithStartupHook(build_py):
    """Ship the start-up .pth next to the package so site.py runs it in every interpreter.

    Regular installs copy build_lib into site-packages; setuptools' editable wheels
    include build_py outputs that are not Python modules, so both routes get the hook.
    """

    def run(self):
        super().run()
        os.makedirs(self.build_lib, exist_ok=True)
        with open(os.path.join(self.build_lib, STARTUP_PTH), 'wb') as f:
            f.write(STARTUP_PTH_CONTENT)

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [
            os.path.join(self.build_lib, STARTUP_PTH)
        ]


class EditableWheelWithStartupHook(editable_wheel):
    """``pip install -e .`` builds its wheel through a strategy object rather than build_py's
    outputs; add the start-up .pth to that wheel too. Its name sorts after setuptools'
    ``__editable__.*.pth``, so the package is importable when site.py runs our hook."""

    def _select_strategy(self, name, tag, build_lib):
        strategy = super()._select_strategy(name, tag, build_lib)

        class WithStartupHook:
            def __enter__(self):
                strategy.__enter__()
                return self

            def __exit__(self, *exc):
                return strategy.__exit__(*exc)

            def __call__(self, wheel, files, mapping):
                strategy(wheel, files, mapping)
                wheel.writestr(STARTUP_PTH, STARTUP_PTH_CONTENT)

        return WithStartupHook()


setup(
    name='parlai-conkd',
    version=read_version(),
    description='ConKD (Jung, Jung & Chen, EMNLP 2023) for conversational recommendation in ParlAI',
    long_description=open(os.path.join(HERE, 'README.md'), encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='MIT',
    python_requires='>=3.10',
    packages=find_packages(include=['parlai_conkd', 'parlai_conkd.*']),
    package_data={'': ['*.json', '*.md', '*.html', '*.js', '*.css']},
    cmdclass={
        'build_py': BuildPyWithStartupHook,
        'editable_wheel': EditableWheelWithStartupHook,
    },
    # ParlAI and torch are deliberately absent: see requirements/*.txt and scripts/setup.sh.
    install_requires=[],
)
