"""Pictures of ConKD models (matplotlib, PNG): the gate per response token of a dialogue, and bar
charts of results tables. The command lines are ParlAI-style scripts in :mod:`parlai_conkd.scripts`
(``python -m parlai_conkd.scripts.plot_gates`` / ``plot_results``; the older
``python -m parlai_conkd.explain plot-gates|plot-results`` still works).
"""

import json
import math
import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from parlai_conkd.fileio import atomic_path
from parlai_conkd.formatting import display_token


@dataclass
class GatedResponse:
    """One response of a dialogue, for the gate picture."""

    context: str
    tokens: List[str]
    gates: List[float]


def gated_responses(
    model_file: str,
    datapath: str,
    fold: str = 'test',
    dialogue: int = 0,
    max_turns: int = 6,
    overrides: Optional[Dict] = None,
) -> Tuple[List[GatedResponse], Dict]:
    """The gold responses of one ReDial dialogue with the dialogue teacher's gate per token.

    ``model_file``: a student (its ``--dialogue-teacher-file`` is used) or a dialogue teacher.
    Returns the responses and the student's opt (gate kind, threshold).
    """
    from parlai.core.agents import create_agent_from_model_file
    from parlai.core.build_data import modelzoo_path

    from parlai_conkd.redial.build import load_episodes

    resolved = modelzoo_path(datapath, model_file)
    if not os.path.isfile(resolved + '.opt'):
        raise FileNotFoundError(
            f'-mf {model_file}: no ParlAI model at {resolved} (its .opt is missing)'
        )
    with open(resolved + '.opt', encoding='utf-8') as f:
        saved = json.load(f)
    teacher_file = saved.get('dialogue_teacher_file') or resolved
    teacher_file = modelzoo_path(datapath, teacher_file)
    base = {
        'datapath': datapath,
        'skip_generation': True,
        'interactive_mode': False,
        'no_cuda': True,
    }
    base.update(overrides or {})
    teacher = create_agent_from_model_file(teacher_file, dict(base))
    task_opt = dict(saved, datapath=datapath, **(overrides or {}))
    episodes = load_episodes(task_opt, fold)
    if not 0 <= dialogue < len(episodes):
        raise IndexError(
            f'--dialogue {dialogue}: the {fold} fold has {len(episodes)} dialogues'
        )
    turns = episodes[dialogue]['turns']
    teacher.reset()
    out, pending = [], []
    for turn in turns:
        if turn['role'] != 'recommender':
            pending.append(turn['text'])
            continue
        text = '\n'.join(pending) or '__SILENCE__'
        pending = []
        msg = {'text': text, 'labels': [turn['text']], 'episode_done': False}
        obs = teacher.observe(msg)
        batch = teacher.batchify([obs])
        result = teacher.teacher_forced_log_probs(batch)
        ids = batch.label_vec[0].tolist()
        gates = result.item_mass[0].tolist()
        tokens, kept = [], []
        for token_id, gate in zip(ids, gates):
            if token_id in (
                teacher.rec_token_id,
                teacher.gen_token_id,
                teacher.END_IDX,
                teacher.NULL_IDX,
            ):
                continue
            tokens.append(
                display_token(teacher.dict.ind2tok.get(token_id, '?'), teacher.catalog)
            )
            kept.append(float(gate))
        teacher.self_observe({'text': turn['text'], 'episode_done': False})
        out.append(GatedResponse(teacher.catalog.render(text), tokens, kept))
        if len(out) >= max_turns:
            break
    return out, saved


def plot_gates(
    responses: Sequence[GatedResponse],
    out: str,
    gate_kind: str = 'soft',
    threshold: float = 0.5,
    title: str = '',
) -> str:
    """PNG: each response token on a box coloured by lambda_t (soft/static/none) or by the teacher
    the hard gate picks (orange = recommendation teacher, blue = dialogue teacher)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib import cm, colors

    # rows are wrapped by a character estimate; boxes are then placed by their measured width
    width_chars = 130
    lines = []  # (kind, payload)
    for r in responses:
        lines.append(
            ('context', 'seeker: ' + ' '.join(r.context.split())[:width_chars])
        )
        row, used = [], 0
        for token, gate in zip(r.tokens, r.gates):
            if used + len(token) + 1 > width_chars and row:
                lines.append(('tokens', row))
                row, used = [], 0
            row.append((token, gate))
            used += len(token) + 1
        lines.append(('tokens', row))
    height = 0.9 + 0.32 * len(lines)
    fig, ax = plt.subplots(figsize=(14, height))
    ax.set_xlim(0, 1)
    ax.set_ylim(len(lines), -1.2)
    ax.axis('off')
    cmap = matplotlib.colormaps['viridis']
    rec_color, dial_color = '#f28e2b', '#4e79a7'
    if gate_kind == 'hard':
        from matplotlib.patches import Patch

        ax.legend(
            handles=[
                Patch(
                    color=rec_color,
                    label=f'recommendation teacher (lambda > {threshold:g})',
                ),
                Patch(color=dial_color, label='dialogue teacher'),
            ],
            loc='upper right',
            fontsize=8,
            frameon=False,
            ncol=2,
        )
    else:
        bar = fig.colorbar(
            cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=cmap),
            ax=ax,
            fraction=0.015,
            pad=0.01,
        )
        bar.set_label(
            'lambda_t (dialogue teacher\'s item mass) = weight of the rec teacher',
            fontsize=8,
        )
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()
    gap = 0.006
    for y, (kind, payload) in enumerate(lines):
        if kind == 'context':
            ax.text(
                0,
                y,
                payload,
                fontsize=8,
                color='#555555',
                va='center',
                family='monospace',
            )
            continue
        x = 0.0
        for token, gate in payload:
            if gate_kind == 'hard':
                face = rec_color if gate > threshold else dial_color
            else:
                face = cmap(gate)
            text_color = 'white' if (gate_kind == 'hard' or gate < 0.6) else 'black'
            box = ax.text(
                x,
                y,
                token,
                fontsize=8,
                family='monospace',
                va='center',
                color=text_color,
                bbox=dict(boxstyle='round,pad=0.15', facecolor=face, edgecolor='none'),
            )
            right = box.get_window_extent(renderer=renderer).x1
            x = to_data.transform((right, 0))[0] + gap
    ax.set_title(
        title or f'ConKD gate per response token ({gate_kind} gate)',
        fontsize=10,
        loc='left',
    )
    return _save_png(fig, out)


def load_results(paths: Sequence[str]) -> List[Tuple[str, Dict[str, float]]]:
    """Rows (model name, metrics) from results JSON files.

    Accepted shapes (the results scripts of projects/conkd write them):
    ``{"rows": [{"model": NAME, "metrics": {METRIC: VALUE}}]}``, or one model per file:
    ``{"model"|"name"|"backbone": NAME, "metrics": {...}}`` (the name defaults to the file name),
    ParlAI's ``--report-filename`` output ``{"report": {...}}``, or several variants of one model
    ``{"variants": {NAME: {"test": {METRIC: VALUE}}}}`` (projects/conkd/rec_teacher_results.py).
    """
    rows = []
    for path in paths:
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
        except (OSError, ValueError) as exc:
            raise ValueError(f'{path}: not a readable results JSON ({exc})') from exc
        if isinstance(data, dict) and isinstance(data.get('variants'), dict):
            entries = [
                dict(
                    entry, model=name, metrics=entry.get('metrics') or entry.get('test')
                )
                for name, entry in data['variants'].items()
                if isinstance(entry, dict)
            ]
        else:
            entries = (
                data.get('rows')
                if isinstance(data, dict) and 'rows' in data
                else [data]
            )
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f'{path}: row {n} is not an object')
            metrics = entry.get('metrics') or entry.get('report')
            if not isinstance(metrics, dict):
                raise ValueError(
                    f'{path}: row {n} has no "metrics" (or "report") object'
                )
            name = (
                entry.get('model')
                or entry.get('name')
                or entry.get('backbone')
                or os.path.splitext(os.path.basename(path))[0]
            )
            numeric = {}
            for k, v in metrics.items():
                # a leaderboard's {"mean", "std", "n", "values"}
                if isinstance(v, dict):
                    v = v.get('mean')
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    numeric[k] = float(v)
            rows.append((str(name), numeric))
    return rows


def plot_results(
    rows: Sequence[Tuple[str, Dict[str, float]]],
    metrics: Sequence[str],
    out: str,
    title: str = 'ConKD results',
) -> str:
    """PNG: one panel per metric, one bar per model (value printed on the bar)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(m in r for _, r in rows)]
    if not metrics:
        raise ValueError('none of the requested metrics is in the results')
    names = [name for name, _ in rows]
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(max(3.0 * len(metrics), 5), 3.6), squeeze=False
    )
    palette = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, metric in zip(axes[0], metrics):
        values = [r.get(metric, float('nan')) for _, r in rows]
        bars = ax.bar(
            range(len(names)),
            values,
            color=[palette[i % len(palette)] for i in range(len(names))],
        )
        for bar, value in zip(bars, values):
            if not math.isnan(value):
                ax.annotate(
                    f'{value:.3g}',
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha='center',
                    va='bottom',
                    fontsize=7,
                )
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha='right', fontsize=7)
        ax.tick_params(axis='y', labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_png(fig, out)


def _save_png(fig, out: str) -> str:
    import matplotlib.pyplot as plt

    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=130, bbox_inches='tight')
    finally:
        plt.close(fig)
    return out


DEFAULT_RESULT_METRICS = (
    'recall@10',
    'recall@50',
    'rer@10',
    'rer@50',
    'item_ratio',
    'dist-2',
    'ppl',
)
