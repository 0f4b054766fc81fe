"""parlai_conkd.formatting and .plots (and the explain entry point): text pieces against hand-made values, results loading, PNG output."""

import json

import pytest

from parlai_conkd import explain, formatting, plots
from parlai_conkd.items import Item, ItemCatalog
from tests.support import assert_png


@pytest.fixture
def catalog():
    return ItemCatalog(
        [
            Item(
                0,
                '10',
                'Frozen',
                2013,
                metadata={
                    'genre': ['Animation', 'Family'],
                    'director': ['Chris Buck'],
                    'star': [
                        'Kristen Bell',
                        'Idina Menzel',
                        'Jonathan Groff',
                        'Josh Gad',
                    ],
                },
            ),
            Item(1, '20', 'The Lion King', 1994),
            Item(2, '30', 'King', 1994, metadata={'director': 'Someone'}),
        ]
    )


def test_describe_item_shows_known_metadata_only(catalog):
    assert formatting.describe_item(catalog[0]) == (
        'Frozen (2013) - genre: Animation, Family; director: Chris Buck; '
        'stars: Kristen Bell, Idina Menzel, Jonathan Groff, ...'
    )
    assert formatting.describe_item(catalog[1]) == 'The Lion King (1994)'
    assert formatting.describe_item(catalog[2]) == 'King (1994) - director: Someone'


def test_top_k_orders_excludes_and_breaks_ties_by_index():
    assert formatting.top_k([0.1, 0.5, 0.5, 0.2], 3) == [(1, 0.5), (2, 0.5), (3, 0.2)]
    assert formatting.top_k([0.1, 0.5, 0.5, 0.2], 2, exclude=[1]) == [
        (2, 0.5),
        (3, 0.2),
    ]
    assert formatting.top_k([0.3], 0) == []
    assert formatting.softmax([0.0, 0.0]) == [0.5, 0.5]


def test_format_gates_tags_the_hard_gate_teacher_and_cuts_long_replies():
    assert (
        formatting.format_gates(['hi', 'x'], [0.2, 0.9], 'soft', 0.5)
        == 'hi[0.20] x[0.90]'
    )
    assert (
        formatting.format_gates(['hi', 'x'], [0.5, 0.9], 'hard', 0.5)
        == 'hi[0.50:dial] x[0.90:rec]'
    )
    long = formatting.format_gates(['w'] * 100, [0.1] * 100, 'soft', 0.5, max_tokens=3)
    assert long == 'w[0.10] w[0.10] w[0.10] ... (97 more tokens)'


def test_explanation_render(catalog):
    text = formatting.Explanation(
        student_items=[(0, 0.25)],
        tokens=['see', '<Frozen (2013)>'],
        gates=[0.1, 0.8],
        notes=['teachers unavailable: x'],
    ).render(catalog, 'hard', 0.5)
    lines = text.split('\n')
    assert lines[0].startswith('top items (this model')
    assert lines[1].startswith('   1.  25.00%  Frozen (2013) - genre')
    assert 'rec teacher where > 0.5' in lines[2]
    assert lines[3] == '  see[0.10:dial] <Frozen (2013)>[0.80:rec]'
    assert lines[4] == '(teachers unavailable: x)'


def test_display_token_renders_items_only(catalog):
    assert formatting.display_token('__item_10__', catalog) == '<Frozen (2013)>'
    assert formatting.display_token('hello', catalog) == 'hello'


def test_load_results_accepts_documented_shapes(tmp_path):
    rows_file = tmp_path / 'table.json'
    rows_file.write_text(
        json.dumps(
            {
                'rows': [
                    {'model': 'soft', 'metrics': {'rer@10': 0.1, 'note': 'x'}},
                    {'model': 'hard', 'metrics': {'rer@10': 0.2}},
                ]
            }
        )
    )
    single = tmp_path / 'dialogue_teacher_transformer.json'
    single.write_text(
        json.dumps(
            {'backbone': 'transformer', 'metrics': {'ppl': 50.0, 'dist-2': None}}
        )
    )
    report = tmp_path / 'rec.json'
    report.write_text(json.dumps({'report': {'recall@10': 0.05, 'exs': 10}}))
    variants = tmp_path / 'rec_teacher.json'
    variants.write_text(
        json.dumps(
            {
                'host': {},
                'variants': {'kg': {'test': {'recall@10': 0.2}, 'train_seconds': 5}},
            }
        )
    )
    rows = plots.load_results([str(rows_file), str(single), str(report), str(variants)])
    assert rows == [
        ('soft', {'rer@10': 0.1}),
        ('hard', {'rer@10': 0.2}),
        ('transformer', {'ppl': 50.0}),
        ('rec', {'recall@10': 0.05, 'exs': 10.0}),
        ('kg', {'recall@10': 0.2}),
    ]
    bad = tmp_path / 'bad.json'
    bad.write_text('{"rows": [{"model": "x"}]}')
    with pytest.raises(ValueError, match='bad.json: row 0 has no "metrics"'):
        plots.load_results([str(bad)])


def test_plot_results_cli_writes_a_png(tmp_path):
    results = tmp_path / 'r.json'
    results.write_text(
        json.dumps(
            {
                'rows': [
                    {'model': 'teacher', 'metrics': {'rer@10': 0.1, 'dist-2': 0.3}},
                    {'model': 'soft', 'metrics': {'rer@10': 0.15}},
                ]
            }
        )
    )
    out = tmp_path / 'charts' / 'results.png'
    assert (
        explain.main(
            [
                'plot-results',
                '--results',
                str(results),
                '--metrics',
                'rer@10,dist-2,absent',
                '--out',
                str(out),
            ]
        )
        == 0
    )
    assert_png(out)
    with pytest.raises(ValueError, match='none of the requested metrics'):
        plots.plot_results(
            plots.load_results([str(results)]), ['absent'], str(tmp_path / 'x.png')
        )


@pytest.mark.parametrize('gate', ['soft', 'hard'])
def test_plot_gates_writes_a_png(tmp_path, gate):
    responses = [
        plots.GatedResponse(
            'hi, any comedies?',
            ['have', 'you', 'seen', '<Frozen (2013)>', '?'],
            [0.05, 0.1, 0.3, 0.95, 0.02],
        ),
        plots.GatedResponse('__SILENCE__', ['word'] * 80, [0.5] * 80),
    ]
    out = tmp_path / f'{gate}.png'
    plots.plot_gates(responses, str(out), gate, 0.5)
    assert_png(out)
    assert not list(tmp_path.glob('.*tmp*'))
