"""Item-aware decoding: decide "an item or a word" on the item class's total probability.

Why (issue [recommending-replies]): a generator whose vocabulary holds N = 6,924 item tokens
spreads its item probability over all of them. At the position where a reply should name a film,
the model's total item probability lambda_t (the ConKD gate, :func:`parlai_conkd.distill.item_mass`)
often beats every single word, yet each single item is far below the best word, so greedy and beam
search, which compare single tokens, almost never emit an item. Class decoding compares the
*class* instead:

    lambda_t = sum_{i in I} p(i | y_<t, x)                    (item class mass; all N items)
    a_t      = argmax_{i in I \\ E_t} p(i | y_<t, x)           (the model's own best allowed item)
    p'(v)    = p(v)           for words v
    p'(a_t)  = lambda_t,  p'(i) = 0 for every other item i

so ``p'`` is again a distribution (the item class collapsed onto its best allowed member) and any
search over it decides on the class: greedy emits ``a_t`` iff ``lambda_t`` exceeds the best word's
probability; beam search scores an item step by ``log lambda_t``; sampling draws the class with
probability ``lambda_t`` and then an item *within* the class (:func:`sample_within`).
``E_t`` are the items a reply must not name again (already in this reply and, by default, already
in the dialogue: a recommendation names new films); with every item excluded the class is dropped.

Everything here is plain torch over ``[H, V]`` log-probabilities (H = hypotheses), no ParlAI; the
tree-search glue is ``parlai_conkd/agents/conkd_dialogue_teacher/item_search.py``.
"""

from typing import Optional, Sequence

import torch

from parlai_conkd.item_vocab import ItemVocab

ITEM_DECODING = ('token', 'class')
#: which items a reply may not name (again): none; those already in this reply; those in the
#: reply or anywhere in the dialogue so far
ITEM_NO_REPEAT = ('none', 'reply', 'dialogue')


def excluded_items(
    items: ItemVocab,
    hypotheses: torch.Tensor,
    context_items: Sequence[int] = (),
    no_repeat: str = 'dialogue',
) -> Optional[torch.Tensor]:
    """``BoolTensor[H, N]``: items each hypothesis may not name, or None when nothing is excluded.

    ``hypotheses``: ``[H, t]`` token ids generated so far (ParlAI's ``partial_hyps``);
    ``context_items``: catalog indices named in the dialogue before this reply.
    """
    if no_repeat not in ITEM_NO_REPEAT:
        raise ValueError(f'no_repeat {no_repeat!r}: expected one of {ITEM_NO_REPEAT}')
    if no_repeat == 'none':
        return None
    num_hyps, num_items = hypotheses.size(0), items.ids.numel()
    mask = torch.zeros(
        num_hyps, num_items + 1, dtype=torch.bool, device=hypotheses.device
    )
    named = items.index_of(hypotheses)  # -1 for words -> the spare last column
    mask.scatter_(
        1, torch.where(named < 0, torch.full_like(named, num_items), named), True
    )
    if no_repeat == 'dialogue' and len(context_items):
        mask[
            :,
            torch.as_tensor(list(context_items), dtype=torch.long, device=mask.device),
        ] = True
    return mask[:, :num_items]


def best_allowed(scores: torch.Tensor, excluded: Optional[torch.Tensor] = None):
    """``(index [H], usable [H])``: each row's highest-scoring item not excluded (``scores``
    ``[H, N]``); ``usable`` is False where every item is excluded or scores ``-inf``."""
    allowed = (
        scores if excluded is None else scores.masked_fill(excluded, float('-inf'))
    )
    best_score, best = allowed.max(dim=-1)
    return best, best_score > float('-inf')


def item_class_log_probs(
    log_probs: torch.Tensor,
    items: ItemVocab,
    excluded: Optional[torch.Tensor] = None,
    allow_items: Optional[torch.Tensor] = None,
    ranking: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The collapsed distribution ``log p'`` of the module docstring, ``[H, V]`` (a new tensor).

    Args:
        log_probs: ``[H, V]`` log-probabilities of the next token (normalised).
        items: the item columns.
        excluded: ``BoolTensor[H, N]``, items that may not be chosen (None: none).
        allow_items: ``BoolTensor[H]``, False where a hypothesis may not name any item
            (e.g. it started with [GEN]); None: all may.
        ranking: ``[H, N]`` scores that choose *which* item fills the slot (default: the model's
            own item log-probabilities). The pipeline baseline passes its recommender's scores:
            the generator decides *where* an item goes, the recommender *which*.

    The class mass ``lambda`` is the total over all N items (excluded ones included: it is the
    model's belief that a film goes here; the film is then the best one allowed). Rows with no
    allowed item, or with ``allow_items`` False, get no item at all. The class must *exceed* the
    best word: on an exact tie the word wins (the class score is moved one float step down).
    """
    out = log_probs.clone()
    item_lp = items.take(log_probs)
    class_lp = torch.logsumexp(item_lp, dim=-1)
    class_lp = torch.nextafter(class_lp, torch.full_like(class_lp, float('-inf')))
    best, usable = best_allowed(
        item_lp if ranking is None else ranking.to(item_lp), excluded
    )
    if allow_items is not None:
        usable = usable & allow_items
    collapsed = torch.full_like(item_lp, float('-inf'))
    rows = torch.arange(item_lp.size(0), device=item_lp.device)
    collapsed[rows, best] = torch.where(
        usable, class_lp, torch.full_like(class_lp, float('-inf'))
    )
    items.put(out, collapsed)
    return out


def sample_within(
    log_probs: torch.Tensor,
    items: ItemVocab,
    rows: torch.Tensor,
    excluded: Optional[torch.Tensor],
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
) -> torch.Tensor:
    """Draw an item for the hypotheses ``rows`` (their item class was sampled), ``[len(rows)]``
    vocabulary ids, from the model's item distribution restricted to allowed items and truncated
    to its ``top_k`` items or its nucleus of mass ``top_p`` (Fan et al. 2018; Holtzman et al. 2019),
    the same truncation the sampler applies to words.
    """
    item_lp = items.take(log_probs[rows])
    if excluded is not None:
        item_lp = item_lp.masked_fill(excluded[rows], float('-inf'))
    probs = torch.softmax(item_lp, dim=-1)
    if top_k is not None:
        kth = probs.topk(min(top_k, probs.size(-1)), dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        probs = probs.scatter(1, order, sorted_probs.masked_fill(drop, 0.0))
    choice = torch.multinomial(probs / probs.sum(dim=-1, keepdim=True), 1).squeeze(1)
    return items.ids.to(log_probs.device)[choice]


def flag_choice(
    log_probs: torch.Tensor, rec_id: int, gen_id: int, threshold: float
) -> torch.Tensor:
    """At the reply's first step: [REC] where P(REC) / (P(REC) + P(GEN)) > ``threshold``, else
    [GEN]; returns ``[H, V]`` log-probabilities with every other token at -inf (the flag decision
    fitted on the validation fold instead of argmax, issue [recommending-replies])."""
    pair = torch.stack([log_probs[:, rec_id], log_probs[:, gen_id]], dim=-1)
    p_rec = torch.softmax(pair, dim=-1)[:, 0]
    out = torch.full_like(log_probs, float('-inf'))
    rows = torch.arange(log_probs.size(0), device=log_probs.device)
    chosen = torch.where(
        p_rec > threshold, torch.full_like(rows, rec_id), torch.full_like(rows, gen_id)
    )
    out[rows, chosen] = torch.where(p_rec > threshold, pair[:, 0], pair[:, 1])
    return out
