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


def test_summary_shows_when_and_what_where_a_row_has_them(tmp_path):
    """Issue #24's columns: "when F1" and "what ReR@10 / rec R@10" (both halves, or empty);
    left out of the table when no row has them (leaderboards run before they existed).
    """

    def metric(mean, std=None):
        return {'mean': mean, 'std': std}

    rec = {'name': 'rec', 'kind': 'ranker', 'runs': [{}], 'metrics': {}}
    rec['metrics']['new_recall@10'] = metric(0.2)
    soft = {
        'name': 'soft',
        'kind': 'generator',
        'runs': [{}, {}],
        'metrics': {
            'rer@10': metric(0.1, 0.01),
            'when_f1': metric(0.5, 0.02),
            'what_rer@10': metric(0.15, 0.01),
            'what_rec@10': metric(0.18, 0.0),
        },
    }
    pipeline = {
        'name': 'pipeline',
        'kind': 'generator',
        'runs': [{}],
        'metrics': {'rer@10': metric(0.09), 'what_rer@10': metric(0.12)},
    }
    board = tmp_path / 'board.json'
    board.write_text(json.dumps({'rows': [rec, soft, pipeline]}))
    out = _run('projects/conkd/student_results.py', '--summary', board)
    assert out.returncode == 0, out.stderr
    header, _, rec_line, soft_line, pipeline_line = out.stdout.strip().splitlines()
    assert header == (
        '| model | n | R@10 / ReR@10 new | when F1 | what ReR@10 / rec R@10 |'
    )
    assert rec_line == '| rec | 1 | 0.200 |  |  |'
    assert (
        soft_line
        == '| soft | 2 | 0.100 ± 0.010 | 0.500 ± 0.020 | 0.150 ± 0.010 / 0.180 ± 0.000 |'
    )
    # one half missing: no half-filled cell
    assert pipeline_line == '| pipeline | 1 | 0.090 |  |  |'
    for row in (soft, pipeline):
        for name in ('when_f1', 'what_rer@10', 'what_rec@10'):
            row['metrics'].pop(name, None)
    board.write_text(json.dumps({'rows': [rec, soft, pipeline]}))
    out = _run('projects/conkd/student_results.py', '--summary', board)
    assert out.stdout.splitlines()[0] == '| model | n | R@10 / ReR@10 new |'
