"""What each generated reply names and ranks, as plain data in the reply (per-example inspection).

ParlAI copies every key of ``eval_step``'s ``Output`` into the replies, and ``parlai eval_model
--world-logs FILE`` writes each episode's messages as one JSON line, so these fields make every
example's failure inspectable. For the generators of this project (dialogue teacher, student, any
backbone) in evaluation with generation, outside a person's chat (its panel is
``conkd_student/interactive.py``), each reply carries (item records:
:func:`parlai_conkd.formatting.item_record`, ``new``: the dialogue so far has not named the item):

* ``items_named``: the items the reply names, in order, first mention only (the items of its
  ``text``); ``score``: the model's probability of the item among all catalog items at the step
  that named it;
* ``model_top_k``: the model's top :data:`LOG_TOP_K` items at reply step ``model_top_k_step``
  (the generated tokens counted from 0, the [REC]/[GEN] flag first when the model generated one):
  its first item slot when it names an item (``model_top_k_names_item`` true; the distribution
  ReR@k ranks), else the step after the flag where the model put the most probability on item
  tokens, i.e. where it most likely would have named one (the interactive panel's rule);
  ``score``: the probability among all catalog items, context items included as ReR@k ranks them;
* ``gold_new_items``: the gold reply's new items (the task's ``new_items``; null without labels),
  each with ``score`` and ``rank`` (1 + the items scored higher) in that same distribution;
* ``rec_teacher_top_k``, only when a recommender is loaded (the student's rec teacher, found on
  disk, or the pipeline's ``--fill-items-from``; never built or fetched for this): its top
  :data:`LOG_TOP_K` for the conversation so far, ``score`` its probability among the items the
  dialogue has not named (what the student distils; the panel's list).

The pipeline (``--fill-items-from``): the recommender fills every item slot, so the model's
distribution is the recommender's (with context items, as ReR@k ranks them), the same at every
step: ``model_top_k_step`` is null when the reply names no item.

Cost: the model's distributions come from the one teacher-forced pass over the generated tokens
that ReR@k already makes (now made in every evaluation batch, not only in batches where a reply
with gold items names one); the student's rec teacher scores are the ones its KD metrics computed.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Set

import torch

from parlai_conkd.formatting import item_record
from parlai_conkd.items import ItemCatalog

#: items in ``model_top_k`` and ``rec_teacher_top_k``
LOG_TOP_K = 10
#: the reply fields this module fills
FIELDS = (
    'items_named',
    'model_top_k',
    'model_top_k_step',
    'model_top_k_names_item',
    'gold_new_items',
    'rec_teacher_top_k',
)


@dataclass
class ReplyItemScores:
    """The model's item scores at every step of each generated reply."""

    #: per reply, ``[T_b, N]`` item logits (or log-probs): row t is the distribution the reply's
    #: token t (counted from 0, a generated [REC]/[GEN] flag first) was chosen from
    item_logits: List[torch.Tensor]
    #: per reply, ``[T_b]`` total probability of the item tokens at each step; None when every
    #: step has the same item distribution (the pipeline's recommender)
    item_mass: Optional[List[torch.Tensor]] = None


def top_step(
    slot: Optional[int], mass: Optional[torch.Tensor], after_flag: bool = True
) -> Optional[int]:
    """The step whose item distribution the log shows: the first item slot, else the step of most
    item mass (after the flag when the reply starts with one: that step chose [REC]/[GEN]; a
    flag-only reply gets step 0); None without a slot when every step has the same distribution.
    """
    if slot is not None:
        return slot
    if mass is None:
        return None
    first = 1 if after_flag and mass.numel() > 1 else 0
    return int(mass[first:].argmax()) + first


def named_steps(
    target: Sequence[int], item_index_of_token: Dict[int, int], end_idx: int
) -> List[tuple]:
    """``(step, catalog index)`` of each item the reply names (first mention), up to the end."""
    seen, out = set(), []
    for step, token in enumerate(target):
        if token == end_idx:
            break
        index = item_index_of_token.get(int(token))
        if index is not None and index not in seen:
            seen.add(index)
            out.append((step, index))
    return out


def exclude_and_renormalise(
    log_probs: torch.Tensor, excluded: Sequence[int]
) -> torch.Tensor:
    """``[N]`` log-probabilities among the items not in ``excluded``."""
    log_probs = log_probs.float().clone()
    if excluded:
        log_probs[list(excluded)] = float('-inf')
    return torch.log_softmax(log_probs, dim=-1)


def reply_logs(
    catalog: ItemCatalog,
    scores: ReplyItemScores,
    targets: Sequence[Sequence[int]],
    slots: Sequence[Optional[int]],
    item_index_of_token: Dict[int, int],
    end_idx: int,
    flag_ids: Set[int],
    context_items: Sequence[Sequence[int]],
    gold_new: Sequence[Optional[Sequence[int]]],
    rec_log_probs: Optional[torch.Tensor] = None,
    k: int = LOG_TOP_K,
) -> Dict[str, list]:
    """The fields of the module docstring, one list entry per reply (``Output`` layout)."""
    out = {field: [] for field in FIELDS}
    if rec_log_probs is None:
        del out['rec_teacher_top_k']
    else:
        rec_log_probs = rec_log_probs.float().cpu()  # one copy: [B, N]
    for b, target in enumerate(targets):
        context = set(context_items[b] if b < len(context_items) else ())

        def records(indices, probs, context=context, **extra):
            return [
                item_record(catalog[i], p, new=i not in context, **extra)
                for i, p in zip(indices, probs)
            ]

        named = named_steps(target, item_index_of_token, end_idx)
        mass = None if scores.item_mass is None else scores.item_mass[b]
        step = top_step(slots[b], mass, bool(target) and target[0] in flag_ids)
        # the distributions of the steps shown only, copied once
        rows = sorted({t for t, _ in named} | {step if step is not None else 0})
        logits = scores.item_logits[b][rows].float()
        probs = dict(zip(rows, torch.softmax(logits, dim=-1).cpu()))
        out['items_named'].append(
            records([i for _, i in named], [float(probs[t][i]) for t, i in named])
        )
        shown = probs[step if step is not None else 0]
        top = torch.topk(shown, min(k, shown.numel()))
        out['model_top_k'].append(records(top.indices.tolist(), top.values.tolist()))
        out['model_top_k_step'].append(step)
        out['model_top_k_names_item'].append(slots[b] is not None)
        if gold_new[b] is None:
            out['gold_new_items'].append(None)
        else:
            out['gold_new_items'].append(
                [
                    item_record(
                        catalog[i],
                        float(shown[i]),
                        new=True,
                        rank=int((shown > shown[i]).sum()) + 1,
                    )
                    for i in gold_new[b]
                ]
            )
        if rec_log_probs is not None:
            rec = exclude_and_renormalise(rec_log_probs[b], sorted(context)).exp()
            top = torch.topk(rec, min(k, rec.numel()))
            out['rec_teacher_top_k'].append(
                records(top.indices.tolist(), top.values.tolist())
            )
    return out
