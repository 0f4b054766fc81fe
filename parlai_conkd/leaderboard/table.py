"""Leaderboard numbers: mean / spread over the seeds of a row, the Markdown tables.

Column names say which protocol a number belongs to: "all" counts every item the gold
recommender turn names (items mentioned before included, as KBRD/CRSLab count), "new" only the
items not mentioned before in the dialogue (He et al., CIKM 2023). The ``pairs`` / ``responses``
columns are the number of (example, gold item) pairs or responses each average is over.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple

#: (column title, report metric, format) per table; format: 'rate' (0.123), 'count' (1,064),
#: 'value' (12.3), 'ppl' (41.4)
RANKER_COLUMNS: List[Tuple[str, str, str]] = [
    ('R@1 all', 'recall@1', 'rate'),
    ('R@10 all', 'recall@10', 'rate'),
    ('R@50 all', 'recall@50', 'rate'),
    ('pairs all', 'pairs', 'count'),
    ('R@1 new', 'new_recall@1', 'rate'),
    ('R@10 new', 'new_recall@10', 'rate'),
    ('R@50 new', 'new_recall@50', 'rate'),
    ('pairs new', 'new_pairs', 'count'),
]
GENERATOR_REC_COLUMNS: List[Tuple[str, str, str]] = [
    ('ReR@1 new', 'rer@1', 'rate'),
    ('ReR@10 new', 'rer@10', 'rate'),
    ('ReR@50 new', 'rer@50', 'rate'),
    ('responses new', 'rer_responses', 'count'),
    ('ReR@1 all', 'rer_all@1', 'rate'),
    ('ReR@10 all', 'rer_all@10', 'rate'),
    ('ReR@50 all', 'rer_all@50', 'rate'),
    ('responses all', 'rer_all_responses', 'count'),
    ('item P', 'item_precision', 'rate'),
    ('item R', 'item_recall', 'rate'),
    ('item F1', 'item_f1', 'rate'),
    ('item ratio', 'item_ratio', 'rate'),
    ('rec_flag_acc', 'rec_flag_acc', 'rate'),
    # "when" and "what" apart (issue #24): naming a film at all, and which film where both name one
    ('when P', 'when_precision', 'rate'),
    ('when R', 'when_recall', 'rate'),
    ('when F1', 'when_f1', 'rate'),
    ('what ReR@10', 'what_rer@10', 'rate'),
    ('what rec R@10', 'what_rec@10', 'rate'),
    ('what responses', 'what_responses', 'count'),
]
GENERATOR_TEXT_COLUMNS: List[Tuple[str, str, str]] = (
    [(f'Dist-{n}', f'dist-{n}', 'rate') for n in range(1, 5)]
    + [(f'Dist_crs-{n}', f'dist_crs-{n}', 'value') for n in range(1, 5)]
    + [
        ('BLEU-4', 'bleu-4', 'rate'),
        ('PPL', 'ppl', 'ppl'),
        ('responses', 'exs', 'count'),
        ('unknown items in targets', 'item_unk_targets', 'count'),
    ]
)


def aggregate(reports: Sequence[Dict]) -> Dict[str, Dict]:
    """Per numeric metric over the runs of a row: ``mean``, ``std`` (sample standard deviation,
    n - 1; None for one run), ``n`` and the ``values`` in run order."""
    names = sorted(
        {k for report in reports for k, v in report.items() if _is_number(v)}
    )
    out = {}
    for name in names:
        values = [
            float(report[name]) for report in reports if _is_number(report.get(name))
        ]
        mean = sum(values) / len(values)
        std = (
            math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else None
        )
        out[name] = {'mean': mean, 'std': std, 'n': len(values), 'values': values}
    return out


def _is_number(value) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _fmt(value: float, kind: str) -> str:
    if kind == 'count':
        return f'{value:,.0f}' if float(value).is_integer() else f'{value:,.1f}'
    if kind == 'ppl':
        return f'{value:.1f}'
    if kind == 'value':
        return f'{value:.3g}' if abs(value) >= 1 else f'{value:.3f}'
    return f'{value:.3f}'


def cell(stats: Optional[Dict], kind: str) -> str:
    """``mean`` or ``mean ± std`` (several seeds); ``-`` when the metric was not reported."""
    if not stats:
        return '-'
    text = _fmt(stats['mean'], kind)
    if stats['n'] > 1 and kind != 'count':
        text += f' ± {_fmt(stats["std"], kind)}'
    return text


def markdown_table(
    rows: Sequence[Dict], columns: Sequence[Tuple[str, str, str]]
) -> str:
    """One Markdown table: a line per row (name, n seeds, then the columns)."""
    head = ['model', 'n'] + [title for title, _, _ in columns]
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * 2 + '---:|' * len(columns)]
    for row in rows:
        n = max((s['n'] for s in row['metrics'].values()), default=0)
        cells = [row['name'], str(n)] + [
            cell(row['metrics'].get(metric), kind) for _, metric, kind in columns
        ]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def markdown(board: Dict) -> str:
    """The whole leaderboard as Markdown: a table per kind of model, then how it was made."""
    parts = [
        f'## {board["title"]}',
        '',
        f'Split: `{board["split"]}`; data: {board["data"]["source"]}'
        + (
            f' (KG: {board["data"]["meta_path"]})'
            if board['data'].get('meta_path')
            else ''
        )
        + '. "all": every item the gold recommender turn names (items mentioned before '
        'included, KBRD/CRSLab); "new": only items not mentioned before in the dialogue. '
        'n = model files (seeds) per row; mean ± sample standard deviation when n > 1.',
        '',
    ]
    rankers = [r for r in board['rows'] if r['kind'] == 'ranker']
    generators = [r for r in board['rows'] if r['kind'] == 'generator']
    if rankers:
        parts += [
            '### Recommenders (`redial_crs:rec_all`: one example per named item)',
            '',
            markdown_table(rankers, RANKER_COLUMNS),
            '',
        ]
    if generators:
        parts += [
            '### Generators: recommendation in the response (`redial_crs`, generated replies)',
            '',
            markdown_table(generators, GENERATOR_REC_COLUMNS),
            '',
            '### Generators: language',
            '',
            markdown_table(generators, GENERATOR_TEXT_COLUMNS),
            '',
        ]
    parts += [
        f'Made by `{board["command"]}` '
        f'({board["versions"].get("parlai_conkd_git") or board["versions"]["parlai_conkd"]}); '
        'every eval_model command and every number are in the JSON next to this file.',
        '',
    ]
    return '\n'.join(parts)
