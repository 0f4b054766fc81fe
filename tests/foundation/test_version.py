"""One version source: ``parlai_conkd.__version__``, which setup.py reads (issue #18)."""

import subprocess
import sys
from pathlib import Path

import parlai_conkd

ROOT = Path(__file__).resolve().parents[2]


def test_setup_py_takes_the_package_version():
    proc = subprocess.run(
        [sys.executable, 'setup.py', '--version'],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.strip().splitlines()[-1] == parlai_conkd.__version__
    # not written twice
    assert "version='" not in (ROOT / 'setup.py').read_text(encoding='utf-8')
