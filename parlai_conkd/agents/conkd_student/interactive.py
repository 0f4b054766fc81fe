"""A person's chat with a ConKD generator (``parlai interactive -mf zoo:conkd/soft --show-recs 5
--show-gates true``, ``interactive_web``, or a Python session): :class:`InteractiveExplainMixin`
links what the person types to items (:mod:`parlai_conkd.linking`) and hands each generated reply
to :class:`ReplyExplainer`, which finds the top-k items (the model's own item distribution at the
reply's first item slot, and the recommendation teacher's ranking for the conversation so far) and
the per-token gate of the dialogue teacher; the reply shows them as text
(:mod:`parlai_conkd.formatting`) and carries the items as data (``recommendations``, see
docs/architecture.md).

Everything it calls on the agents is public: the generator's ``teacher_forced_scores``,
``item_token_ids``, ``item_index_of_token``, ``rec_token_id`` / ``gen_token_id``,
``in_interactive_mode()``; the teachers' ``item_log_probs``, ``linker`` and
``teacher_forced_log_probs``.
"""

from typing import Dict, List, Optional

from parlai_conkd.formatting import Explanation, display_token, item_record, top_k
from parlai_conkd.items import ItemCatalog
from parlai_conkd.linking import TitleLinker, describe_unlinked, make_linker


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
        'rec': (
            'rec_teacher',
            '--rec-teacher-file',
            'recommendation teacher',
            'no teacher ranking',
        ),
        'dial': (
            'dialogue_teacher',
            '--dialogue-teacher-file',
            'dialogue teacher',
            'no per-token gate',
        ),
    }

    def teacher(self, role: str):
        """The frozen 'rec' or 'dial' teacher, or None (the reason is kept as a note)."""
        if role in self._teachers:
            return self._teachers[role]
        attribute, option, name, missing = self._ROLES[role]
        # a student that loaded its teachers
        teacher = getattr(self.agent, attribute, None)
        if teacher is None:
            opt = self.agent.opt
            if not opt.get(option[2:].replace('-', '_')):
                self._teacher_notes[role] = (
                    f'no {option} recorded in this model: {missing}'
                )
            else:
                try:
                    teacher = self._load(role)
                except Exception as exc:  # chat must go on without it
                    first_line = (
                        str(exc).strip().splitlines() or [type(exc).__name__]
                    )[0]
                    self._teacher_notes[role] = (
                        f'{name} unavailable: {first_line[:300]}'
                    )
        self._teachers[role] = teacher
        return teacher

    def _load(self, role: str):
        from parlai_conkd.agents.frozen import load_frozen_teacher

        if role == 'rec':
            from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import (
                ConkdRecTeacherAgent,
            )

            return load_frozen_teacher(
                self.agent.opt,
                '--rec-teacher-file',
                ConkdRecTeacherAgent,
                {'conkd_rec_teacher'},
                self.agent.catalog,
                fetch=False,  # a chat never builds a teacher behind the user's back
            )[0]
        from parlai_conkd.agents.conkd_dialogue_teacher.conkd_dialogue_teacher import (
            ConkdDialogueTeacherAgent,
        )

        return load_frozen_teacher(
            self.agent.opt,
            '--dialogue-teacher-file',
            ConkdDialogueTeacherAgent,
            {'conkd_dialogue_teacher', 'conkd_student'},
            self.agent.catalog,
            fetch=False,
        )[0]

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
        ids = [
            int(t)
            for t in (
                pred[1:] if len(pred) and int(pred[0]) == agent.START_IDX else pred
            ).tolist()
        ]
        if agent.END_IDX in ids:
            # the end step is a place an item could be named
            ids = ids[: ids.index(agent.END_IDX) + 1]
        ids = ids or [agent.END_IDX]
        forced = _forced_batch(batch, ids)
        with torch.no_grad():
            scores = agent.teacher_forced_scores(forced)[0].float()  # [T, V]
        # [T, N]
        item_probs = torch.softmax(
            scores.index_select(-1, agent.item_token_ids), dim=-1
        )
        # [T]
        item_mass = (
            torch.softmax(scores, dim=-1).index_select(-1, agent.item_token_ids).sum(-1)
        )
        slots = [
            (t, agent.item_index_of_token[i])
            for t, i in enumerate(ids)
            if i in agent.item_index_of_token
        ]
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
        explanation.notes += [
            self._teacher_notes[r]
            for r in ('rec', 'dial')
            if r in self._teacher_notes
            and (r == 'rec' and self.k > 0 or r == 'dial' and self.show_gates)
        ]
        return explanation

    def _rank_with_teacher(self, rec, batch, explanation: Explanation) -> None:
        items = [list(x) for x in (batch.get('context_items') or [[]])][0]
        text = (batch.get('context_texts') or [''])[0]
        log_probs = rec.item_log_probs([items], texts=[text], exclude_context=True)[0]
        explanation.teacher_items = top_k(
            log_probs.exp().tolist(), self.k, exclude=items
        )
        explanation.context_items = items
        linker = getattr(rec, 'linker', None)
        if linker is not None:
            names = {}
            for name, context_id in linker.names.items():
                names.setdefault(context_id, ' '.join(name))
            explanation.context_entities = [
                names[c] for c in linker(text) if c in names
            ]

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
            tokens.append(
                display_token(agent.dict.ind2tok.get(token_id, '?'), agent.catalog)
            )
            kept.append(float(gate))
        return tokens, kept

    def display_catalog(self) -> ItemCatalog:
        """The catalog items are described from: the model's, or, when that one has no metadata
        (a model trained without the KG directory), the recommendation teacher's stored one
        (genre/director/stars; same items, same order: the fingerprints were checked).
        """
        catalog = self.agent.catalog
        rec = self._teachers.get('rec')
        if rec is not None and not any(item.metadata for item in catalog):
            return rec.catalog
        return catalog

    def decorate(self, text: str, max_chars: Optional[int] = None) -> str:
        """The reply text followed by the last explanation (for interactive display)."""
        if self.last is None:
            return text
        block = self.last.render(
            self.display_catalog(),
            self.agent.opt.get('gate', 'soft'),
            self.agent.opt.get('hard_gate_threshold', 0.5),
            None if max_chars is None else max(max_chars - len(text) - 1, 0),
        )
        return f'{text}\n{block}' if block else text


def _forced_batch(batch, ids):
    """``batch`` (its first example) with ``ids`` as the label, for teacher-forced passes."""
    import torch
    from parlai.core.torch_agent import Batch

    forced = Batch(**{k: v for k, v in batch.items()})
    forced['text_vec'] = batch.text_vec[:1]
    forced['label_vec'] = torch.tensor(
        [ids], dtype=torch.long, device=batch.text_vec.device
    )
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
        group = parser.add_argument_group(
            'ConKD interactive explanations (interactive mode only)'
        )
        group.add_argument(
            '--show-recs',
            type=int,
            default=0,
            help='after each reply, the top-K items of the model (at its item slot) and of the '
            'recommendation teacher (for the conversation so far), with metadata',
        )
        group.add_argument(
            '--show-gates',
            type='bool',
            default=False,
            help='show the dialogue teacher\'s item mass (the ConKD gate) per generated token',
        )
        group.add_argument(
            '--link-titles',
            type='bool',
            default=True,
            help='link "@<movieId>", "Title (Year)" and "Title" in typed messages to items',
        )
        return parser

    def explainer(self) -> ReplyExplainer:
        if getattr(self, '_reply_explainer', None) is None:
            self._reply_explainer = ReplyExplainer(
                self,
                k=int(self.opt.get('show_recs') or 0),
                show_gates=bool(self.opt.get('show_gates')),
            )
        return self._reply_explainer

    def title_linker(self) -> TitleLinker:
        """The linker of typed text in its measured configuration (:func:`parlai_conkd.linking.
        make_linker`: common words from English word frequencies, the same for every model).
        """
        if getattr(self, '_title_linker', None) is None:
            self._title_linker = make_linker(self.catalog)
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

        interactive = self.in_interactive_mode()
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
            if (
                'context_items' not in observation
                and observation.get('full_text') is not None
            ):
                observation.force_set(
                    'context_items',
                    self.catalog.items_in_text(observation['full_text']),
                )
            if observation.get('context_truncate_rate') and not self._truncation_said:
                self._truncation_said = True
                self._pending_notes.append(
                    f'note: this conversation is now longer than the model reads: it sees its last '
                    f'{self.text_truncate} tokens (--text-truncate); the recommendation teacher reads all '
                    'of it. Said once per conversation; [DONE] starts a new one.'
                )
        return observation

    def batchify(self, obs_batch, sort=False):
        batch = super().batchify(obs_batch, sort=sort)
        valid = batch.valid_indices if batch.valid_indices is not None else []
        batch['context_items'] = [
            list(obs_batch[i].get('context_items') or []) for i in valid
        ]
        batch['context_texts'] = [
            obs_batch[i].get('full_text') or obs_batch[i].get('text') or ''
            for i in valid
        ]
        return batch

    def _add_generation_metrics(self, batch, preds):
        # ParlAI's hook after generation, where the generated ids are at hand
        super()._add_generation_metrics(batch, preds)
        if self.in_interactive_mode():
            self._explanation = self.explainer().explain(batch, preds)

    def self_observe(self, self_message):
        from parlai.core.message import Message

        if (
            self.in_interactive_mode()
            and self_message is not None
            and self_message.get('text')
        ):
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
        context = list(
            (getattr(self, 'observation', None) or {}).get('context_items') or []
        )
        reply = super().act()
        if not self.in_interactive_mode() or reply is None or 'text' not in reply:
            return reply
        text = reply['text'] if reply['text'].strip() else empty_reply_text()
        lines = (
            [text]
            + self._understood_lines()
            + [f'({note})' for note in self._pending_notes]
        )
        self._pending_notes = []
        text = '\n'.join(lines)
        explanation = getattr(self, '_explanation', None)
        if explanation is not None:
            if self.explainer().k > 0 or self.explainer().show_gates:
                text = self.explainer().decorate(text, DISPLAY_CHARS)
            reply.force_set(
                'recommendations',
                [
                    item_record(self.catalog[i], p, new=i not in context)
                    for i, p in explanation.named
                ],
            )
            if self.explainer().k > 0:
                reply.force_set(
                    'item_rankings',
                    {
                        'model': [
                            item_record(self.catalog[i], p)
                            for i, p in explanation.student_items
                        ],
                        'model_position': explanation.position,
                        'model_position_names_item': explanation.position_names_item,
                        'rec_teacher': [
                            item_record(self.catalog[i], p)
                            for i, p in explanation.teacher_items
                        ],
                        'rec_teacher_read': {
                            'items': [
                                item_record(self.catalog[i])
                                for i in explanation.context_items
                            ],
                            'entities': list(explanation.context_entities),
                        },
                    },
                )
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
                shown.append(
                    item.display + (f' ({link.surface})' if link.rule == 'id' else '')
                )
            lines.append('understood: ' + ', '.join(dict.fromkeys(shown)))
        notes = [describe_unlinked(u, self.catalog) for u in result.unlinked]
        lines += [f'not linked: {note}' for note in notes if note]
        return lines
