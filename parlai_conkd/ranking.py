"""Ranking metrics over item-score vectors: recall@k, MRR, NDCG@k. Pure torch (no ParlAI).

Used by the recommendation teacher (item scores from the R-GCN) and by the dialogue teacher
(ReR@k from a generator's item-token scores), so both report numbers with the same meaning.

Conventions (read these before comparing numbers with papers)
------------------------------------------------------------
* ``scores``: ``Tensor[B, N]``, one row per example, one column per catalog item (catalog index
  order). Higher is better. ``-inf`` is allowed (an item the model rules out).
* ``gold``: one list of catalog indices per example (order irrelevant, duplicates ignored).
* **Unit of evaluation = (example, gold item) pair** (the KBRD / CRSLab ``:rec`` convention):
  every gold item is ranked on its own against all N items, as if it were the only relevant one.
  Other gold items of the same example that score higher *do* count against it, exactly as when
  the example is split into one example per gold item (``redial_crs:rec``).
  :func:`ranking_sums` returns per-example *sums* over that example's pairs plus the pair count,
  so a caller that accumulates ``sum / count`` over a corpus gets the per-pair (micro) average,
  which is the KBRD number. :func:`recall_at_k` etc. return the per-example mean over its gold
  items ("fraction of this example's gold items in the top k"); on one-gold-item examples the two
  agree.
* **Ties** are broken uniformly at random and the *expected* value is reported, computed in
  closed form (no sampling): with ``g`` items scoring strictly higher than the gold item and ``t``
  other items scoring exactly the same, the gold item's position is uniform on
  ``g+1 .. g+t+1``. So recall@k = ``clamp((k - g) / (t + 1), 0, 1)``; an untrained model with
  all-equal scores gets recall@k = k/N, not 1 (optimistic) or 0 (pessimistic). A popularity
  baseline, whose scores tie a lot, is neither flattered nor punished by catalog order.
* ``exclude``: per example, catalog indices removed from the ranking (e.g. the items already
  mentioned in the context, so re-recommending a context item cannot inflate R@1). Excluded items
  cannot outrank anything. A gold item that is itself excluded is a *miss* (all metrics 0) and
  still counts in the denominator: asking to exclude context items while counting a context item
  as gold is scored honestly, not silently dropped.
* MRR is the expected reciprocal rank over the full ranking (no cutoff). NDCG@k with one relevant
  item per pair is ``1 / log2(1 + position)`` if position <= k else 0 (ideal DCG = 1).
"""

from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

DEFAULT_KS = (1, 10, 50)


@dataclass
class GoldRanks:
    """Where each (example, gold item) pair lands in its example's ranking.

    All tensors are ``[B, G]`` with ``G`` = the largest number of gold items in the batch.
    """

    #: items scoring strictly higher than the gold item
    higher: torch.Tensor
    #: *other* items scoring exactly as high as the gold item
    ties: torch.Tensor
    #: True for a real pair, False for padding
    mask: torch.Tensor
    #: True where the gold item itself was excluded from the ranking (always a miss)
    excluded: torch.Tensor
    #: number of ranked items N
    num_items: int

    @property
    def count(self) -> torch.Tensor:
        """Number of gold items per example, ``[B]`` (float, ready to be a denominator)."""
        return self.mask.sum(dim=1).to(torch.float)


def pad_index_lists(lists: Sequence[Sequence[int]], num_items: Optional[int] = None):
    """Lists of catalog indices -> (``LongTensor[B, L]`` padded with 0, ``BoolTensor[B, L]`` mask).

    Duplicates within a list are dropped (first occurrence kept); an index outside
    ``0..num_items-1`` raises ``IndexError`` naming the example.
    """
    deduped = []
    for row, indices in enumerate(lists):
        seen = []
        for index in indices:
            index = int(index)
            if num_items is not None and not 0 <= index < num_items:
                raise IndexError(
                    f'example {row}: item index {index} outside 0..{num_items - 1}'
                )
            if index not in seen:
                seen.append(index)
        deduped.append(seen)
    width = max((len(r) for r in deduped), default=0)
    padded = torch.zeros(len(deduped), width, dtype=torch.long)
    mask = torch.zeros(len(deduped), width, dtype=torch.bool)
    for row, indices in enumerate(deduped):
        if indices:
            padded[row, : len(indices)] = torch.tensor(indices, dtype=torch.long)
            mask[row, : len(indices)] = True
    return padded, mask


def exclusion_mask(
    lists: Sequence[Sequence[int]], num_items: int, device=None
) -> torch.Tensor:
    """``BoolTensor[B, N]``, True at the listed catalog indices of each row."""
    padded, mask = pad_index_lists(lists, num_items)
    out = torch.zeros(len(lists), num_items, dtype=torch.bool, device=device)
    if padded.numel():
        rows = torch.arange(len(lists)).unsqueeze(1).expand_as(padded)
        out[rows[mask].to(out.device), padded[mask].to(out.device)] = True
    return out


def mask_scores(scores: torch.Tensor, exclude) -> torch.Tensor:
    """Copy of ``scores`` with excluded items set to ``-inf``.

    ``exclude`` is a ``BoolTensor[B, N]`` or one list of catalog indices per example.
    """
    if exclude is None:
        return scores
    if not torch.is_tensor(exclude):
        exclude = exclusion_mask(exclude, scores.size(1), device=scores.device)
    return scores.masked_fill(exclude.to(scores.device), float('-inf'))


def gold_ranks(scores: torch.Tensor, gold, exclude=None) -> GoldRanks:
    """Rank every (example, gold item) pair of a batch; see the module docstring for conventions."""
    if scores.dim() != 2:
        raise ValueError(
            f'scores must be [batch, items], got shape {tuple(scores.shape)}'
        )
    batch, num_items = scores.shape
    if len(gold) != batch:
        raise ValueError(f'{len(gold)} gold lists for {batch} score rows')
    scores = scores.detach().float()
    if exclude is not None and not torch.is_tensor(exclude):
        if len(exclude) != batch:
            raise ValueError(f'{len(exclude)} exclude lists for {batch} score rows')
        exclude = exclusion_mask(exclude, num_items, device=scores.device)
    gold_idx, mask = pad_index_lists(gold, num_items)
    gold_idx, mask = gold_idx.to(scores.device), mask.to(scores.device)
    if exclude is not None:
        exclude = exclude.to(scores.device)
        gold_excluded = exclude.gather(1, gold_idx) & mask
        scores = scores.masked_fill(exclude, float('-inf'))
    else:
        gold_excluded = torch.zeros_like(mask)
    gold_scores = scores.gather(1, gold_idx)  # [B, G]
    # [B, G, N] comparisons: fine for catalog-sized N (6.9k) and batch-sized B.
    higher = (scores.unsqueeze(1) > gold_scores.unsqueeze(2)).sum(dim=2)
    ties = (scores.unsqueeze(1) == gold_scores.unsqueeze(2)).sum(dim=2) - 1
    return GoldRanks(
        higher=higher,
        ties=ties.clamp(min=0),
        mask=mask,
        excluded=gold_excluded,
        num_items=num_items,
    )


def _valid(ranks: GoldRanks) -> torch.Tensor:
    return (ranks.mask & ~ranks.excluded).to(torch.float)


def pair_recall(ranks: GoldRanks, k: int) -> torch.Tensor:
    """Expected hit@k per pair, ``[B, G]`` (0 on padding and on excluded gold items)."""
    hit = ((k - ranks.higher).to(torch.float) / (ranks.ties + 1).to(torch.float)).clamp(
        0.0, 1.0
    )
    return hit * _valid(ranks)


def _position_prefix(num_items: int, weight, device) -> torch.Tensor:
    """``prefix[p] = sum_{q=1..p} weight(q)`` for p = 0..num_items (prefix[0] = 0)."""
    positions = torch.arange(1, num_items + 1, dtype=torch.float64, device=device)
    return torch.cat(
        [
            torch.zeros(1, dtype=torch.float64, device=device),
            weight(positions).cumsum(0),
        ]
    )


def _expected_over_positions(
    ranks: GoldRanks, prefix: torch.Tensor, cutoff: Optional[int]
):
    """Mean of weight(position) over the tie block, counting positions beyond ``cutoff`` as 0."""
    first = ranks.higher  # positions are first+1 .. last
    last = ranks.higher + ranks.ties + 1
    if cutoff is not None:
        first = first.clamp(max=cutoff)
        last = last.clamp(max=cutoff)
    total = prefix[last] - prefix[first]
    return (total / (ranks.ties + 1).to(torch.float64)).to(torch.float) * _valid(ranks)


def pair_reciprocal_rank(ranks: GoldRanks) -> torch.Tensor:
    """Expected 1/position per pair, ``[B, G]``."""
    prefix = _position_prefix(ranks.num_items, lambda p: 1.0 / p, ranks.higher.device)
    return _expected_over_positions(ranks, prefix, None)


def pair_ndcg(ranks: GoldRanks, k: int) -> torch.Tensor:
    """Expected NDCG@k per pair (one relevant item: 1/log2(1+position) within the top k)."""
    prefix = _position_prefix(
        ranks.num_items, lambda p: 1.0 / torch.log2(p + 1.0), ranks.higher.device
    )
    return _expected_over_positions(ranks, prefix, k)


def ranking_sums(
    scores: torch.Tensor,
    gold,
    ks: Sequence[int] = DEFAULT_KS,
    exclude=None,
    ndcg_ks: Optional[Sequence[int]] = None,
) -> Dict[str, torch.Tensor]:
    """Per-example sums over gold items, plus ``'count'`` (gold items per example), all ``[B]``.

    Keys: ``'recall@k'`` for k in ``ks``, ``'mrr'``, ``'ndcg@k'`` for k in ``ndcg_ks`` (default
    ``ks``), ``'count'``. Corpus metric = sum of a key over examples / sum of ``'count'``.
    """
    ranks = gold_ranks(scores, gold, exclude)
    out = {f'recall@{k}': pair_recall(ranks, k).sum(1) for k in ks}
    out['mrr'] = pair_reciprocal_rank(ranks).sum(1)
    for k in ndcg_ks if ndcg_ks is not None else ks:
        out[f'ndcg@{k}'] = pair_ndcg(ranks, k).sum(1)
    out['count'] = ranks.count
    return out


def _per_example_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """total / count, NaN where an example has no gold item (it has no recall to speak of)."""
    return torch.where(
        count > 0, total / count.clamp(min=1), torch.full_like(total, float('nan'))
    )


def recall_at_k(
    scores, gold, ks: Sequence[int] = DEFAULT_KS, exclude=None
) -> Dict[int, torch.Tensor]:
    """{k: Tensor[B]}: expected fraction of each example's gold items ranked in the top k."""
    ranks = gold_ranks(scores, gold, exclude)
    return {k: _per_example_mean(pair_recall(ranks, k).sum(1), ranks.count) for k in ks}


def mrr(scores, gold, exclude=None) -> torch.Tensor:
    """Tensor[B]: mean over each example's gold items of the expected reciprocal rank."""
    ranks = gold_ranks(scores, gold, exclude)
    return _per_example_mean(pair_reciprocal_rank(ranks).sum(1), ranks.count)


def ndcg_at_k(
    scores, gold, ks: Sequence[int] = DEFAULT_KS, exclude=None
) -> Dict[int, torch.Tensor]:
    """{k: Tensor[B]}: mean over each example's gold items of the expected NDCG@k."""
    ranks = gold_ranks(scores, gold, exclude)
    return {k: _per_example_mean(pair_ndcg(ranks, k).sum(1), ranks.count) for k in ks}
