"""Leaderboard rows (spec file / command line) and the numbers a row's seeds give, by hand."""

import json

import pytest

from parlai_conkd.leaderboard.spec import SpecError, load_spec, rows_from_cli
from parlai_conkd.leaderboard.table import (
    RANKER_COLUMNS,
    aggregate,
    cell,
    markdown_table,
)


def _write(tmp_path, payload, name='spec.json'):
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return str(path)


def test_spec_file_rows_split_and_args(tmp_path):
    spec = load_spec(
        _write(
            tmp_path,
            {
                'title': 'T',
                'split': 'valid',
                'eval_args': '-bs 8',
                'rows': [
                    {'name': 'pop', 'models': 'a/model'},
                    {
                        'name': 'soft',
                        'models': ['zoo:conkd/soft', 'b/model'],
                        'args': '--inference beam --beam-size 5',
                        'kind': 'generator',
                    },
                ],
            },
        )
    )
    assert (spec.title, spec.split, spec.eval_args) == ('T', 'valid', ['-bs', '8'])
    assert [r.models for r in spec.rows] == [['a/model'], ['zoo:conkd/soft', 'b/model']]
    assert (
        spec.rows[1].args == ['--inference', 'beam', '--beam-size', '5']
        and spec.rows[1].kind == 'generator'
    )
    assert spec.rows[0].args == [] and spec.rows[0].kind is None


def test_yaml_spec(tmp_path):
    spec = load_spec(
        _write(tmp_path, 'rows:\n  - name: pop\n    models: [a/model]\n', 'spec.yaml')
    )
    assert spec.rows[0].name == 'pop' and spec.split == 'test'


@pytest.mark.parametrize(
    'payload, message',
    [
        ('{"rows": [', 'not valid JSON'),
        ({'rows': []}, '"rows" must be a non-empty list'),
        ({'rows': [{'name': 'a'}]}, 'rows[0] (a): "models"'),
        (
            {'rows': [{'name': 'a', 'models': 'm', 'seed': 1}]},
            "rows[0]: unknown keys ['seed']",
        ),
        (
            {'rows': [{'name': 'a', 'models': 'm'}, {'name': 'a', 'models': 'n'}]},
            "two rows are named 'a'",
        ),
        (
            {'rows': [{'name': 'a', 'models': 'm', 'kind': 'llm'}]},
            '"kind" must be one of',
        ),
        (
            {'split': 'dev', 'rows': [{'name': 'a', 'models': 'm'}]},
            '"split" must be one of',
        ),
    ],
)
def test_bad_spec_files_name_the_file_and_row(tmp_path, payload, message):
    path = _write(tmp_path, payload)
    with pytest.raises(SpecError) as error:
        load_spec(path)
    assert path in str(error.value) and message in str(error.value)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match='spec file not found'):
        load_spec(str(tmp_path / 'nope.json'))


def test_rows_from_the_command_line():
    rows = rows_from_cli(
        ['pop=a/model', 'soft=zoo:conkd/soft, b/model'],
        ['soft=--inference beam --beam-size 5'],
    )
    assert [(r.name, r.models) for r in rows] == [
        ('pop', ['a/model']),
        ('soft', ['zoo:conkd/soft', 'b/model']),
    ]
    assert rows[1].args == ['--inference', 'beam', '--beam-size', '5']
    with pytest.raises(SpecError, match='NAME=MODEL'):
        rows_from_cli(['just-a-model'])
    with pytest.raises(SpecError, match="rows: \\['pop'\\]"):
        rows_from_cli(['pop=a/model'], ['soft=--x 1'])


def test_seeds_give_mean_sample_std_and_n():
    stats = aggregate(
        [
            {'recall@1': 0.1, 'pairs': 10, 'note': 'x'},
            {'recall@1': 0.3, 'pairs': 10},
            {'recall@1': 0.2, 'pairs': 10},
        ]
    )
    assert stats['recall@1']['mean'] == pytest.approx(0.2)
    # sqrt(((-0.1)^2 + 0.1^2 + 0) / 2)
    assert stats['recall@1']['std'] == pytest.approx(0.1)
    assert stats['recall@1']['n'] == 3 and stats['recall@1']['values'] == [
        0.1,
        0.3,
        0.2,
    ]
    assert 'note' not in stats
    single = aggregate([{'recall@1': 0.25}])['recall@1']
    assert single['std'] is None and cell(single, 'rate') == '0.250'
    assert cell(stats['recall@1'], 'rate') == '0.200 ± 0.100'
    assert cell(stats['pairs'], 'count') == '10' and cell(None, 'rate') == '-'


def test_markdown_table_has_both_protocols_and_counts():
    row = {
        'name': 'repeat',
        'metrics': aggregate(
            [{'recall@1': 0.043, 'new_recall@1': 0.0, 'pairs': 1064, 'new_pairs': 980}]
        ),
    }
    text = markdown_table([row], RANKER_COLUMNS)
    head, _, line = text.splitlines()
    assert (
        head.startswith('| model | n | R@1 all |')
        and 'pairs all' in head
        and 'R@1 new' in head
    )
    assert (
        line.startswith('| repeat | 1 | 0.043 |')
        and '| 1,064 |' in line
        and '| 980 |' in line
    )
    # R@10/50 of both protocols not reported
    assert '| 0.000 |' in line and line.count('| - ') == 4


@pytest.mark.parametrize(
    'spec, out, expected',
    [
        ('lb/shared_test.spec.json', None, 'lb/shared_test'),
        ('lb/board.json', None, 'lb/board.leaderboard'),
        ('lb/board.yaml', 'x/y', 'x/y'),
    ],
)
def test_outputs_default_next_to_the_spec_and_never_overwrite_it(spec, out, expected):
    from parlai_conkd.leaderboard.script import Leaderboard

    script = Leaderboard({'spec': spec, 'out': out})
    assert script._out_prefix() == expected
    with pytest.raises(SpecError, match='would overwrite the spec file'):
        Leaderboard({'spec': 'lb/board.json', 'out': 'lb/board'})._out_prefix()
