"""What a ConKD reply recommends and which teacher taught each token, as plain text (no ParlAI,
no torch): item descriptions with metadata, top-k rankings, per-token gates, and
:class:`Explanation`, the data behind the panel shown under a reply in ``parlai interactive``
(computed by :mod:`parlai_conkd.agents.conkd_student.interactive`).

The gate of a response token is the dialogue teacher's item mass lambda_t (the probability it gives
to all item tokens at that step, teacher-forced), as in :mod:`parlai_conkd.distill`: the soft gate
mixes the teachers with weight lambda_t; the hard gate takes the recommendation teacher where
lambda_t exceeds ``--hard-gate-threshold`` and the dialogue teacher elsewhere.
"""

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from parlai_conkd.items import DISPLAY_METADATA, ITEM_TOKEN_RE, Item, ItemCatalog

#: Metadata shown for an item, in this order (from the catalog built with the redial-meta KG).
META_FIELDS = tuple(zip(DISPLAY_METADATA, ('genre', 'director', 'stars')))
MAX_PEOPLE = 3
#: How much metadata an item ranking shows, most first (see format_ranking).
DETAIL_LEVELS = ('full', 'short', 'first', 'titles')
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


def top_k(
    scores: Sequence[float], k: int, exclude: Sequence[int] = ()
) -> List[Tuple[int, float]]:
    """Indices and values of the k largest scores, best first, skipping ``exclude`` (ties: lower index)."""
    excluded = set(exclude)
    order = sorted(
        (i for i in range(len(scores)) if i not in excluded),
        key=lambda i: (-scores[i], i),
    )
    return [(i, float(scores[i])) for i in order[: max(k, 0)]]


def softmax(values: Sequence[float]) -> List[float]:
    if not values:
        return []
    peak = max(values)
    exps = [math.exp(v - peak) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def format_ranking(
    title: str,
    ranking: Sequence[Tuple[int, float]],
    catalog: ItemCatalog,
    detail: str = 'full',
) -> List[str]:
    """The title line, then '   1.   5.90%  It (2017) - genre: ...' per item. ``detail`` (one of
    :data:`DETAIL_LEVELS`): metadata with up to 3 people, with 1, only for the first item, none.
    """
    lines = [title]
    for rank, (index, prob) in enumerate(ranking, start=1):
        item = catalog[index]
        if detail == 'titles' or (detail == 'first' and rank > 1):
            shown = item.display
        else:
            shown = describe_item(item, MAX_PEOPLE if detail == 'full' else 1)
        lines.append(f'  {rank:>2}. {prob:7.2%}  {shown}')
    return lines


def hard_teacher(gate: float, threshold: float) -> str:
    """Which teacher the hard gate distils a token from."""
    return 'rec' if gate > threshold else 'dial'


def format_gates(
    tokens: Sequence[str],
    gates: Sequence[float],
    gate_kind: str,
    threshold: float,
    max_tokens: int = MAX_GATE_TOKENS,
) -> str:
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


# ---------------------------------------------------------------------------- explanations
@dataclass
class Explanation:
    """What one reply recommends and why, as data; :meth:`render` makes the text shown under it.

    Indices are catalog indices; probabilities are among all items (the item logits softmaxed).
    """

    #: the items the reply names, in order: (index, the model's probability of it where it names it)
    named: List[Tuple[int, float]] = field(default_factory=list)
    #: the model's own top-k at reply step ``position`` (see :meth:`ReplyExplainer.explain`)
    student_items: List[Tuple[int, float]] = field(default_factory=list)
    position: Optional[int] = None
    #: True when the reply names an item at ``position`` (its first item slot)
    position_names_item: bool = False
    #: the recommendation teacher's top-k for the conversation so far (context items excluded)
    teacher_items: List[Tuple[int, float]] = field(default_factory=list)
    #: what the recommendation teacher read: the items named so far, the KG entities in the text
    context_items: List[int] = field(default_factory=list)
    context_entities: List[str] = field(default_factory=list)
    tokens: List[str] = field(default_factory=list)
    gates: List[float] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def agreement(self) -> List[int]:
        """Items in both top-k lists, in the model's order."""
        teacher = {index for index, _ in self.teacher_items}
        return [index for index, _ in self.student_items if index in teacher]

    def render(
        self,
        catalog: ItemCatalog,
        gate_kind: str,
        threshold: float,
        max_chars: Optional[int] = None,
    ) -> str:
        """The text block. With ``max_chars``, the most detailed form that fits, instead of a
        block cut in the middle: metadata with fewer people, then metadata only for the named
        items and each list's first, then titles only, then fewer gated tokens, then fewer rows.
        """
        rows = max(len(self.student_items), len(self.teacher_items))
        attempts = [(detail, MAX_GATE_TOKENS, rows) for detail in DETAIL_LEVELS]
        attempts += [
            ('titles', gates, rows)
            for gates in (MAX_GATE_TOKENS // 2, MAX_GATE_TOKENS // 4, 0)
        ]
        attempts += [('titles', 0, r) for r in range(rows - 1, 0, -1)]
        for detail, gates, shown in attempts:
            text = self._render(catalog, gate_kind, threshold, detail, gates, shown)
            if max_chars is None or len(text) <= max_chars:
                break
        return text

    def _render(
        self, catalog, gate_kind, threshold, detail: str, gate_tokens: int, rows: int
    ) -> str:
        people = MAX_PEOPLE if detail == 'full' else 1
        lines = []
        if self.named:
            lines.append('named in this reply:')
            lines += [
                f'  {prob:7.2%}  {describe_item(catalog[index], people)}'
                for index, prob in self.named
            ]
        if self.student_items:
            where = (
                'at its first item slot'
                if self.position_names_item
                else (
                    f'at token {self.position}, where it most likely names one'
                    if self.position
                    else 'at its first token'
                )
            )
            lines += format_ranking(
                f'top items (this model, {where}):',
                self.student_items[:rows],
                catalog,
                detail,
            )
        if self.teacher_items:
            lines += format_ranking(
                'top items (recommendation teacher, for the conversation so far):',
                self.teacher_items[:rows],
                catalog,
                detail,
            )
            read = [
                catalog[i].display for i in self.context_items
            ] + self.context_entities
            lines.append(
                '  (it read: '
                + (
                    '; '.join(read)
                    if read
                    else 'nothing yet: no item or KG entity named'
                )
                + ')'
            )
        if self.student_items and self.teacher_items:
            both = self.agreement()
            lines.append(
                f'agreement: {len(both)} of the top {len(self.student_items)} in both lists'
                + (f' ({", ".join(catalog[i].display for i in both)})' if both else '')
            )
        if self.gates:
            lines.append(
                f'gate per token (dialogue teacher\'s item mass; {gate_kind} gate'
                + (
                    f', rec teacher where > {threshold:g}'
                    if gate_kind == 'hard'
                    else ''
                )
                + '):'
            )
            lines.append(
                '  '
                + format_gates(
                    self.tokens, self.gates, gate_kind, threshold, gate_tokens
                )
            )
        if rows < max(len(self.student_items), len(self.teacher_items)):
            lines.append(
                f'(lists cut to {rows} to fit the display; all in the reply\'s item_rankings)'
            )
        lines += [f'({note})' for note in self.notes]
        return '\n'.join(lines)


def item_record(item: Item, score: Optional[float] = None, **extra) -> Dict:
    """An item as message data: ``{'movie_id', 'title', 'year', 'index', 'score', ...}``."""
    record = {
        'movie_id': item.movie_id,
        'title': item.title,
        'year': item.year,
        'index': item.index,
    }
    if score is not None:
        record['score'] = round(float(score), 6)
    record.update(extra)
    return record
