"""The project README's leaderboard table is the committed leaderboard's, line for line."""

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BOARD = REPO / 'projects' / 'conkd' / 'leaderboards' / 'conkd_test'


def _table(markdown: str, heading: str):
    """The ``|`` lines of the table under ``heading`` (a ``###`` line of the board's Markdown)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(heading))
    table = []
    for line in lines[start + 1 :]:
        if line.startswith('|'):
            table.append(line)
        elif table:
            break
    return table


def test_readme_table_is_the_committed_leaderboard():
    table = _table(BOARD.with_suffix('.md').read_text(), '### Recommenders')
    readme = (REPO / 'projects' / 'conkd' / 'README.md').read_text().splitlines()
    assert len(table) >= 3
    start = readme.index(table[0])
    assert readme[start : start + len(table)] == table


def test_committed_leaderboard_records_commands_versions_and_both_protocols():
    board = json.loads(BOARD.with_suffix('.json').read_text())
    spec = json.loads((BOARD.parent / 'conkd_test.spec.json').read_text())
    assert [row['name'] for row in board['rows']] == [
        row['name'] for row in spec['rows']
    ]
    assert board['command'].startswith('python -m parlai_conkd.leaderboard --spec')
    kinds = {row['kind'] for row in board['rows']}
    assert kinds == {'ranker', 'generator'}
    for row in board['rows']:
        assert len(row['runs']) == len(row['models'])
        for run in row['runs']:
            assert run['command'].startswith('parlai eval_model')
            if row['kind'] == 'ranker':
                assert 'redial_crs:rec_all' in run['command']
                assert {'recall@1', 'new_recall@1', 'pairs', 'new_pairs'} <= set(
                    run['report']
                )
            else:
                assert '--skip-generation false' in run['command']
                assert {'rer@10', 'rer_all@10', 'item_precision', 'ppl'} <= set(
                    run['report']
                )
    assert board['versions']['parlai'] and board['data']['fold_sha256']
