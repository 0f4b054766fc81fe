"""Win rates per question and model pair, with exact two-sided binomial tests, as ACUTE-Eval reports.

Reads stored units (ACUTE result shape, see ``units``), flattens them into one response per
comparison as ACUTE's ``AcuteAnalyzer._extract_response_by_index`` does, drops onboarding
comparisons and every rater who answered any onboarding comparison wrongly (its
``_remove_failed_onboarding``), then counts wins per (question, sorted model pair).
"""
import csv
import json
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence

from parlai_conkd.human_eval.files import atomic_write
from parlai_conkd.human_eval.questions import key_of


def binomial_two_sided_p(k: int, n: int) -> float:
    """Exact two-sided binomial test of k successes in n trials against p = 1/2.

    With p = 1/2 the distribution is symmetric, so the two-sided p-value (the probability of an
    outcome at most as likely as k) is 2 * P(X <= min(k, n - k)), capped at 1; this equals
    ``scipy.stats.binomtest(k, n).pvalue``.
    """
    if n <= 0:
        return 1.0
    if not 0 <= k <= n:
        raise ValueError(f'k={k} outside 0..{n}')
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def responses(records: Iterable[Dict]) -> List[Dict]:
    """One row per answered comparison (ACUTE's response rows)."""
    rows = []
    for record in records:
        inputs = record['data']['inputs']
        outputs = record['data']['outputs']['final_data']
        for entry, answer in zip(inputs, outputs):
            specs, pairing = entry['task_specs'], entry['pairing_dict']
            onboarding = bool(specs.get('is_onboarding'))
            choice = answer['speakerChoice']
            speakers = sorted(pairing['speakers_to_eval'])
            rows.append({
                'worker': record['worker_id'],
                'unit_id': record.get('unit_id'),
                'status': record.get('status', 'completed'),
                'question': specs['question'],
                'is_onboarding': onboarding,
                'correct': (choice == pairing.get('correct_answer')) if onboarding else None,
                'winner': choice,
                'loser': speakers[1 - speakers.index(choice)],
                'eval_choice_0': speakers[0],
                'eval_choice_1': speakers[1],
                'reason': answer.get('textReason', ''),
                'pairing_id': entry['pair_id'],
            })
    return rows


def failed_onboarding_workers(rows: Sequence[Dict]) -> set:
    return {r['worker'] for r in rows
            if (r['is_onboarding'] and r['correct'] is False) or r['status'] == 'screened_out'}


@dataclass
class Matchup:
    question: str
    model_a: str
    model_b: str
    wins_a: int
    wins_b: int

    @property
    def total(self) -> int:
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
        d.update(question_key=key_of(self.question), total=self.total,
                 win_rate_a=self.win_rate_a, p_value=self.p_value, significance=self.stars)
        return d


def win_rates(records: Iterable[Dict], keep_failed: bool = False) -> List[Matchup]:
    rows = responses(records)
    dropped = set() if keep_failed else failed_onboarding_workers(rows)
    wins = defaultdict(lambda: [0, 0])
    for r in rows:
        if r['is_onboarding'] or r['worker'] in dropped:
            continue
        key = (r['question'], r['eval_choice_0'], r['eval_choice_1'])
        wins[key][0 if r['winner'] == r['eval_choice_0'] else 1] += 1
    return [Matchup(q, a, b, w[0], w[1]) for (q, a, b), w in sorted(wins.items())]


def markdown_table(matchups: Sequence[Matchup]) -> str:
    lines = ['| question | model A | model B | A wins | B wins | n | A win rate | p (binomial) |',
             '|---|---|---|---:|---:|---:|---:|---:|']
    for m in matchups:
        lines.append(f'| {key_of(m.question)} | {m.model_a} | {m.model_b} | {m.wins_a} | {m.wins_b} '
                     f'| {m.total} | {m.win_rate_a:.1%} | {m.p_value:.4g}{m.stars} |')
    return '\n'.join(lines)


def write_reports(matchups: Sequence[Matchup], outdir: str, title: Optional[str] = None) -> Dict[str, str]:
    """winrates.csv, winrates.json, winrates.md and winrates.png in ``outdir``; returns their paths."""
    if not matchups:
        raise ValueError('no rated comparisons left to analyse (all onboarding, or all raters screened out)')
    paths = {k: os.path.join(outdir, f'winrates.{k}') for k in ('csv', 'json', 'md', 'png')}
    rows = [m.to_dict() for m in matchups]

    def write_csv(tmp):
        with open(tmp, 'w', newline='', encoding='utf-8') as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)

    def write_json(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(rows, f, indent=1)

    def write_md(tmp):
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(markdown_table(matchups) + '\n')

    atomic_write(paths['csv'], write_csv)
    atomic_write(paths['json'], write_json)
    atomic_write(paths['md'], write_md)
    atomic_write(paths['png'], lambda tmp: plot(matchups, tmp, title))
    return paths


def plot(matchups: Sequence[Matchup], path: str, title: Optional[str] = None) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    labels = [f'{key_of(m.question)}\n{m.model_a} vs {m.model_b}' for m in matchups]
    rates = [100 * m.win_rate_a for m in matchups]
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.7 * len(matchups)))
    y = list(range(len(matchups)))
    ax.barh(y, rates, color='#4c78a8', label='model A wins')
    ax.barh(y, [100 - r for r in rates], left=rates, color='#f58518', label='model B wins')
    ax.axvline(50, color='black', linewidth=0.8, linestyle='--')
    for yi, m, r in zip(y, matchups, rates):
        ax.text(r / 2, yi, f'{r:.0f}%', va='center', ha='center', color='white', fontsize=9)
        ax.text(101, yi, f'n={m.total} p={m.p_value:.3g}{m.stars}', va='center', fontsize=8)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 130)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel('win rate (%)')
    ax.set_title(title or 'Human evaluation: pairwise win rates (exact binomial test)')
    ax.legend(loc='lower right', fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format='png', dpi=120)
    plt.close(fig)
