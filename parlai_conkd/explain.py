"""What a ConKD model recommends and which teacher taught each token: text for people, and pictures.

Used in two places:

* ``parlai interactive -mf zoo:conkd/soft --show-recs 5 --show-gates true`` (and ``interactive_web``,
  or a Python session): :class:`InteractiveExplainMixin` links what the person types to items
  (:mod:`parlai_conkd.linking`) and hands each generated reply to :class:`ReplyExplainer`, which
  appends the top-k items (the student's own item distribution at the reply's first item slot,
  and the recommendation teacher's ranking for the conversation so far) with their metadata, and
  the per-token gate of the dialogue teacher; the reply message carries the items as data.
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

from parlai_conkd.items import DISPLAY_METADATA, ITEM_TOKEN_RE, Item, ItemCatalog
from parlai_conkd.linking import TitleLinker, describe_unlinked, make_linker

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


def format_ranking(title: str, ranking: Sequence[Tuple[int, float]], catalog: ItemCatalog,
                   detail: str = 'full') -> List[str]:
    """The title line, then '   1.   5.90%  It (2017) - genre: ...' per item. ``detail`` (one of
    :data:`DETAIL_LEVELS`): metadata with up to 3 people, with 1, only for the first item, none."""
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

    def render(self, catalog: ItemCatalog, gate_kind: str, threshold: float,
               max_chars: Optional[int] = None) -> str:
        """The text block. With ``max_chars``, the most detailed form that fits, instead of a
        block cut in the middle: metadata with fewer people, then metadata only for the named
        items and each list's first, then titles only, then fewer gated tokens, then fewer rows."""
        rows = max(len(self.student_items), len(self.teacher_items))
        attempts = [(detail, MAX_GATE_TOKENS, rows) for detail in DETAIL_LEVELS]
        attempts += [('titles', gates, rows) for gates in (MAX_GATE_TOKENS // 2, MAX_GATE_TOKENS // 4, 0)]
        attempts += [('titles', 0, r) for r in range(rows - 1, 0, -1)]
        for detail, gates, shown in attempts:
            text = self._render(catalog, gate_kind, threshold, detail, gates, shown)
            if max_chars is None or len(text) <= max_chars:
                break
        return text

    def _render(self, catalog, gate_kind, threshold, detail: str, gate_tokens: int, rows: int) -> str:
        people = MAX_PEOPLE if detail == 'full' else 1
        lines = []
        if self.named:
            lines.append('named in this reply:')
            lines += [f'  {prob:7.2%}  {describe_item(catalog[index], people)}' for index, prob in self.named]
        if self.student_items:
            where = ('at its first item slot' if self.position_names_item else
                     f'at token {self.position}, where it most likely names one' if self.position else
                     'at its first token')
            lines += format_ranking(f'top items (this model, {where}):', self.student_items[:rows], catalog, detail)
        if self.teacher_items:
            lines += format_ranking('top items (recommendation teacher, for the conversation so far):',
                                    self.teacher_items[:rows], catalog, detail)
            read = [catalog[i].display for i in self.context_items] + self.context_entities
            lines.append('  (it read: ' + ('; '.join(read) if read else 'nothing yet: no item or KG entity named') + ')')
        if self.student_items and self.teacher_items:
            both = self.agreement()
            lines.append(f'agreement: {len(both)} of the top {len(self.student_items)} in both lists'
                         + (f' ({", ".join(catalog[i].display for i in both)})' if both else ''))
        if self.gates:
            lines.append(f'gate per token (dialogue teacher\'s item mass; {gate_kind} gate'
                         + (f', rec teacher where > {threshold:g}' if gate_kind == 'hard' else '') + '):')
            lines.append('  ' + format_gates(self.tokens, self.gates, gate_kind, threshold, gate_tokens))
        if rows < max(len(self.student_items), len(self.teacher_items)):
            lines.append(f'(lists cut to {rows} to fit the display; all in the reply\'s item_rankings)')
        lines += [f'({note})' for note in self.notes]
        return '\n'.join(lines)


def item_record(item: Item, score: Optional[float] = None, **extra) -> Dict:
    """An item as message data: ``{'movie_id', 'title', 'year', 'index', 'score', ...}``."""
    record = {'movie_id': item.movie_id, 'title': item.title, 'year': item.year, 'index': item.index}
    if score is not None:
        record['score'] = round(float(score), 6)
    record.update(extra)
    return record


class ReplyExplainer:
    """Computes :class:`Explanation` s for a generator agent of this project (student or teacher).

    ``agent``: a :class:`ConkdDialogueTeacherAgent` (the student is one); everything it calls on
    it is public (``teacher_forced_scores``, ``item_token_ids``, ``item_index_of_token``, the flag
    ids). The teachers are loaded lazily from the agent's ``--rec-teacher-file`` (for ``k > 0``)
    and ``--dialogue-teacher-file`` (for the gates); without them the explanation says so and
    shows what it can.
    """

    def __init__(self, agent, k: int = 5, show_gates: bool = False):
        self.agent = agent
        self.k = k
        self.show_gates = show_gates
        self._teachers: Dict[str, object] = {}
        self._teacher_notes: Dict[str, str] = {}
        self.last: Optional[Explanation] = None

    # ---------------------------------------------------------------- teachers
    _ROLES = {
        'rec': ('rec_teacher', '--rec-teacher-file', 'recommendation teacher', 'no teacher ranking'),
        'dial': ('dialogue_teacher', '--dialogue-teacher-file', 'dialogue teacher', 'no per-token gate'),
    }

    def teacher(self, role: str):
        """The frozen 'rec' or 'dial' teacher, or None (the reason is kept as a note)."""
        if role in self._teachers:
            return self._teachers[role]
        attribute, option, name, missing = self._ROLES[role]
        teacher = getattr(self.agent, attribute, None)  # a student that loaded its teachers
        if teacher is None:
            opt = self.agent.opt
            if not opt.get(option[2:].replace('-', '_')):
                self._teacher_notes[role] = f'no {option} recorded in this model: {missing}'
            else:
                try:
                    teacher = self._load(role)
                except Exception as exc:  # chat must go on without it
                    first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    self._teacher_notes[role] = f'{name} unavailable: {first_line[:300]}'
        self._teachers[role] = teacher
        return teacher

    def _load(self, role: str):
        from parlai_conkd.agents.frozen import load_frozen_teacher

        if role == 'rec':
            from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import ConkdRecTeacherAgent

            return load_frozen_teacher(self.agent.opt, '--rec-teacher-file', ConkdRecTeacherAgent,
                                       {'conkd_rec_teacher'}, self.agent.catalog)[0]
        from parlai_conkd.agents.conkd_dialogue_teacher.conkd_dialogue_teacher import ConkdDialogueTeacherAgent

        return load_frozen_teacher(self.agent.opt, '--dialogue-teacher-file', ConkdDialogueTeacherAgent,
                                   {'conkd_dialogue_teacher', 'conkd_student'}, self.agent.catalog)[0]

    # ---------------------------------------------------------------- per reply
    def explain(self, batch, preds) -> Explanation:
        """Explanation of the first reply of a generation batch (interactive batches hold one).

        One teacher-forced pass of the model over its own reply gives, at every reply step, its
        distribution over items: the probability of each item it names, and its top-k at the
        reply's first item slot, or, for a reply naming no item, at the step where it puts the
        most probability on item tokens (where it would most likely name one). The recommendation
        teacher ranks the items for the conversation so far: the items named by either side
        (``batch.context_items``) and the KG genres/people named in its text (``batch.context_texts``).
        """
        import torch

        agent = self.agent
        explanation = Explanation()
        self.last = explanation
        if not preds:
            return explanation
        pred = preds[0]
        ids = [int(t) for t in (pred[1:] if len(pred) and int(pred[0]) == agent.START_IDX else pred).tolist()]
        if agent.END_IDX in ids:
            ids = ids[: ids.index(agent.END_IDX) + 1]  # the end step is a place an item could be named
        ids = ids or [agent.END_IDX]
        forced = _forced_batch(batch, ids)
        with torch.no_grad():
            scores = agent.teacher_forced_scores(forced)[0].float()  # [T, V]
        item_probs = torch.softmax(scores.index_select(-1, agent.item_token_ids), dim=-1)  # [T, N]
        item_mass = torch.softmax(scores, dim=-1).index_select(-1, agent.item_token_ids).sum(-1)  # [T]
        slots = [(t, agent.item_index_of_token[i]) for t, i in enumerate(ids) if i in agent.item_index_of_token]
        seen = set()
        for t, index in slots:
            if index not in seen:
                seen.add(index)
                explanation.named.append((index, float(item_probs[t, index])))
        if self.k > 0:
            if slots:
                position, explanation.position_names_item = slots[0][0], True
            else:  # step 0 predicts the [REC]/[GEN] flag, not a word
                position = int(item_mass[1:].argmax()) + 1 if len(ids) > 1 else 0
            explanation.position = position
            explanation.student_items = top_k(item_probs[position].tolist(), self.k)
            rec = self.teacher('rec')
            if rec is not None:
                self._rank_with_teacher(rec, batch, explanation)
        if self.show_gates:
            dial = self.teacher('dial')
            if dial is not None:
                explanation.tokens, explanation.gates = self._gates(dial, forced, ids)
                if not explanation.tokens:
                    explanation.notes.append('no generated tokens to show a gate for')
        explanation.notes += [self._teacher_notes[r] for r in ('rec', 'dial') if r in self._teacher_notes
                              and (r == 'rec' and self.k > 0 or r == 'dial' and self.show_gates)]
        return explanation

    def _rank_with_teacher(self, rec, batch, explanation: Explanation) -> None:
        items = [list(x) for x in (batch.get('context_items') or [[]])][0]
        text = (batch.get('context_texts') or [''])[0]
        log_probs = rec.item_log_probs([items], texts=[text], exclude_context=True)[0]
        explanation.teacher_items = top_k(log_probs.exp().tolist(), self.k, exclude=items)
        explanation.context_items = items
        linker = getattr(rec, 'linker', None)
        if linker is not None:
            names = {}
            for name, context_id in linker.names.items():
                names.setdefault(context_id, ' '.join(name))
            explanation.context_entities = [names[c] for c in linker(text) if c in names]

    def _gates(self, dial, forced, ids):
        """Dialogue teacher's item mass at each generated token (teacher-forced on the reply)."""
        agent = self.agent
        out = dial.teacher_forced_log_probs(forced)
        gates = out.item_mass[0].tolist()
        skip = {agent.rec_token_id, agent.gen_token_id, agent.END_IDX}
        tokens, kept = [], []
        for token_id, gate in zip(ids, gates):
            if token_id in skip:
                continue
            tokens.append(display_token(agent.dict.ind2tok.get(token_id, '?'), agent.catalog))
            kept.append(float(gate))
        return tokens, kept

    def display_catalog(self) -> ItemCatalog:
        """The catalog items are described from: the model's, or, when that one has no metadata
        (a model trained without the KG directory), the recommendation teacher's stored one
        (genre/director/stars; same items, same order: the fingerprints were checked)."""
        catalog = self.agent.catalog
        rec = self._teachers.get('rec')
        if rec is not None and not any(item.metadata for item in catalog):
            return rec.catalog
        return catalog

    def decorate(self, text: str, max_chars: Optional[int] = None) -> str:
        """The reply text followed by the last explanation (for interactive display)."""
        if self.last is None:
            return text
        block = self.last.render(self.display_catalog(), self.agent.opt.get('gate', 'soft'),
                                 self.agent.opt.get('hard_gate_threshold', 0.5),
                                 None if max_chars is None else max(max_chars - len(text) - 1, 0))
        return f'{text}\n{block}' if block else text


def _forced_batch(batch, ids):
    """``batch`` (its first example) with ``ids`` as the label, for teacher-forced passes."""
    import torch
    from parlai.core.torch_agent import Batch

    forced = Batch(**{k: v for k, v in batch.items()})
    forced['text_vec'] = batch.text_vec[:1]
    forced['label_vec'] = torch.tensor([ids], dtype=torch.long, device=batch.text_vec.device)
    return forced


def empty_reply_text() -> str:
    return '(no reply: the model generated an empty response; try another message)'


#: ``parlai interactive`` shows at most this many characters of a reply (ParlAI 1.7.2,
#: parlai/utils/misc.py display_messages, max_len=1000) and cuts the middle out of longer ones;
#: the explanation is fitted under it instead.
DISPLAY_CHARS = 1000


class InteractiveExplainMixin:
    """A person's chat with this project's generators; put it first among the agent's bases.

    In interactive mode (``parlai interactive``, ``parlai interactive_web``, or a Python session
    with ``interactive_mode: True``), through ParlAI's public agent hooks only:

    * ``observe``: the typed text is linked (``--link-titles``, :mod:`parlai_conkd.linking`):
      ``@<movieId>``, "Title (Year)" and "Title" become item tokens in the model's history; the
      observation gets ``context_items``, every item named so far by either side;
    * ``batchify``: the batch carries each example's ``context_items`` and history text
      (``context_texts``), which the recommendation teacher reads;
    * ``self_observe``: the model's own reply enters its history with item tokens, not titles;
    * ``act``: the reply shows items as "Title (Year)", then what was understood of the typed
      message ("understood: The Shining (1980)"), a note the first time in a conversation that the
      model reads only the last ``--text-truncate`` tokens, and with ``--show-recs K`` /
      ``--show-gates true`` the explanation (:class:`Explanation`). The reply message carries the
      items as data: ``recommendations`` (the items the reply names, see :meth:`act`) and, with
      ``--show-recs``, ``item_rankings``;
    * an empty message is read as the silence token; an empty reply is shown as a short note;
      ``reset()`` ([DONE] in ``parlai interactive``) starts a new conversation.
    Outside interactive mode (train/eval) it changes nothing.
    """

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('ConKD interactive explanations (interactive mode only)')
        group.add_argument('--show-recs', type=int, default=0,
                           help='after each reply, the top-K items of the model (at its item slot) and of the '
                           'recommendation teacher (for the conversation so far), with metadata')
        group.add_argument('--show-gates', type='bool', default=False,
                           help='show the dialogue teacher\'s item mass (the ConKD gate) per generated token')
        group.add_argument('--link-titles', type='bool', default=True,
                           help='link "@<movieId>", "Title (Year)" and "Title" in typed messages to items')
        return parser

    def _in_interactive(self) -> bool:
        return bool(getattr(self, '_interactive', False) or self.opt.get('interactive_mode'))

    def explainer(self) -> ReplyExplainer:
        if getattr(self, '_reply_explainer', None) is None:
            self._reply_explainer = ReplyExplainer(self, k=int(self.opt.get('show_recs') or 0),
                                                   show_gates=bool(self.opt.get('show_gates')))
        return self._reply_explainer

    def title_linker(self) -> TitleLinker:
        """The linker of typed text, in its measured configuration (chat word counts from this
        model's dictionary when it has them, see :func:`parlai_conkd.linking.make_linker`)."""
        if getattr(self, '_title_linker', None) is None:
            freq = getattr(self.dict, 'freq', None) if not getattr(self, 'is_hf', False) else None
            counts = {w: c for w, c in (freq or {}).items() if not w.startswith('__') and w[:1] != '['}
            self._title_linker = make_linker(self.catalog, counts)
        return self._title_linker

    # ---------------------------------------------------------------- conversation state
    def _new_conversation(self) -> None:
        self._truncation_said = False
        self._pending_notes = []
        self._understood = None
        self._explanation = None

    def reset(self):
        super().reset()
        self._new_conversation()

    # ---------------------------------------------------------------- hooks
    def observe(self, observation):
        from parlai.core.message import Message

        interactive = self._in_interactive()
        if interactive:
            if getattr(self, 'observation', None) is None:
                # the first message, or the first after an episode_done one (ParlAI then cleared
                # the history and its last observation)
                self._new_conversation()
            self._understood = self._explanation = None
        if interactive and 'text' in observation:
            text = observation['text'] or ''
            if not text.strip():
                # ParlAI would reply without text and then fail on it; ReDial's convention for
                # "the seeker said nothing" is the silence token
                text = '__SILENCE__'
            elif self.opt.get('link_titles', True):
                self._understood = self.title_linker()(text)
                text = self._understood.text
            if text != observation['text']:
                observation = Message(observation)
                observation.force_set('text', text)
        observation = super().observe(observation)
        if interactive and observation is not None:
            if 'context_items' not in observation and observation.get('full_text') is not None:
                observation.force_set('context_items', self.catalog.items_in_text(observation['full_text']))
            if observation.get('context_truncate_rate') and not self._truncation_said:
                self._truncation_said = True
                self._pending_notes.append(
                    f'note: this conversation is now longer than the model reads: it sees its last '
                    f'{self.text_truncate} tokens (--text-truncate); the recommendation teacher reads all '
                    'of it. Said once per conversation; [DONE] starts a new one.')
        return observation

    def batchify(self, obs_batch, sort=False):
        batch = super().batchify(obs_batch, sort=sort)
        valid = batch.valid_indices if batch.valid_indices is not None else []
        batch['context_items'] = [list(obs_batch[i].get('context_items') or []) for i in valid]
        batch['context_texts'] = [obs_batch[i].get('full_text') or obs_batch[i].get('text') or '' for i in valid]
        return batch

    def _add_generation_metrics(self, batch, preds):
        # ParlAI's hook after generation, where the generated ids are at hand
        super()._add_generation_metrics(batch, preds)
        if self._in_interactive():
            self._explanation = self.explainer().explain(batch, preds)

    def self_observe(self, self_message):
        from parlai.core.message import Message

        if self._in_interactive() and self_message is not None and self_message.get('text'):
            self_message = Message(self_message)
            self_message.force_set('text', self._history_form(self_message['text']))
        super().self_observe(self_message)

    def _history_form(self, text: str) -> str:
        """The reply as the model's history holds it: its items as item tokens, not titles."""
        explanation = getattr(self, '_explanation', None)
        items = [self.catalog[i] for i, _ in explanation.named] if explanation else []
        for item in sorted(items, key=lambda it: -len(it.display)):
            text = text.replace(item.display, item.token)
        return text

    def act(self):
        """ParlAI's reply, for people and programs. ``reply['recommendations']``: the items the
        reply names, in order, each ``{'movie_id', 'title', 'year', 'index', 'score', 'new'}``
        (``score``: the model's probability of that item among all items where the reply names
        it; ``new``: not named before in the conversation); empty when it names none. With
        ``--show-recs K``, ``reply['item_rankings']``: ``{'model': [...], 'model_position',
        'model_position_names_item', 'rec_teacher': [...], 'rec_teacher_read': {'items': [...],
        'entities': [...]}}``, the two top-K lists of the explanation."""
        context = list((getattr(self, 'observation', None) or {}).get('context_items') or [])
        reply = super().act()
        if not self._in_interactive() or reply is None or 'text' not in reply:
            return reply
        text = reply['text'] if reply['text'].strip() else empty_reply_text()
        lines = [text] + self._understood_lines() + [f'({note})' for note in self._pending_notes]
        self._pending_notes = []
        text = '\n'.join(lines)
        explanation = getattr(self, '_explanation', None)
        if explanation is not None:
            if self.explainer().k > 0 or self.explainer().show_gates:
                text = self.explainer().decorate(text, DISPLAY_CHARS)
            reply.force_set('recommendations', [
                item_record(self.catalog[i], p, new=i not in context) for i, p in explanation.named])
            if self.explainer().k > 0:
                reply.force_set('item_rankings', {
                    'model': [item_record(self.catalog[i], p) for i, p in explanation.student_items],
                    'model_position': explanation.position,
                    'model_position_names_item': explanation.position_names_item,
                    'rec_teacher': [item_record(self.catalog[i], p) for i, p in explanation.teacher_items],
                    'rec_teacher_read': {'items': [item_record(self.catalog[i]) for i in explanation.context_items],
                                         'entities': list(explanation.context_entities)},
                })
        reply.force_set('text', text)
        return reply

    def _understood_lines(self) -> List[str]:
        result = getattr(self, '_understood', None)
        if result is None:
            return []
        lines = []
        if result.links:
            shown = []
            for link in result.links:
                item = self.catalog[link.index]
                shown.append(item.display + (f' ({link.surface})' if link.rule == 'id' else ''))
            lines.append('understood: ' + ', '.join(dict.fromkeys(shown)))
        notes = [describe_unlinked(u, self.catalog) for u in result.unlinked]
        lines += [f'not linked: {note}' for note in notes if note]
        return lines


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
            if token_id in (teacher.rec_token_id, teacher.gen_token_id, teacher.END_IDX, teacher.NULL_IDX):
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
