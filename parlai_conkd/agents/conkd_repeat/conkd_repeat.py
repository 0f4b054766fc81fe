"""``-m conkd_repeat``: the naive "repeat what was mentioned" baseline of every ReDial table.

Ranks the items mentioned so far in the dialogue (by either speaker) first, the most recently
mentioned first, then every other item by popularity (how often it was a training label, exactly
as ``-m conkd_popularity``: same counting, model-file format and ``train:ordered`` default).
It shows how much of a recall number comes from re-recommending items already in the context
(Kostric & Balog, "A Standardized Re-evaluation of CRS on the ReDial Dataset", SIGIR 2026; He et
al., CIKM 2023)::

    parlai train_model -m conkd_repeat -t redial_crs:rec -mf /tmp/repeat/model -eps 1
    parlai eval_model -mf /tmp/repeat/model -t redial_crs:rec_all -dt test

What it can and cannot score, by construction (m = number of distinct items mentioned so far):

* "all" protocol (``recall@k`` on ``redial_crs:rec_all``): a gold item the recommender repeats
  is ranked among the top m, at its recency position.
* "new" protocol (``new_recall@k``): a new item is never a context item, so it ranks below all m
  of them. Its recall@1 is 0 on every example with at least one earlier mention. Examples whose
  dialogue mentions no item before the response (m = 0) get pure popularity, so they can score.
  R@k for larger k is not 0 either: a new item lands in the top k exactly when popularity places
  it in the top k - m of the remaining items, so new R@10/R@50 is a shifted popularity score.
* ``--repeat-fill none`` ranks only the mentioned items (every other item is removed from the
  ranking, see :mod:`parlai_conkd.ranking`'s ``exclude``), so every new item is a miss and all
  "new" numbers are exactly 0, as for a baseline that only ever repeats.

Recency comes from the dialogue text (the position of each item token's last mention); context
items not found in the text follow, latest first mention first.
"""

from typing import List, Sequence

import torch

from parlai_conkd import ranking
from parlai_conkd.agents.conkd_popularity.conkd_popularity import (
    ConkdPopularityAgent,
    PopularityModel,
)
from parlai_conkd.items import ITEM_TOKEN_RE, ItemCatalog, dedupe

FILLS = ('popularity', 'none')


def recency_order(
    context_items: Sequence[int], text: str, catalog: ItemCatalog
) -> List[int]:
    """``context_items`` ordered most recently mentioned first (last mention in ``text``).

    Items of ``context_items`` that the text does not name follow, in reverse order of their
    position in ``context_items`` (the task lists them by first mention). Items named in the text
    but not in ``context_items`` are ignored: the task's list is the authority.
    """
    wanted = set(int(i) for i in context_items)
    mentions = []
    for match in ITEM_TOKEN_RE.finditer(text or ''):
        item = catalog.by_token(match.group(0))
        if item is not None and item.index in wanted:
            mentions.append(item.index)
    ordered = dedupe(reversed(mentions))
    seen = set(ordered)
    return ordered + [
        int(i) for i in reversed(list(context_items)) if int(i) not in seen
    ]


class RepeatModel(PopularityModel):
    """Scores = popularity counts, with the context items lifted above every count.

    ``context``: ``LongTensor[B, L]`` of catalog indices, most recent first, padded with -1.
    The item at position j gets ``max(counts) + 1 + (L - j)``, so context items keep their
    recency order and outrank all others; the others keep their counts (ties by expectation).
    """

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        scores = super().forward(context).clone()
        batch, width = context.shape
        valid = context >= 0
        if valid.any():
            top = self.counts.max() + 1
            bonus = top + torch.arange(
                width, 0, -1, device=scores.device, dtype=scores.dtype
            )
            rows = (
                torch.arange(batch, device=context.device)
                .unsqueeze(1)
                .expand(batch, width)
            )
            scores[rows[valid], context[valid]] = bonus.unsqueeze(0).expand(
                batch, width
            )[valid]
        return scores

    # item_log_probs is PopularityModel's: log_softmax(log(scores + smoothing)) over these scores
    # (context items first, by recency)


class ConkdRepeatAgent(ConkdPopularityAgent):
    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('Repeat baseline')
        group.add_argument(
            '--repeat-fill',
            type=str,
            default='popularity',
            choices=FILLS,
            help='How items never mentioned in the dialogue are ranked below the mentioned ones: '
            'popularity (training-label counts) or none (left out of the ranking: a gold item '
            'that was not mentioned is a miss).',
        )
        return parser

    def build_model(self):
        return RepeatModel(len(self.catalog), self.opt['popularity_smoothing'])

    def _context_ids(self, context_items: Sequence[int], text: str) -> List[int]:
        return recency_order(context_items, text, self.catalog)

    def _exclusion(self, batch):
        exclude = super()._exclusion(batch)
        if self.opt.get('repeat_fill', 'popularity') == 'popularity':
            return exclude
        mentioned = ranking.exclusion_mask(
            batch.context_items, len(self.catalog), device=batch.context.device
        )
        return ~mentioned if exclude is None else exclude | ~mentioned
