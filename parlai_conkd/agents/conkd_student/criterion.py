"""The student's criterion: ParlAI's per-token cross-entropy, plus the ConKD term from the same softmax.

ParlAI's ``TorchGeneratorAgent.compute_loss`` calls ``self.criterion(scores, labels)`` and builds
its loss, ppl and accuracy metrics from the result; ``build_criterion`` is the hook to replace it.
Given a target for the next call (``distilling``), this criterion computes the NLL and the KD
together (:func:`parlai_conkd.fused_loss.nll_and_kd`: one log-softmax, one fused backward) and keeps
the KD for the caller; otherwise it is plain cross-entropy.
"""

from contextlib import contextmanager

import torch
import torch.nn.functional as F

from parlai_conkd.distill import at_least_float
from parlai_conkd.fast_target import DistillTarget
from parlai_conkd.fused_loss import nll_and_kd
from parlai_conkd.item_vocab import ItemVocab


class DistillingCrossEntropy(torch.nn.Module):
    def __init__(self, ignore_index: int):
        super().__init__()
        self.ignore_index = ignore_index
        self._pending = None
        self.last_kd = None

    @contextmanager
    def distilling(self, target: DistillTarget, item_vocab: ItemVocab):
        """Within the block, the next call also computes KD against ``target`` (into ``last_kd``)."""
        self._pending, self.last_kd = (target, item_vocab), None
        try:
            yield self
        finally:
            self._pending = None

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self._pending is None:
            # float32 like ParlAI's FP16SafeCrossEntropy when the model runs in half precision
            return F.cross_entropy(
                at_least_float(scores),
                labels,
                ignore_index=self.ignore_index,
                reduction='none',
            )
        (target, item_vocab), self._pending = self._pending, None
        nll, self.last_kd = nll_and_kd(
            scores, labels, target, item_vocab, self.ignore_index
        )
        return nll
