"""The formatter and the linter's rules hold on the whole tree (settings: pyproject.toml; the
same checks run as pre-commit hooks, see CONTRIBUTING.md). A few seconds at most: ruff is a
compiled binary, black keeps a cache of the files it checked."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name):
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f'{name} is not installed (requirements/test.txt installs it)')
    return found


def test_ruff_finds_nothing():
    proc = subprocess.run(
        [_tool('ruff'), 'check', '--no-cache', '--output-format', 'concise', '.'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 0
    ), f'ruff check found problems (fix them, or `ruff check --fix .`):\n{proc.stdout}{proc.stderr}'


def test_black_would_change_nothing():
    proc = subprocess.run(
        [_tool('black'), '--check', '--quiet', '.'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        proc.returncode == 0
    ), f'black would reformat files (run `black .`):\n{proc.stdout}{proc.stderr}'
