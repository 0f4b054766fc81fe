"""The README's results tables are what the results scripts print from the committed JSON."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / 'projects' / 'conkd' / 'README.md').read_text().splitlines()


def _run(*args):
    return subprocess.run(
        [sys.executable, *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def _in_readme(table: str) -> None:
    lines = [line for line in table.splitlines() if line.startswith('|')]
    assert len(lines) >= 3
    start = README.index(lines[0])
    assert README[start : start + len(lines)] == lines


def test_student_summary_table_is_the_readme_table():
    out = _run(
        'projects/conkd/student_results.py',
        '--summary',
        'projects/conkd/leaderboards/conkd_test.json',
    )
    assert out.returncode == 0, out.stderr
    assert '| student, gate soft | 3 |' in out.stdout
    _in_readme(out.stdout)


def test_rec_teacher_table_is_the_readme_table():
    out = _run(
        'projects/conkd/rec_teacher_results.py',
        '--json',
        'projects/conkd/results/rec_teacher.json',
        '--table-only',
    )
    assert out.returncode == 0, out.stderr
    _in_readme(out.stdout)


def test_summary_refuses_bad_input_by_name(tmp_path):
    missing = tmp_path / 'missing.json'
    out = _run('projects/conkd/student_results.py', '--summary', missing)
    assert (
        out.returncode == 2
        and 'no such file' in out.stderr
        and 'missing.json' in out.stderr
    )
    other = tmp_path / 'other.json'
    other.write_text(json.dumps({'variants': {}}))
    out = _run('projects/conkd/student_results.py', '--summary', other)
    assert out.returncode == 2 and 'not a leaderboard JSON' in out.stderr
    out = _run(
        'projects/conkd/rec_teacher_results.py', '--json', missing, '--table-only'
    )
    assert out.returncode != 0 and 'missing.json' in out.stderr
