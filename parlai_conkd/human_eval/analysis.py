"""Win rates per question and model pair, with exact two-sided binomial tests, as ACUTE-Eval reports.

Reads stored units (ACUTE result shape, see ``units``), flattens them into one response per
comparison as ACUTE's ``AcuteAnalyzer._extract_response_by_index`` does, drops onboarding
comparisons and every rater who answered any onboarding comparison wrongly (its
``_remove_failed_onboarding``), keeps only a rater's first rating of a comparison for a question
(a resubmitted or repeated unit is not a second vote), then counts wins per (question, sorted
model pair). A ``speakerChoice`` of ``"tie"`` (results from tools that offer one) is counted
apart: ties are reported, and left out of the win rate and of the binomial (sign) test, which
compare the decisive ratings only.
"""

import csv
import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from parlai_conkd.fileio import atomic_path, atomic_write
from parlai_conkd.human_eval.questions import key_of


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided binomial (sign) test of k successes in n trials against p = 1/2:
    ``scipy.stats.binomtest(k, n, 0.5).pvalue`` (the probability of an outcome at most as likely
    as k; with p = 1/2, 2 * P(X <= min(k, n - k)) capped at 1). No trials (n = 0): 1.0.
    Raises ValueError when k is not in 0..n."""
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f'k={k} outside 0..{n}')
    # scipy's import costs ~0.5 s: only when a test is run
    from scipy.stats import (
        binomtest,
    )

    return float(binomtest(k, n, 0.5).pvalue)


#: the ``speakerChoice`` of a rating that prefers neither side
TIE = 'tie'


def responses(records: Iterable[Dict]) -> List[Dict]:
    """One row per answered comparison (ACUTE's response rows); ``winner``/``loser`` are None for a tie."""
    rows = []
    for record in records:
        inputs = record['data']['inputs']
        outputs = record['data']['outputs']['final_data']
        for entry, answer in zip(inputs, outputs):
            specs, pairing = entry['task_specs'], entry['pairing_dict']
            onboarding = bool(specs.get('is_onboarding'))
            choice = answer['speakerChoice']
            speakers = sorted(pairing['speakers_to_eval'])
            tie = str(choice).lower() == TIE
            if not tie and choice not in speakers:
                raise ValueError(
                    f'unit {record.get("unit_id")} (worker {record["worker_id"]}): speakerChoice '
                    f'{choice!r} is neither of {speakers} nor {TIE!r}'
                )
            rows.append(
                {
                    'worker': record['worker_id'],
                    'unit_id': record.get('unit_id'),
                    'status': record.get('status', 'completed'),
                    'question': specs['question'],
                    'is_onboarding': onboarding,
                    'correct': (
                        (choice == pairing.get('correct_answer'))
                        if onboarding
                        else None
                    ),
                    'tie': tie,
                    'winner': None if tie else choice,
                    'loser': None if tie else speakers[1 - speakers.index(choice)],
                    'eval_choice_0': speakers[0],
                    'eval_choice_1': speakers[1],
                    'reason': answer.get('textReason', ''),
                    'pairing_id': entry['pair_id'],
                    'comparison': tuple(pairing.get('dialogue_ids') or ())
                    or entry['pair_id'],
                }
            )
    return rows


def first_ratings(rows: Sequence[Dict]):
    """Rows with only each rater's first rating of a comparison for a question; and how many were
    dropped. A comparison is known by its pairing's ``dialogue_ids`` (unique per model and
    context), else by its line in the pairings file."""
    kept, seen, dropped = [], set(), 0
    for r in rows:
        key = (r['worker'], r['question'], r['is_onboarding'], r['comparison'])
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(r)
    return kept, dropped


def failed_onboarding_workers(rows: Sequence[Dict]) -> set:
    return {
        r['worker']
        for r in rows
        if (r['is_onboarding'] and r['correct'] is False)
        or r['status'] == 'screened_out'
    }


@dataclass
class Matchup:
    question: str
    model_a: str
    model_b: str
    wins_a: int
    wins_b: int
    ties: int = 0

    @property
    def total(self) -> int:
        """Decisive ratings (ties are not counted)."""
        return self.wins_a + self.wins_b

    @property
    def win_rate_a(self) -> float:
        return self.wins_a / self.total if self.total else float('nan')

    @property
    def p_value(self) -> float:
        return binomial_two_sided_p(self.wins_a, self.total)

    @property
    def stars(self) -> str:
        p = self.p_value
        return '***' if p < 0.001 else '**' if p < 0.01 else '*' if p < 0.05 else ''

    def to_dict(self) -> Dict:
        d = asdict(self)
        d.update(
            question_key=key_of(self.question),
            total=self.total,
            win_rate_a=self.win_rate_a,
            p_value=self.p_value,
            significance=self.stars,
        )
        return d


def win_rates(records: Iterable[Dict], keep_failed: bool = False) -> List[Matchup]:
    rows, _ = first_ratings(responses(records))
    dropped = set() if keep_failed else failed_onboarding_workers(rows)
    # wins of eval_choice_0, of eval_choice_1, ties
    counts = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        if r['is_onboarding'] or r['worker'] in dropped:
            continue
        key = (r['question'], r['eval_choice_0'], r['eval_choice_1'])
        counts[key][
            2 if r['tie'] else 0 if r['winner'] == r['eval_choice_0'] else 1
        ] += 1
    return [Matchup(q, a, b, *c) for (q, a, b), c in sorted(counts.items())]


def markdown_table(matchups: Sequence[Matchup]) -> str:
    lines = [
        '| question | model A | model B | A wins | B wins | ties | n (decisive) | A win rate | p (binomial) |',
        '|---|---|---|---:|---:|---:|---:|---:|---:|',
    ]
    for m in matchups:
        rate = f'{m.win_rate_a:.1%}' if m.total else 'n/a'
        lines.append(
            f'| {key_of(m.question)} | {m.model_a} | {m.model_b} | {m.wins_a} | {m.wins_b} | {m.ties} '
            f'| {m.total} | {rate} | {m.p_value:.4g}{m.stars} |'
        )
    return '\n'.join(lines)


def write_reports(
    matchups: Sequence[Matchup], outdir: str, title: Optional[str] = None
) -> Dict[str, str]:
    """winrates.csv, winrates.json, winrates.md and winrates.png in ``outdir``; returns their paths."""
    if not matchups:
        raise ValueError(
            'no rated comparisons left to analyse (all onboarding, or all raters screened out)'
        )
    paths = {
        k: os.path.join(outdir, f'winrates.{k}') for k in ('csv', 'json', 'md', 'png')
    }
    rows = [m.to_dict() for m in matchups]
    with atomic_write(paths['csv'], newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_write(paths['json']) as f:
        json.dump(rows, f, indent=1)
    with atomic_write(paths['md']) as f:
        f.write(markdown_table(matchups) + '\n')
    with atomic_path(paths['png']) as tmp:
        plot(matchups, tmp, title)
    return paths


def plot(matchups: Sequence[Matchup], path: str, title: Optional[str] = None) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = [f'{key_of(m.question)}\n{m.model_a} vs {m.model_b}' for m in matchups]
    # of the decisive ratings; nan: ties only
    rates = [100 * m.win_rate_a for m in matchups]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.7 * len(matchups)))
    y = list(range(len(matchups)))
    a_part = [0 if math.isnan(r) else r for r in rates]
    b_part = [0 if math.isnan(r) else 100 - r for r in rates]
    ax.barh(y, a_part, color='#4c78a8', label='model A wins')
    ax.barh(y, b_part, left=a_part, color='#f58518', label='model B wins')
    ax.axvline(50, color='black', linewidth=0.8, linestyle='--')
    for yi, m, r in zip(y, matchups, rates):
        if math.isnan(r):
            ax.text(50, yi, 'ties only', va='center', ha='center', fontsize=9)
        else:
            ax.text(
                r / 2,
                yi,
                f'{r:.0f}%',
                va='center',
                ha='center',
                color='white',
                fontsize=9,
            )
        ties = f' ties={m.ties}' if m.ties else ''
        ax.text(
            101,
            yi,
            f'n={m.total}{ties} p={m.p_value:.3g}{m.stars}',
            va='center',
            fontsize=8,
        )
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 130)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel('win rate among decisive ratings (%)')
    ax.set_title(title or 'Human evaluation: pairwise win rates (exact binomial test)')
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format='png', dpi=120)
    plt.close(fig)
