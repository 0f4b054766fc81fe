"""``-m conkd_popularity``: the popularity floor for every recommendation table.

Ranks items by how often they were a training label (``new_items`` of the training examples;
on ``redial_crs:rec``, one count per example), the same ranking for every context. Same data
handling, metrics, model-file format and ``item_log_probs`` as ``-m conkd_rec_teacher``, so the
two are compared under one evaluation::

    parlai train_model -m conkd_popularity -t redial_crs:rec -mf /tmp/pop/model -eps 1
    parlai eval_model -mf /tmp/pop/model -t redial_crs:rec -dt test

Training defaults to ``-dt train:ordered``: ParlAI's plain ``train`` samples examples with
replacement, which would count some labels twice and miss others. Counting whole epochs twice
leaves the ranking unchanged. Ties (e.g. never-seen items) are
scored by expectation (see :mod:`parlai_conkd.ranking`), so catalog order cannot help it.
"""

from typing import Optional

import torch
import torch.nn as nn

from parlai_conkd.agents.item_ranking import ItemRankingAgent


class PopularityModel(nn.Module):
    """Scores = training-label counts, whatever the context."""

    def __init__(self, num_items: int, smoothing: float = 1.0):
        super().__init__()
        self.smoothing = smoothing
        self.register_buffer('counts', torch.zeros(num_items))

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.counts.unsqueeze(0).expand(context.size(0), -1)

    def add(self, items: torch.Tensor) -> None:
        self.counts.index_add_(
            0, items, torch.ones(items.numel(), device=self.counts.device)
        )

    @torch.no_grad()
    def item_log_probs(
        self, context: torch.Tensor, exclude: Optional[torch.Tensor] = None
    ):
        """Add-``smoothing`` relative frequencies, ``[B, N]`` log-probabilities."""
        scores = torch.log(self(context) + self.smoothing)
        if exclude is not None:
            scores = scores.masked_fill(exclude, float('-inf'))
        return torch.log_softmax(scores, dim=-1)


class ConkdPopularityAgent(ItemRankingAgent):
    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('Popularity baseline')
        group.add_argument(
            '--popularity-smoothing',
            type=float,
            default=1.0,
            help='Add-k smoothing of the counts in item_log_probs (the ranking ignores it).',
        )
        # ParlAI's plain 'train' samples examples with replacement; counting must see each
        # training example exactly once per epoch.
        parser.set_defaults(datatype='train:ordered')
        return parser

    def build_model(self):
        return PopularityModel(len(self.catalog), self.opt['popularity_smoothing'])

    def _should_initialize_optimizer(self) -> bool:
        return False  # nothing to optimise: training only counts

    def train_step(self, batch):
        if batch.batchsize == 0:
            return None
        scores = self.model(batch.context)
        # metrics on the counts *before* this batch, as for a model that has not seen it
        self.record_ranking_metrics(scores.clone(), batch)
        items = [i for items in batch.new_items for i in items]
        if items:
            self.model.add(torch.tensor(items, device=self.model.counts.device))
        return None
