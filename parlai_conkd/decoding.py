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

import functools
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


def excluded_index(
    items: ItemVocab,
    hypotheses: torch.Tensor,
    context_index: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``LongTensor[H, t + C]``: the catalog indices each hypothesis may not name, as a list per
    row with ``-1`` for no item (the sparse form of :func:`excluded_items`: a few entries per row
    instead of N; the batched search's step). ``hypotheses``: ``[H, t]`` token ids generated so
    far; ``context_index``: ``[H, C]`` catalog indices named in each row's dialogue (``-1``
    padding), or None under ``--item-no-repeat reply``."""
    named = items.index_of(hypotheses)
    if context_index is None or context_index.size(1) == 0:
        return named
    return torch.cat([named, context_index.to(named.device)], dim=1)


def context_item_index(
    context_items: Sequence[Sequence[int]], rows: int, repeat: int = 1, device=None
) -> torch.Tensor:
    """``LongTensor[rows * repeat, C]``: row ``r`` lists the items of ``context_items[r // repeat]``
    (padded with ``-1``; C = the longest list; dialogues past the end of ``context_items`` have
    none). The sparse form of :func:`context_item_mask`."""
    lists = [list(context) for context in context_items[:rows]]
    lists += [[]] * (rows - len(lists))
    width = max((len(items) for items in lists), default=0)
    index = torch.full((rows, width), -1, dtype=torch.long)
    for row, items in enumerate(lists):
        if items:
            index[row, : len(items)] = torch.as_tensor(items, dtype=torch.long)
    return index.repeat_interleave(repeat, dim=0).to(device)


def excluded_mask(index: torch.Tensor, num_items: int) -> torch.Tensor:
    """``BoolTensor[H, N]`` of an :func:`excluded_index` (the dense form)."""
    mask = torch.zeros(
        index.size(0), num_items + 1, dtype=torch.bool, device=index.device
    )
    mask.scatter_(
        1, torch.where(index < 0, torch.full_like(index, num_items), index), True
    )
    return mask[:, :num_items]


def exclude_(item_scores: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Set the entries an :func:`excluded_index` lists to ``-inf`` in ``item_scores`` ``[H, N]``, in
    place (the same values as ``masked_fill`` with :func:`excluded_mask`, without its [H, N] pass).
    """
    listed = index >= 0
    rows = torch.arange(index.size(0), device=index.device).unsqueeze(1)
    item_scores[rows.expand_as(index)[listed], index[listed]] = float('-inf')
    return item_scores


@functools.lru_cache(maxsize=None)
def _chunk_width(width: int) -> Optional[int]:
    """The chunk width :func:`row_max` uses for rows of ``width`` (None: rows too short to gain):
    the smallest divisor of ``width`` from 256 to 2048, else 512 (the last chunk is then short).
    """
    if width < 2048:
        return None
    for chunk in range(256, 2049):
        if width % chunk == 0:
            return chunk
    return 512


def row_max(values: torch.Tensor):
    """``values.max(dim=-1)`` for ``[H, N]`` (values, indices), the same numbers and the same rule
    (the first maximal entry of a row), faster on CPU for wide rows.

    Why: on CPU ``max`` with indices (and ``argmax``) walks every entry with its index (about as
    slow as ``exp`` over the row; measured: 4.8 ms for [525, 10531], one thread), while ``amax``
    alone is vectorised and ten times faster. So: the maximum of each chunk of a row (``amax``),
    the first chunk that holds the row's maximum, and ``max`` with indices inside that chunk only.
    Elsewhere (GPU, short rows) it is ``values.max(dim=-1)``.
    """
    rows, width = values.shape
    chunk = _chunk_width(width)
    if chunk is None or values.device.type != 'cpu':
        return values.max(dim=-1)
    whole = width // chunk * chunk
    chunk_max = values[:, :whole].unflatten(-1, (-1, chunk)).amax(dim=-1)
    if whole < width:  # a short last chunk
        chunk_max = torch.cat([chunk_max, values[:, whole:].amax(-1, keepdim=True)], 1)
    best = chunk_max.amax(dim=-1, keepdim=True)
    first = (chunk_max == best).to(torch.uint8).argmax(dim=-1)
    # the chosen chunk of each row; a short last chunk repeats its last entry, after the original,
    # so the first maximal entry is still the original one
    columns = (
        first.unsqueeze(1) * chunk + torch.arange(chunk, device=values.device)
    ).clamp_(max=width - 1)
    within = values.gather(1, columns).max(dim=-1)
    return within.values, columns.gather(1, within.indices.unsqueeze(1)).squeeze(1)


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
    inplace: bool = False,
    excluded_index: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The collapsed distribution ``log p'`` of the module docstring, ``[H, V]`` (a new tensor, or
    ``log_probs`` itself, changed, with ``inplace``).

    Args:
        log_probs: ``[H, V]`` log-probabilities of the next token (normalised).
        items: the item columns.
        excluded: ``BoolTensor[H, N]``, items that may not be chosen (None: none).
        allow_items: ``BoolTensor[H]``, False where a hypothesis may not name any item
            (e.g. it started with [GEN]); None: all may.
        ranking: ``[H, N]`` scores that choose *which* item fills the slot (default: the model's
            own item log-probabilities). The pipeline baseline passes its recommender's scores:
            the generator decides *where* an item goes, the recommender *which*.
        inplace: write the collapsed item columns into ``log_probs`` (the batched search's step,
            which owns its scores) instead of a copy.
        excluded_index: with ``inplace`` on a contiguous item block and no ``ranking``, the
            excluded items as an :func:`excluded_index` instead of ``excluded``.

    The class mass ``lambda`` is the total over all N items (excluded ones included: it is the
    model's belief that a film goes here; the film is then the best one allowed). Rows with no
    allowed item, or with ``allow_items`` False, get no item at all. The class must *exceed* the
    best word: on an exact tie the word wins (the class score is moved one float step down).
    """
    out = log_probs if inplace else log_probs.clone()
    item_lp = items.take(out)
    class_lp = torch.logsumexp(item_lp, dim=-1)
    class_lp = torch.nextafter(class_lp, torch.full_like(class_lp, float('-inf')))
    # in place, the item columns of a contiguous block are a view: mask, pick and overwrite them
    # there (no [H, N] copies; the batched search's step, issue #26)
    in_view = inplace and items.block is not None
    if excluded_index is not None and (ranking is not None or not in_view):
        raise ValueError(
            'excluded_index needs inplace, a contiguous item block, no ranking'
        )
    if ranking is None and in_view:
        if excluded is not None:
            item_lp.masked_fill_(excluded, float('-inf'))
        if excluded_index is not None:
            exclude_(item_lp, excluded_index)
        best_score, best = row_max(item_lp)
        usable = best_score > float('-inf')
    else:
        best, usable = best_allowed(
            item_lp if ranking is None else ranking.to(item_lp), excluded
        )
    if allow_items is not None:
        usable = usable & allow_items
    rows = torch.arange(item_lp.size(0), device=item_lp.device)
    chosen = torch.where(usable, class_lp, torch.full_like(class_lp, float('-inf')))
    if in_view:
        item_lp.fill_(float('-inf'))
        item_lp[rows, best] = chosen
        return out
    collapsed = torch.full_like(item_lp, float('-inf'))
    collapsed[rows, best] = chosen
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
    return sample_item(
        items.take(log_probs[rows]),
        items,
        None if excluded is None else excluded[rows],
        top_k,
        top_p,
    )


def sample_item(
    item_log_probs: torch.Tensor,
    items: ItemVocab,
    excluded: Optional[torch.Tensor],
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
) -> torch.Tensor:
    """:func:`sample_within` on the item columns already taken: ``item_log_probs`` ``[h, N]`` and
    ``excluded`` ``[h, N]`` (or None) of the hypotheses that drew the class; ``[h]`` vocabulary ids.
    """
    item_lp = item_log_probs
    if excluded is not None:
        item_lp = item_lp.masked_fill(excluded, float('-inf'))
    probs = torch.softmax(item_lp, dim=-1)
    if top_k is not None:
        kth = probs.topk(min(top_k, probs.size(-1)), dim=-1).values[:, -1:]
        probs = probs.masked_fill(probs < kth, 0.0)
    if top_p is not None:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        probs = probs.scatter(1, order, sorted_probs.masked_fill(drop, 0.0))
    choice = torch.multinomial(probs / probs.sum(dim=-1, keepdim=True), 1).squeeze(1)
    return items.ids.to(item_log_probs.device)[choice]


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
