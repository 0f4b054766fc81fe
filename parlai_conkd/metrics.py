"""Response-level metrics for generators over words + item tokens. Pure Python / torch, no ParlAI.

Definitions (also in projects/conkd/README.md, "Dialogue teacher / Response metrics"). One
*response* = one generated recommender turn. "Gold new items" = the example's ``new_items`` (items
of the gold response not mentioned earlier in the dialogue). "Generated items" = catalog indices of
the item tokens in the generated response, deduplicated (a title repeated twice counts once).

* **ReR@k** (recommendation-in-response recall): at the *first* item slot of the generated response
  (the first position where the model emitted an item token), rank all N catalog items by the
  model's scores for their item tokens at that step; ReR@k = fraction of the gold new items in the
  top k (ties: expected value, see :mod:`parlai_conkd.ranking`). A response without any item token
  scores 0. Averaged over responses with at least one gold new item (others have no recall).
* **item precision**: |generated ∩ gold new| / |generated|, averaged over responses that name at
  least one item.
* **item F1**: per response, harmonic mean of item precision and item recall
  (|generated ∩ gold new| / |gold new|); 0 when exactly one of the two sets is empty; averaged over
  responses where at least one of the two sets is non-empty.
* **item ratio**: share of all responses that name at least one item.
* **"when"** (issue #24; ``when_precision`` / ``when_recall`` / ``when_f1``): whether to name a
  film at all, as a binary decision per response: predicted positive = the generated response
  names at least one item, gold positive = the gold response names a new item. Precision, recall
  and F1 over all responses (corpus counts, :func:`when_counts`).
* **"what"** (issue #24; ``what_rer@k``): which film, where the model did decide to name one:
  ReR@k over only the responses that name an item *and* whose gold names a new one (plain ReR@k
  counts a response without an item as 0, mixing "when" into it). ``what_rec@k`` is the rec
  teacher's R@k over exactly the same responses, when a rec teacher is at hand.
* **Dist-n, two conventions** (n-grams over :func:`distinct_tokens`, item tokens = one word):
  - ``dist-n`` (corpus distinct ratio, Li et al. 2016; ParlAI's ``interdistinct``):
    |distinct n-grams over all responses| / |n-grams over all responses|, in [0, 1].
  - ``dist_crs-n`` (KBRD / KGSF / CRSLab "Dist-n"): |distinct n-grams over all responses| /
    |responses|, a count per response, unbounded. This is the number CRS papers (and ConKD) print.
"""

import re
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch

from parlai_conkd.ranking import recall_at_k

RER_KS = (1, 10, 50)
DIST_NS = (1, 2, 3, 4)

_TOKEN_RE = re.compile(r'\w+|[^\w\s]')


def distinct_tokens(text: str) -> List[str]:
    """Words and punctuation marks of a response, lower-cased; ``__item_123__`` stays one token.

    The same split for every backbone (word-level transformer or BPE GPT-2), so Dist numbers of the
    two are comparable.
    """
    return _TOKEN_RE.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> List[Tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_counts(
    responses: Iterable[Sequence[str]], n: int
) -> Tuple[Set[Tuple[str, ...]], int, int]:
    """(distinct n-grams, total n-grams, number of responses) over tokenised responses."""
    distinct: Set[Tuple[str, ...]] = set()
    total = 0
    count = 0
    for tokens in responses:
        grams = ngrams(tokens, n)
        distinct.update(grams)
        total += len(grams)
        count += 1
    return distinct, total, count


def dist_ratio(responses: Sequence[Sequence[str]], n: int) -> float:
    """Corpus distinct-n ratio: distinct n-grams / all n-grams (0 when there are none)."""
    distinct, total, _ = distinct_counts(responses, n)
    return len(distinct) / total if total else 0.0


def dist_per_response(responses: Sequence[Sequence[str]], n: int) -> float:
    """KBRD/KGSF/CRSLab Dist-n: distinct n-grams over the corpus / number of responses."""
    distinct, _, count = distinct_counts(responses, n)
    return len(distinct) / count if count else 0.0


def item_overlap(
    generated: Sequence[int], gold: Sequence[int]
) -> Dict[str, Optional[float]]:
    """Per-response item precision / recall / F1; ``None`` where a metric is undefined.

    ``generated`` and ``gold`` may contain repeats; both are treated as sets.
    """
    gen, ref = set(generated), set(gold)
    hits = len(gen & ref)
    precision = hits / len(gen) if gen else None
    recall = hits / len(ref) if ref else None
    if not gen and not ref:
        f1 = None
    elif not gen or not ref or hits == 0:
        f1 = 0.0
    else:
        f1 = 2 * precision * recall / (precision + recall)
    return {'precision': precision, 'recall': recall, 'f1': f1}


def when_counts(names_item: bool, gold_names_new_item: bool) -> Tuple[int, int, int]:
    """``(true positive, false positive, false negative)`` of one response's "when" decision:
    it names a film (``names_item``) against its gold reply naming a new film."""
    return (
        int(names_item and gold_names_new_item),
        int(names_item and not gold_names_new_item),
        int(gold_names_new_item and not names_item),
    )


def precision_recall_f1(tp: int, fp: int, fn: int) -> Dict[str, Optional[float]]:
    """Corpus precision, recall and F1 from counts; None where the denominator is 0."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    if precision is None or recall is None:
        f1 = None
    else:
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {'precision': precision, 'recall': recall, 'f1': f1}


def first_item_slot(
    token_ids: Sequence[int], item_index_of_token: Dict[int, int]
) -> Optional[int]:
    """Position of the first item token in a generated sequence, or None."""
    for position, token in enumerate(token_ids):
        if int(token) in item_index_of_token:
            return position
    return None


def generated_items(
    token_ids: Sequence[int], item_index_of_token: Dict[int, int]
) -> List[int]:
    """Catalog indices of the item tokens in a generated sequence, in order, deduplicated."""
    seen: List[int] = []
    for token in token_ids:
        index = item_index_of_token.get(int(token))
        if index is not None and index not in seen:
            seen.append(index)
    return seen


def response_recall_at_k(
    slot_item_scores: torch.Tensor,
    has_slot: Sequence[bool],
    gold_new: Sequence[Sequence[int]],
    ks: Sequence[int] = RER_KS,
) -> Dict[int, List[Optional[float]]]:
    """ReR@k per response.

    :param slot_item_scores: ``[B, N]`` scores (logits or log-probs) of the N item tokens at each
        response's first item slot; rows without a slot are ignored.
    :param has_slot: whether response b generated an item at all.
    :param gold_new: gold new items per response.
    :return: {k: [value or None]}; None for responses without gold new items, 0.0 for responses
        with gold items but no generated item.
    """
    if slot_item_scores.size(0) != len(has_slot) or len(has_slot) != len(gold_new):
        raise ValueError(
            f'{slot_item_scores.size(0)} score rows, {len(has_slot)} slot flags, '
            f'{len(gold_new)} gold lists: all must match'
        )
    result: Dict[int, List[Optional[float]]] = {k: [None] * len(gold_new) for k in ks}
    rows = [b for b, gold in enumerate(gold_new) if gold and has_slot[b]]
    for b, gold in enumerate(gold_new):
        if gold and not has_slot[b]:
            for k in ks:
                result[k][b] = 0.0
    if rows:
        recalls = recall_at_k(
            slot_item_scores[rows], [gold_new[b] for b in rows], ks=ks
        )
        for k in ks:
            for row, value in zip(rows, recalls[k].tolist()):
                result[k][row] = value
    return result
