"""The project README's leaderboard table is the committed leaderboard's, line for line."""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / 'projects' / 'conkd' / 'leaderboards' / 'shared_test'


def test_readme_table_is_the_committed_leaderboard():
    table = [
        line
        for line in (BOARD.with_suffix('.md')).read_text().splitlines()
        if line.startswith('|')
    ]
    readme = (REPO / 'projects' / 'conkd' / 'README.md').read_text().splitlines()
    assert len(table) >= 3
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table


def test_committed_leaderboard_records_commands_versions_and_both_protocols():
    board = json.loads(BOARD.with_suffix('.json').read_text())
    spec = json.loads((BOARD.parent / 'shared_test.spec.json').read_text())
    assert [row['name'] for row in board['rows']] == [
        row['name'] for row in spec['rows']
    ]
    assert board['command'].startswith('python -m parlai_conkd.leaderboard --spec')
    for row in board['rows']:
        assert len(row['runs']) == len(row['models'])
        for run in row['runs']:
            assert (
                run['command'].startswith('parlai eval_model')
                and 'redial_crs:rec_all' in run['command']
            )
            assert {'recall@1', 'new_recall@1', 'pairs', 'new_pairs'} <= set(
                run['report']
            )
    assert board['versions']['parlai'] and board['data']['fold_sha256']
