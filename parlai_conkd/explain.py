"""What a ConKD model recommends and which teacher taught each token: text for people, and pictures.

Used in two places:

* ``parlai interactive -mf zoo:conkd/soft --show-recs 5 --show-gates true``: the student agent hands
  each generated reply to :class:`ReplyExplainer`, which appends the top-k items (the student's own
  item distribution at the reply's first item slot, and the recommendation teacher's ranking for
  the dialogue so far) with their metadata, and the per-token gate of the dialogue teacher.
* ``python -m parlai_conkd.explain plot-gates|plot-results ...``: PNG pictures (matplotlib).

The gate of a response token is the dialogue teacher's item mass lambda_t (the probability it gives
to all item tokens at that step, teacher-forced), as in :mod:`parlai_conkd.distill`: the soft gate
mixes the teachers with weight lambda_t; the hard gate takes the recommendation teacher where
lambda_t exceeds ``--hard-gate-threshold`` and the dialogue teacher elsewhere.
"""
import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from parlai_conkd.items import ITEM_TOKEN_RE, Item, ItemCatalog

#: Metadata shown for an item, in this order (from the catalog built with the redial-meta KG).
META_FIELDS = (('genre', 'genre'), ('director', 'director'), ('star', 'stars'))
MAX_PEOPLE = 3
#: Replies longer than this many tokens are shown gated up to here, then "...".
MAX_GATE_TOKENS = 60


# ---------------------------------------------------------------------------- text pieces
def describe_item(item: Item, max_people: int = MAX_PEOPLE) -> str:
    """'Title (Year) - genre: Drama, Crime; director: X; stars: A, B, C' (fields that are known)."""
    parts = []
    for key, label in META_FIELDS:
        values = item.metadata.get(key) if item.metadata else None
        if isinstance(values, str):
            values = [values]
        values = [str(v).strip() for v in (values or []) if str(v).strip()]
        if values:
            more = ', ...' if len(values) > max_people else ''
            parts.append(f'{label}: {", ".join(values[:max_people])}{more}')
    return item.display + (' - ' + '; '.join(parts) if parts else '')


def top_k(scores: Sequence[float], k: int, exclude: Sequence[int] = ()) -> List[Tuple[int, float]]:
    """Indices and values of the k largest scores, best first, skipping ``exclude`` (ties: lower index)."""
    excluded = set(exclude)
    order = sorted((i for i in range(len(scores)) if i not in excluded), key=lambda i: (-scores[i], i))
    return [(i, float(scores[i])) for i in order[:max(k, 0)]]


def softmax(values: Sequence[float]) -> List[float]:
    if not values:
        return []
    peak = max(values)
    exps = [math.exp(v - peak) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def format_ranking(title: str, ranking: Sequence[Tuple[int, float]], catalog: ItemCatalog) -> List[str]:
    lines = [title]
    for rank, (index, prob) in enumerate(ranking, start=1):
        lines.append(f'  {rank:>2}. {prob:7.2%}  {describe_item(catalog[index])}')
    return lines


def hard_teacher(gate: float, threshold: float) -> str:
    """Which teacher the hard gate distils a token from."""
    return 'rec' if gate > threshold else 'dial'


def format_gates(tokens: Sequence[str], gates: Sequence[float], gate_kind: str, threshold: float,
                 max_tokens: int = MAX_GATE_TOKENS) -> str:
    """'token[0.12] token[0.98:rec] ...': each token with lambda_t (and the hard gate's teacher)."""
    shown = []
    for token, gate in list(zip(tokens, gates))[:max_tokens]:
        tag = f'{gate:.2f}'
        if gate_kind == 'hard':
            tag += ':' + hard_teacher(gate, threshold)
        shown.append(f'{token}[{tag}]')
    if len(tokens) > max_tokens:
        shown.append(f'... ({len(tokens) - max_tokens} more tokens)')
    return ' '.join(shown)


def display_token(token: str, catalog: ItemCatalog) -> str:
    """An item token as its title (spaces kept visible as one unit), other tokens unchanged."""
    if ITEM_TOKEN_RE.fullmatch(token):
        return '<' + catalog.render(token) + '>'
    return token


def title_linker(catalog: ItemCatalog):
    """A function replacing 'Title (Year)' mentions typed by a person with item tokens.

    Only exact "Title (Year)" forms are linked (case-insensitive), the longest title ending right
    before each "(Year)": unambiguous, and what the model shows in its own replies.
    """
    import re

    by_name: Dict[str, str] = {}
    longest = 1
    for item in catalog:
        if item.year:
            key = f'{item.title} ({item.year})'.lower()
            by_name.setdefault(key, item.token)
            longest = max(longest, len(item.title.split()))
    year_re = re.compile(r'\((\d{4})\)')

    def link(text: str) -> str:
        out, cursor = [], 0
        for match in year_re.finditer(text):
            before = text[cursor:match.start()].rstrip()
            words = before.split(' ')
            for n in range(min(longest, len(words)), 0, -1):
                name = ' '.join(words[-n:]).strip()
                token = by_name.get(f'{name} {match.group(0)}'.lower()) if name else None
                if token:
                    out.append(before[: len(before) - len(name)] + token)
                    cursor = match.end()
                    break
        out.append(text[cursor:])
        return ''.join(out)

    return link


# ---------------------------------------------------------------------------- explanations
@dataclass
class Explanation:
    """Everything shown under one reply (all optional)."""

    student_items: List[Tuple[int, float]] = field(default_factory=list)
    teacher_items: List[Tuple[int, float]] = field(default_factory=list)
    tokens: List[str] = field(default_factory=list)
    gates: List[float] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def render(self, catalog: ItemCatalog, gate_kind: str, threshold: float) -> str:
        lines = []
        if self.student_items:
            lines += format_ranking('top items (this model, at its first item slot):', self.student_items, catalog)
        if self.teacher_items:
            lines += format_ranking('top items (recommendation teacher, for the dialogue so far):',
                                    self.teacher_items, catalog)
        if self.gates:
            lines.append(f'gate per token (dialogue teacher\'s item mass; {gate_kind} gate'
                         + (f', rec teacher where > {threshold:g}' if gate_kind == 'hard' else '') + '):')
            lines.append('  ' + format_gates(self.tokens, self.gates, gate_kind, threshold))
        lines += [f'({note})' for note in self.notes]
        return '\n'.join(lines)


class ReplyExplainer:
    """Computes :class:`Explanation` s for a generator agent of this project (student or teacher).

    ``agent``: a :class:`ConkdDialogueTeacherAgent` (the student is one). The teachers are loaded
    lazily from the agent's ``--dialogue-teacher-file`` / ``--rec-teacher-file`` when those exist;
    without them the explanation says so and shows what it can.
    """

    def __init__(self, agent, k: int = 5, show_gates: bool = False):
        self.agent = agent
        self.k = k
        self.show_gates = show_gates
        self._teachers = None
        self._teacher_note = None
        self.last: Optional[Explanation] = None

    # ---------------------------------------------------------------- teachers
    def teachers(self):
        """(dialogue_teacher, rec_teacher); either may be None (the reason is kept as a note)."""
        if self._teachers is None:
            self._teachers = (None, None)
            opt = self.agent.opt
            if not (opt.get('dialogue_teacher_file') or opt.get('rec_teacher_file')):
                self._teacher_note = 'no teacher files recorded in this model: no teacher ranking or gates'
                return self._teachers
            try:
                from parlai_conkd.agents.conkd_dialogue_teacher.conkd_dialogue_teacher import (
                    ConkdDialogueTeacherAgent,
                )
                from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import ConkdRecTeacherAgent
                from parlai_conkd.agents.frozen import load_frozen_teacher

                dial, _ = load_frozen_teacher(opt, '--dialogue-teacher-file', ConkdDialogueTeacherAgent,
                                              {'conkd_dialogue_teacher', 'conkd_student'}, self.agent.catalog)
                rec, _ = load_frozen_teacher(opt, '--rec-teacher-file', ConkdRecTeacherAgent,
                                             {'conkd_rec_teacher'}, self.agent.catalog)
                self._teachers = (dial, rec)
            except Exception as exc:  # interactive use must go on without them
                self._teacher_note = f'teachers unavailable: {exc}'
        return self._teachers

    # ---------------------------------------------------------------- per reply
    def explain(self, batch, preds) -> Explanation:
        """Explanation of the first reply of a generation batch (interactive batches hold one)."""
        import torch

        agent = self.agent
        explanation = Explanation()
        if not preds:
            return explanation
        pred = preds[0]
        targets = pred[1:] if len(pred) and int(pred[0]) == agent.START_IDX else pred
        response = agent._response_ids(pred)
        if self.k > 0:
            from parlai_conkd.metrics import first_item_slot

            slot = first_item_slot(targets.tolist(), agent.item_index_of_token)
            if slot is not None:
                with torch.no_grad():
                    scores = agent._slot_item_scores(batch, [pred], [slot])[0]
                probs = torch.softmax(scores.float(), dim=-1).tolist()
                explanation.student_items = top_k(probs, self.k)
            else:
                explanation.notes.append('the reply names no item')
        dial, rec = self.teachers() if (self.k > 0 or self.show_gates) else (None, None)
        obs = batch.observations[0] if batch.observations else {}
        history = obs.get('full_text') or obs.get('text') or ''
        context = agent.catalog.items_in_text(history)
        if rec is not None and self.k > 0:
            log_probs = rec.item_log_probs([context], texts=[history], exclude_context=True)[0]
            explanation.teacher_items = top_k(log_probs.exp().tolist(), self.k, exclude=context)
        if self.show_gates:
            if dial is not None and response:
                explanation.tokens, explanation.gates = self._gates(dial, batch, targets)
            elif dial is None:
                explanation.notes.append('no per-token gate without the dialogue teacher')
        if self._teacher_note:
            explanation.notes.append(self._teacher_note)
        self.last = explanation
        return explanation

    def _gates(self, dial, batch, targets):
        """Dialogue teacher's item mass at each generated token (teacher-forced on the reply)."""
        import torch
        from parlai.core.torch_agent import Batch

        agent = self.agent
        ids = [int(t) for t in targets.tolist()]
        if agent.END_IDX in ids:
            ids = ids[: ids.index(agent.END_IDX)]
        if not ids:
            return [], []
        forced = Batch(**{k: v for k, v in batch.items()})
        forced['label_vec'] = torch.tensor([ids], dtype=torch.long, device=batch.text_vec.device)
        forced['text_vec'] = batch.text_vec[:1]
        out = dial.teacher_forced_log_probs(forced)
        gates = out.item_mass[0].tolist()
        tokens, kept = [], []
        for token_id, gate in zip(ids, gates):
            if token_id in agent._flag_ids:
                continue
            tokens.append(display_token(agent.dict.ind2tok.get(token_id, '?'), agent.catalog))
            kept.append(float(gate))
        return tokens, kept

    def decorate(self, text: str) -> str:
        """The reply text followed by the last explanation (for interactive display)."""
        if self.last is None:
            return text
        block = self.last.render(self.agent.catalog, self.agent.opt.get('gate', 'soft'),
                                 self.agent.opt.get('hard_gate_threshold', 0.5))
        self.last = None
        return f'{text}\n{block}' if block else text


def empty_reply_text() -> str:
    return '(no reply: the model generated an empty response; try another message)'


class InteractiveExplainMixin:
    """Interactive niceties for this project's generators; put it first among the agent's bases.

    * ``--show-recs K``: after each reply, the top-K items (the model's item distribution at its
      first item slot, and the recommendation teacher's ranking) with genre/director/stars;
    * ``--show-gates true``: the dialogue teacher's item mass per generated token (the gate);
    * ``--link-titles true``: "Title (Year)" typed by the person becomes the item token, and the
      model's own rendered replies go back into its history as item tokens (so the next turn
      sees the items, not their titles as words);
    * an empty message is read as the silence token; an empty reply is shown as a short note.
    Outside interactive mode (train/eval) it changes nothing.
    """

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('ConKD interactive explanations (interactive mode only)')
        group.add_argument('--show-recs', type=int, default=0,
                           help='show the top-K recommended items with scores and metadata after each reply')
        group.add_argument('--show-gates', type='bool', default=False,
                           help='show the dialogue teacher\'s item mass (the ConKD gate) per generated token')
        group.add_argument('--link-titles', type='bool', default=True,
                           help='turn "Title (Year)" in typed messages into item tokens')
        return parser

    def _in_interactive(self) -> bool:
        return bool(getattr(self, '_interactive', False) or self.opt.get('interactive_mode'))

    def _explainer(self) -> Optional[ReplyExplainer]:
        if not self._in_interactive():
            return None
        k, gates = int(self.opt.get('show_recs') or 0), bool(self.opt.get('show_gates'))
        if k <= 0 and not gates:
            return None
        if getattr(self, '_reply_explainer', None) is None:
            self._reply_explainer = ReplyExplainer(self, k=k, show_gates=gates)
        return self._reply_explainer

    def _link(self, text: str) -> str:
        if getattr(self, '_title_linker', None) is None:
            self._title_linker = title_linker(self.catalog)
        return self._title_linker(text)

    def observe(self, observation):
        from parlai.core.message import Message

        if self._in_interactive() and 'text' in observation:
            text = observation['text'] or ''
            if not text.strip():
                # ParlAI would reply without text and then fail on it; ReDial's convention for
                # "the seeker said nothing" is the silence token
                text = '__SILENCE__'
            elif self.opt.get('link_titles', True):
                text = self._link(text)
            if text != observation['text']:
                observation = Message(observation)
                observation.force_set('text', text)
        return super().observe(observation)

    def self_observe(self, self_message):
        from parlai.core.message import Message

        if self._in_interactive() and self_message is not None and self_message.get('text'):
            self_message = Message(self_message)
            self_message.force_set('text', self._link(self_message['text']))
        return super().self_observe(self_message)

    def _add_generation_metrics(self, batch, preds):
        super()._add_generation_metrics(batch, preds)
        explainer = self._explainer()
        if explainer is not None:
            explainer.explain(batch, preds)

    def act(self):
        reply = super().act()
        if self._in_interactive() and reply is not None and 'text' in reply:
            text = reply['text'] if reply['text'].strip() else empty_reply_text()
            explainer = self._explainer()
            if explainer is not None:
                text = explainer.decorate(text)
            reply.force_set('text', text)
        return reply


# ---------------------------------------------------------------------------- pictures
@dataclass
class GatedResponse:
    """One response of a dialogue, for the gate picture."""

    context: str
    tokens: List[str]
    gates: List[float]


def gated_responses(model_file: str, datapath: str, fold: str = 'test', dialogue: int = 0,
                    max_turns: int = 6, overrides: Optional[Dict] = None) -> Tuple[List[GatedResponse], Dict]:
    """The gold responses of one ReDial dialogue with the dialogue teacher's gate per token.

    ``model_file``: a student (its ``--dialogue-teacher-file`` is used) or a dialogue teacher.
    Returns the responses and the student's opt (gate kind, threshold).
    """
    from parlai.core.agents import create_agent_from_model_file
    from parlai.core.build_data import modelzoo_path

    from parlai_conkd.tasks.redial_crs.build import load_episodes

    resolved = modelzoo_path(datapath, model_file)
    if not os.path.isfile(resolved + '.opt'):
        raise FileNotFoundError(f'-mf {model_file}: no ParlAI model at {resolved} (its .opt is missing)')
    with open(resolved + '.opt', encoding='utf-8') as f:
        saved = json.load(f)
    teacher_file = saved.get('dialogue_teacher_file') or resolved
    teacher_file = modelzoo_path(datapath, teacher_file)
    base = {'datapath': datapath, 'skip_generation': True, 'interactive_mode': False, 'no_cuda': True}
    base.update(overrides or {})
    teacher = create_agent_from_model_file(teacher_file, dict(base))
    task_opt = dict(saved, datapath=datapath, **(overrides or {}))
    episodes = load_episodes(task_opt, fold)
    if not 0 <= dialogue < len(episodes):
        raise IndexError(f'--dialogue {dialogue}: the {fold} fold has {len(episodes)} dialogues')
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
            if token_id in teacher._flag_ids or token_id in (teacher.END_IDX, teacher.NULL_IDX):
                continue
            tokens.append(display_token(teacher.dict.ind2tok.get(token_id, '?'), teacher.catalog))
            kept.append(float(gate))
        teacher.self_observe({'text': turn['text'], 'episode_done': False})
        out.append(GatedResponse(teacher.catalog.render(text), tokens, kept))
        if len(out) >= max_turns:
            break
    return out, saved


def plot_gates(responses: Sequence[GatedResponse], out: str, gate_kind: str = 'soft',
               threshold: float = 0.5, title: str = '') -> str:
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
        lines.append(('context', 'seeker: ' + ' '.join(r.context.split())[:width_chars]))
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

        ax.legend(handles=[Patch(color=rec_color, label=f'recommendation teacher (lambda > {threshold:g})'),
                           Patch(color=dial_color, label='dialogue teacher')],
                  loc='upper right', fontsize=8, frameon=False, ncol=2)
    else:
        bar = fig.colorbar(cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=cmap), ax=ax,
                           fraction=0.015, pad=0.01)
        bar.set_label('lambda_t (dialogue teacher\'s item mass) = weight of the rec teacher', fontsize=8)
    renderer = fig.canvas.get_renderer()
    to_data = ax.transData.inverted()
    gap = 0.006
    for y, (kind, payload) in enumerate(lines):
        if kind == 'context':
            ax.text(0, y, payload, fontsize=8, color='#555555', va='center', family='monospace')
            continue
        x = 0.0
        for token, gate in payload:
            if gate_kind == 'hard':
                face = rec_color if gate > threshold else dial_color
            else:
                face = cmap(gate)
            text_color = 'white' if (gate_kind == 'hard' or gate < 0.6) else 'black'
            box = ax.text(x, y, token, fontsize=8, family='monospace', va='center', color=text_color,
                          bbox=dict(boxstyle='round,pad=0.15', facecolor=face, edgecolor='none'))
            right = box.get_window_extent(renderer=renderer).x1
            x = to_data.transform((right, 0))[0] + gap
    ax.set_title(title or f'ConKD gate per response token ({gate_kind} gate)', fontsize=10, loc='left')
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
            entries = [dict(entry, model=name, metrics=entry.get('metrics') or entry.get('test'))
                       for name, entry in data['variants'].items() if isinstance(entry, dict)]
        else:
            entries = data.get('rows') if isinstance(data, dict) and 'rows' in data else [data]
        for n, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f'{path}: row {n} is not an object')
            metrics = entry.get('metrics') or entry.get('report')
            if not isinstance(metrics, dict):
                raise ValueError(f'{path}: row {n} has no "metrics" (or "report") object')
            name = entry.get('model') or entry.get('name') or entry.get('backbone') or \
                os.path.splitext(os.path.basename(path))[0]
            numeric = {k: float(v) for k, v in metrics.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            rows.append((str(name), numeric))
    return rows


def plot_results(rows: Sequence[Tuple[str, Dict[str, float]]], metrics: Sequence[str], out: str,
                 title: str = 'ConKD results') -> str:
    """PNG: one panel per metric, one bar per model (value printed on the bar)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metrics = [m for m in metrics if any(m in r for _, r in rows)]
    if not metrics:
        raise ValueError('none of the requested metrics is in the results')
    names = [name for name, _ in rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(3.0 * len(metrics), 5), 3.6), squeeze=False)
    palette = plt.rcParams['axes.prop_cycle'].by_key()['color']
    for ax, metric in zip(axes[0], metrics):
        values = [r.get(metric, float('nan')) for _, r in rows]
        bars = ax.bar(range(len(names)), values, color=[palette[i % len(palette)] for i in range(len(names))])
        for bar, value in zip(bars, values):
            if not math.isnan(value):
                ax.annotate(f'{value:.3g}', (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha='center', va='bottom', fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha='right', fontsize=7)
        ax.tick_params(axis='y', labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save_png(fig, out)


def _save_png(fig, out: str) -> str:
    import matplotlib.pyplot as plt

    directory = os.path.dirname(os.path.abspath(out))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f'.{os.path.basename(out)}.tmp.png')
    try:
        fig.savefig(tmp, dpi=130, bbox_inches='tight')
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


DEFAULT_RESULT_METRICS = ('recall@10', 'recall@50', 'rer@10', 'rer@50', 'item_ratio', 'dist-2', 'ppl')


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m parlai_conkd.explain',
                                     description='Pictures of ConKD models: gates per token, results table.')
    sub = parser.add_subparsers(dest='command', required=True)
    g = sub.add_parser('plot-gates', help='a dialogue\'s responses, each token coloured by its gate')
    g.add_argument('-mf', '--model-file', required=True, help='student (or dialogue teacher) model file or zoo: path')
    g.add_argument('-dp', '--datapath', default=None, help='ParlAI datapath (default: ParlAI\'s)')
    g.add_argument('--fold', default='test', choices=('train', 'valid', 'test'))
    g.add_argument('--dialogue', type=int, default=0, help='index of the dialogue in the fold')
    g.add_argument('--max-turns', type=int, default=6, help='responses shown')
    g.add_argument('--gate', default=None, choices=('none', 'static', 'soft', 'hard'),
                   help='colouring (default: the student\'s --gate)')
    g.add_argument('--redial-path', default=None)
    g.add_argument('--redial-meta-path', default=None)
    g.add_argument('--out', required=True, help='PNG file to write')
    r = sub.add_parser('plot-results', help='bar chart of a results table')
    r.add_argument('--results', nargs='+', required=True, help='results JSON file(s) (see load_results)')
    r.add_argument('--metrics', default=','.join(DEFAULT_RESULT_METRICS), help='comma-separated metrics')
    r.add_argument('--title', default='ConKD results')
    r.add_argument('--out', required=True, help='PNG file to write')
    args = parser.parse_args(argv)
    if args.command == 'plot-results':
        rows = load_results(args.results)
        print(plot_results(rows, [m.strip() for m in args.metrics.split(',') if m.strip()], args.out, args.title))
        return 0
    datapath = args.datapath
    if datapath is None:
        from parlai.core.params import ParlaiParser

        datapath = ParlaiParser(True, False).parse_args([])['datapath']
    overrides = {k: v for k, v in (('redial_path', args.redial_path), ('redial_meta_path', args.redial_meta_path)) if v}
    responses, saved = gated_responses(args.model_file, datapath, args.fold, args.dialogue, args.max_turns, overrides)
    kind = args.gate or saved.get('gate') or 'soft'
    title = f'{args.model_file}: {args.fold} dialogue {args.dialogue}, {kind} gate'
    print(plot_gates(responses, args.out, kind, float(saved.get('hard_gate_threshold', 0.5)), title))
    return 0


if __name__ == '__main__':
    sys.exit(main())
