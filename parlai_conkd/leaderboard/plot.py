"""The leaderboard as a PNG: recall under both protocols, one panel per kind of model."""

from typing import Dict, List, Sequence, Tuple

RANKER_BARS: List[Tuple[str, str]] = [
    ('R@1 all', 'recall@1'),
    ('R@1 new', 'new_recall@1'),
    ('R@10 all', 'recall@10'),
    ('R@10 new', 'new_recall@10'),
    ('R@50 all', 'recall@50'),
    ('R@50 new', 'new_recall@50'),
]
GENERATOR_BARS: List[Tuple[str, str]] = [
    ('ReR@1 all', 'rer_all@1'),
    ('ReR@1 new', 'rer@1'),
    ('ReR@10 all', 'rer_all@10'),
    ('ReR@10 new', 'rer@10'),
    ('ReR@50 all', 'rer_all@50'),
    ('ReR@50 new', 'rer@50'),
]


def _panel(
    ax, rows: Sequence[Dict], bars: Sequence[Tuple[str, str]], title: str
) -> None:
    width = 0.8 / max(len(rows), 1)
    for i, row in enumerate(rows):
        means = [row['metrics'].get(metric, {}).get('mean', 0.0) for _, metric in bars]
        errors = [
            row['metrics'].get(metric, {}).get('std') or 0.0 for _, metric in bars
        ]
        positions = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(bars))]
        # error bars (sample std over seeds) only for rows with several model files
        ax.bar(
            positions,
            means,
            width,
            yerr=errors if any(errors) else None,
            capsize=2,
            label=row['name'],
        )
    ax.set_xticks(range(len(bars)))
    ax.set_xticklabels([label for label, _ in bars], rotation=30, ha='right')
    ax.set_ylabel('recall')
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis='y', alpha=0.3)


def plot(board: Dict, path: str) -> None:
    """Write the PNG (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = []
    rankers = [r for r in board['rows'] if r['kind'] == 'ranker']
    generators = [r for r in board['rows'] if r['kind'] == 'generator']
    if rankers:
        panels.append((rankers, RANKER_BARS, 'recommenders (redial_crs:rec_all)'))
    if generators:
        panels.append(
            (generators, GENERATOR_BARS, 'generators, first item slot (redial_crs)')
        )
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False
    )
    for ax, (rows, bars, title) in zip(axes[0], panels):
        _panel(ax, rows, bars, title)
    fig.suptitle(f'{board["title"]} ({board["split"]})')
    fig.tight_layout()
    fig.savefig(path, dpi=110, format='png')
    plt.close(fig)
