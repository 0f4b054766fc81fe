"""The generators' response metrics: :class:`ResponseMetricsMixin` records them through ParlAI's
hooks, from the pure functions of :mod:`parlai_conkd.metrics`.

Per-response averages (ReR@k, item precision/F1, item ratio) are plain ``AverageMetric``s; Dist-n
needs a metric that merges n-gram sets across responses and batches
(:class:`DistinctNgramMetric`), and the "when" precision / recall / F1 one that sums counts
(:class:`BinaryDecisionMetric`).
"""

from typing import FrozenSet, List, Optional, Sequence, Tuple

import torch
from parlai.core.metrics import AverageMetric, Metric, SumMetric

from parlai_conkd.metrics import (
    DIST_NS,
    RER_KS,
    distinct_tokens,
    first_item_slot,
    generated_items,
    item_overlap,
    ngrams,
    precision_recall_f1,
    response_recall_at_k,
    when_counts,
)

from .real_steps import real_step_rows
from .world_log import ReplyItemScores, reply_logs


class BinaryDecisionMetric(Metric):
    """Precision, recall or F1 (``which``) of a binary decision from summed counts: each response
    adds its (tp, fp, fn), so the value is the corpus one, not a mean of per-response values.
    """

    __slots__ = ('_counts', '_which')

    def __init__(self, counts: Tuple[int, int, int], which: str):
        if which not in ('precision', 'recall', 'f1'):
            raise ValueError(f'which must be precision, recall or f1, not {which!r}')
        self._counts = tuple(int(c) for c in counts)
        self._which = which

    @classmethod
    def when(cls, names_item: bool, gold_names_new_item: bool, which: str):
        return cls(when_counts(names_item, gold_names_new_item), which)

    @property
    def macro_average(self) -> bool:
        return False

    def __add__(self, other):
        if other is None:
            return self
        return BinaryDecisionMetric(
            tuple(a + b for a, b in zip(self._counts, other._counts)), self._which
        )

    def value(self) -> float:
        value = precision_recall_f1(*self._counts)[self._which]
        return 0.0 if value is None else value


class DistinctNgramMetric(Metric):
    """Distinct n-grams over every response added so far.

    ``per_response=False``: distinct / all n-grams (``dist-n``, corpus ratio).
    ``per_response=True``: distinct n-grams / responses (``dist_crs-n``, KBRD/KGSF/CRSLab).
    """

    __slots__ = ('_grams', '_total', '_responses', '_per_response')

    def __init__(
        self,
        grams: FrozenSet[Tuple[str, ...]],
        total: int,
        responses: int,
        per_response: bool,
    ):
        self._grams = grams
        self._total = total
        self._responses = responses
        self._per_response = per_response

    @classmethod
    def of_response(
        cls, tokens: Sequence[str], n: int, per_response: bool
    ) -> 'DistinctNgramMetric':
        grams = ngrams(tokens, n)
        return cls(frozenset(grams), len(grams), 1, per_response)

    @property
    def macro_average(self) -> bool:
        return False

    def __add__(self, other):
        if other is None:
            return self
        return DistinctNgramMetric(
            self._grams | other._grams,
            self._total + other._total,
            self._responses + other._responses,
            self._per_response,
        )

    def value(self) -> float:
        denominator = self._responses if self._per_response else self._total
        return len(self._grams) / denominator if denominator else 0.0


def _average(value: Optional[float]) -> AverageMetric:
    """An undefined per-response value (e.g. precision of a reply naming no item) counts 0/0:
    it leaves the average unchanged but keeps the metric in every report."""
    return AverageMetric(0, 0) if value is None else AverageMetric(value)


class ResponseMetricsMixin:
    """The generators' response metrics (``tf_rer@k``, ReR@k, item P/R/F1, item ratio,
    ``rec_flag_acc``, Dist-n; definitions: :mod:`parlai_conkd.metrics`) and the per-example log
    (:mod:`.world_log`), through ParlAI's hooks ``compute_loss``, ``_add_generation_metrics``,
    ``eval_step`` and ``batchify`` (the gold items of each example).

    Needs from the agent: ``catalog``, ``item_token_ids``, ``item_index_of_token``, the flag ids,
    ``_unwrapped_model``, ``_encoder_input``, ``_pad_tensor``, ``is_hf``, ``in_interactive_mode``
    and ``rec_teacher_log_probs``.
    """

    def batchify(self, obs_batch, sort=False):
        """ParlAI's batch + ``gold_new_items`` and ``gold_label_items`` (one list per valid
        example, None when unknown)."""
        batch = super().batchify(obs_batch, sort=sort)
        valid = batch.valid_indices if batch.valid_indices is not None else []
        batch['gold_new_items'] = [self._gold_new_items(obs_batch[i]) for i in valid]
        batch['gold_label_items'] = [
            self._gold_label_items(obs_batch[i]) for i in valid
        ]
        return batch

    def compute_loss(self, batch, return_output=False):
        """ParlAI's NLL; in evaluation also ``tf_rer@k`` from the same teacher-forced scores."""
        loss, model_output = super().compute_loss(batch, return_output=True)
        if (
            not self._unwrapped_model().training
            and batch.get('gold_new_items') is not None
        ):
            self.record_teacher_forced_item_recall(batch, model_output[0])
        return (loss, model_output) if return_output else loss

    @torch.no_grad()
    def record_teacher_forced_item_recall(self, batch, scores):
        """``tf_rer@k``: ReR@k at the gold reply's first item slot, teacher-forced on the gold prefix.
        ``scores``: ``[B, T, V]``, or the real steps' ``[n, V]`` (:mod:`.real_steps`).

        It isolates *which* items the model ranks when it is about to name one from *whether*
        it generates an item at all (free-running ReR@k is 0 for a model that never does);
        no extra forward pass: the scores are the ones the NLL was computed from.
        """
        labels = batch.label_vec
        is_item = torch.isin(labels, self.item_token_ids)
        has_slot = is_item.any(dim=1)
        first = is_item.float().argmax(dim=1)
        rows = torch.arange(labels.size(0), device=labels.device)
        if scores.dim() == 2:  # the real steps only, packed (real_steps.py)
            slot_rows = real_step_rows(labels.ne(self.NULL_IDX))[rows, first]
            slot_scores = scores[slot_rows.clamp(min=0)]
        else:
            slot_scores = scores[rows, first]
        slot_scores = slot_scores.float().index_select(-1, self.item_token_ids)
        gold = [g or [] for g in batch.gold_new_items]
        recall = response_recall_at_k(slot_scores, has_slot.tolist(), gold, ks=RER_KS)
        for k in RER_KS:
            # replies whose gold text names no new item at a slot carry no signal here
            self.record_local_metric(
                f'tf_rer@{k}',
                [
                    None if v is None or not has_slot[b] else AverageMetric(v)
                    for b, v in enumerate(recall[k])
                ],
            )

    def _add_generation_metrics(self, batch, preds):
        super()._add_generation_metrics(batch, preds)
        self.record_response_metrics(batch, preds)

    def _response_ids(self, pred) -> List[int]:
        """Generated ids of the reply: no start/flag tokens, stop at the end token."""
        out = []
        for token in pred.tolist():
            if token == self.END_IDX:
                break
            if (
                token == self.START_IDX
                or token in self._flag_ids
                or token == self.NULL_IDX
            ):
                continue
            out.append(token)
        return out

    def _gold_new_items(self, obs) -> Optional[List[int]]:
        """``new_items`` from the task, else label items not mentioned in the history."""
        if obs.get('new_items') is not None:
            return list(obs['new_items'])
        labels = obs.get('labels', obs.get('eval_labels'))
        if not labels:
            return None
        seen = set(
            self.catalog.items_in_text(obs.get('full_text', obs.get('text', '')))
        )
        return [i for i in self.catalog.items_in_text(labels[0]) if i not in seen]

    def _gold_label_items(self, obs) -> Optional[List[int]]:
        """``label_items`` from the task (every item of the gold reply, mentioned before or not),
        else the items named in the label."""
        if obs.get('label_items') is not None:
            return list(obs['label_items'])
        labels = obs.get('labels', obs.get('eval_labels'))
        if not labels:
            return None
        return self.catalog.items_in_text(labels[0])

    def _reply_targets(self, preds) -> List[torch.Tensor]:
        """Each prediction without its start token (step 0: the [REC]/[GEN] flag, if generated)."""
        return [p[1:] if len(p) and int(p[0]) == self.START_IDX else p for p in preds]

    @torch.no_grad()
    def _reply_item_scores(self, batch, preds, item_mass=True) -> ReplyItemScores:
        """The item-token logits at every step of each generated reply: one teacher-forced pass
        over the generated tokens (row t: the distribution from which token t was chosen), with the
        item mass per step; the pipeline: the recommender's log-probs at every step, no pass.
        """
        targets = self._reply_targets(preds)
        filler = self._filler_scores(batch)
        # the pipeline: the recommender's ranking filled the slots
        if filler is not None:
            return ReplyItemScores(
                [
                    filler[b].float().expand(max(len(t), 1), -1)
                    for b, t in enumerate(targets)
                ]
            )
        model = self._unwrapped_model()
        ys, _ = self._pad_tensor(
            [t.tolist() or [self.END_IDX] for t in targets], is_label=True
        )
        ys = ys.to(self.item_token_ids.device)
        encoder_states = model.encoder(*self._encoder_input(batch))
        logits, _ = model.decode_forced(encoder_states, ys)
        items = logits.index_select(-1, self.item_token_ids).float()
        mass = None
        if item_mass:
            mass = (items.logsumexp(-1) - logits.float().logsumexp(-1)).exp()
        rows, masses = [], []
        for b, target in enumerate(targets):
            length = max(len(target), 1)
            offset = ys.size(1) - length if self.is_hf else 0  # left padding
            rows.append(items[b, offset : offset + length])
            if mass is not None:
                masses.append(mass[b, offset : offset + length])
        return ReplyItemScores(rows, masses if mass is not None else None)

    def _slot_item_scores(
        self, batch, preds, slots, reply_scores: Optional[ReplyItemScores] = None
    ) -> torch.Tensor:
        """Item-token logits at each response's first item slot, ``[B, N]`` (zeros without slot).

        From :meth:`_reply_item_scores` (given, or computed): the distribution from which the model
        chose its first item, over all N items (the pipeline: the recommender's log-probs).
        """
        if reply_scores is None:
            reply_scores = self._reply_item_scores(batch, preds, item_mass=False)
        out = torch.zeros(
            len(preds), len(self.item_token_ids), device=self.item_token_ids.device
        )
        for b, slot in enumerate(slots):
            if slot is not None:
                out[b] = reply_scores.item_logits[b][slot]
        return out

    def eval_step(self, batch):
        """ParlAI's, with the per-example log fields (``world_log.py``) in each reply."""
        output = super().eval_step(batch)
        logs = batch.get('reply_logs')
        if output is not None and logs:
            for key, values in logs.items():
                output[key] = values
        return output

    def record_what_and_when(self, batch, gen_items, gold_new, has_slot, rer):
        """The two halves of ReR@k (issue #24; definitions in :mod:`parlai_conkd.metrics`).

        "when": ``when_precision`` / ``when_recall`` / ``when_f1`` of "the reply names a film"
        against "the gold reply names a new film", over every labelled response. "what":
        ``what_rer@k``, ReR@k over the responses that name an item and whose gold names a new one
        (``what_responses`` counts them), and ``what_rec@k``, the rec teacher's R@k over exactly
        those responses when one is loaded (:meth:`rec_teacher_log_probs`: the student's, or the
        pipeline's recommender), so the two rankings compare on the same turns.
        """
        labelled = [g is not None for g in gold_new]
        for which in ('precision', 'recall', 'f1'):
            self.record_local_metric(
                f'when_{which}',
                [
                    (
                        BinaryDecisionMetric.when(bool(items), bool(gold), which)
                        if known
                        else None
                    )
                    for items, gold, known in zip(gen_items, gold_new, labelled)
                ],
            )
        both = [bool(has_slot[b] and gold_new[b]) for b in range(len(gold_new))]
        self.record_local_metric('what_responses', [SumMetric(int(x)) for x in both])
        for k in RER_KS:
            self.record_local_metric(
                f'what_rer@{k}',
                [AverageMetric(v) if x else None for v, x in zip(rer[k], both)],
            )
        rec = self.rec_teacher_log_probs(batch) if any(both) else None
        if rec is None:
            return
        gold = [g if x else [] for g, x in zip(gold_new, both)]
        rec_recall = response_recall_at_k(rec.float(), both, gold, ks=RER_KS)
        for k in RER_KS:
            self.record_local_metric(
                f'what_rec@{k}',
                [AverageMetric(v) if x else None for v, x in zip(rec_recall[k], both)],
            )

    @torch.no_grad()
    def record_response_metrics(self, batch, preds):
        """ReR@k under both protocols, item precision/recall/F1, item ratio, Dist-n (both
        conventions) for generated replies, and ``rec_flag_acc`` (the generated [REC]/[GEN] flag
        equals the gold one).

        ``rer@k`` ranks the gold *new* items (not mentioned before), ``rer_all@k`` *all* items of
        the gold reply (repeats of earlier mentions included), both at the reply's first item
        slot; ``rer_responses`` / ``rer_all_responses`` count the responses each averages over.
        Definitions: parlai_conkd/metrics.py and projects/conkd/README.md.
        """
        responses = [self._response_ids(p) for p in preds]
        gen_items = [generated_items(r, self.item_index_of_token) for r in responses]
        gold_new = batch.get('gold_new_items') or [None] * len(preds)
        gold_all = batch.get('gold_label_items') or [None] * len(preds)
        # slot positions are taken in the raw prediction (after the start token, flag included)
        targets = self._reply_targets(preds)
        slots = [first_item_slot(t.tolist(), self.item_index_of_token) for t in targets]
        has_slot = [s is not None for s in slots]
        # the per-example log (not in a person's chat) reads the same teacher-forced pass
        reply_scores = (
            None
            if self.in_interactive_mode()
            else self._reply_item_scores(batch, preds, item_mass=not all(has_slot))
        )
        if reply_scores is not None:
            batch['reply_logs'] = reply_logs(
                self.catalog,
                reply_scores,
                [t.tolist() for t in targets],
                slots,
                self.item_index_of_token,
                self.END_IDX,
                self._flag_ids,
                batch.get('context_items') or [[] for _ in preds],
                gold_new,
                self.rec_teacher_log_probs(batch),
            )
        if any(has_slot[b] and (gold_new[b] or gold_all[b]) for b in range(len(preds))):
            scores = self._slot_item_scores(batch, preds, slots, reply_scores)
        else:
            scores = torch.zeros(len(preds), len(self.item_token_ids))
        for name, gold in (('rer', gold_new), ('rer_all', gold_all)):
            gold = [g or [] for g in gold]
            recall = response_recall_at_k(scores, has_slot, gold, ks=RER_KS)
            for k in RER_KS:
                self.record_local_metric(
                    f'{name}@{k}', [_average(v) for v in recall[k]]
                )
            self.record_local_metric(
                f'{name}_responses', [SumMetric(int(bool(g))) for g in gold]
            )
            if name == 'rer':
                self.record_what_and_when(batch, gen_items, gold_new, has_slot, recall)
        overlaps = [
            item_overlap(gen, gold or []) for gen, gold in zip(gen_items, gold_new)
        ]
        for name in ('precision', 'recall', 'f1'):
            self.record_local_metric(
                f'item_{name}', [_average(o[name]) for o in overlaps]
            )
        self.record_local_metric(
            'item_ratio', [AverageMetric(bool(g)) for g in gen_items]
        )
        if batch.label_vec is not None:
            gold_flags = [
                row[row.ne(self.NULL_IDX)][:1].tolist() for row in batch.label_vec
            ]
            self.record_local_metric(
                'rec_flag_acc',
                [
                    AverageMetric(t[:1].tolist() == g)
                    for t, g in zip(targets, gold_flags)
                ],
            )
        tokens = [distinct_tokens(self.dict.vec2txt(r)) if r else [] for r in responses]
        for n in DIST_NS:
            self.record_local_metric(
                f'dist-{n}',
                [
                    DistinctNgramMetric.of_response(t, n, per_response=False)
                    for t in tokens
                ],
            )
            self.record_local_metric(
                f'dist_crs-{n}',
                [
                    DistinctNgramMetric.of_response(t, n, per_response=True)
                    for t in tokens
                ],
            )
