"""The generators' teacher-forced pass at the real label steps only (issue #26).

ParlAI's ``TorchGeneratorAgent.compute_loss`` runs the output layer, the softmax and the criterion
at every ``[B, T]`` label step, padding included; on ReDial about 60% of them are padding, and on a
small generator the vocabulary-sized work is most of a training step (measured at the zoo's shape:
the step at the real steps only takes 0.58 of the padded one's time). Here the model scores the
real steps alone, packed ``[n, V]`` in row-major order (the order of ``labels[labels != NULL]``),
and the loss and ParlAI's metrics are computed from those rows: the same values, without the
padding's share of the work.

- :class:`RealStepsTransformerGeneratorModel`: ParlAI's transformer generator whose
  ``decode_forced`` applies the output layer at the real steps while :func:`scoring_real_steps`
  is active (the HF backbone's model has the same switch: ``causal_lm.py``). The switch is an
  attribute so that the call still goes through ``self.model(...)`` (under
  ``multiprocessing_train`` that is DistributedDataParallel's forward, which its gradient
  synchronisation needs).
- :class:`RealStepLossMixin`: ``compute_loss`` with the same metrics as ParlAI's (loss, ppl,
  token_acc, token_em, per-token hook); ``model_output[0]`` is the packed ``[n, V]`` scores.
  ParlAI's ``--verbose`` token details read padded scores: with them on, ParlAI's own
  ``compute_loss`` runs.
"""

from contextlib import contextmanager
from typing import Optional

import torch
from parlai.agents.transformer.modules import TransformerGeneratorModel
from parlai.core.metrics import AverageMetric
from parlai.core.torch_generator_agent import PPLMetric

from parlai_conkd.decoding import row_max


@contextmanager
def scoring_real_steps(model, mask: torch.Tensor):
    """Within the block, ``model``'s teacher-forced pass scores the ``mask`` steps only (bool
    ``[B, T]``, aligned with the labels): ``(scores [n, V], None)`` instead of ParlAI's
    ``(scores [B, T, V], preds [B, T])`` (a frozen teacher needs no predictions: the argmax over
    the vocabulary is left to whoever wants them). ``model``: the unwrapped generator (not a DDP
    wrapper)."""
    model.real_steps = mask
    try:
        yield
    finally:
        model.real_steps = None


class RealStepsTransformerGeneratorModel(TransformerGeneratorModel):
    """ParlAI's ``TransformerGeneratorModel`` (same parameters, same state dict) whose
    ``decode_forced`` can apply the output layer at the real label steps only."""

    #: bool ``[B, T]`` while :func:`scoring_real_steps` is active, else None (ParlAI's pass)
    real_steps: Optional[torch.Tensor] = None

    def decode_forced(self, encoder_states, ys):
        if self.real_steps is None:
            return super().decode_forced(encoder_states, ys)
        # ParlAI's decode_forced (torch_generator_agent.py), the output layer at the real steps
        if (ys[:, 0] == self.START_IDX).any():
            raise AssertionError(
                'decode_forced adds the start token to the labels itself: a label that already '
                'starts with it would get it twice'
            )
        inputs = self._get_initial_forced_decoder_input(
            ys.size(0), ys.narrow(1, 0, ys.size(1) - 1)
        )
        latent, _ = self.decoder(inputs, encoder_states)
        # ParlAI's output layer takes [B, T, D]: the packed steps as one row
        scores = self.output(latent[self.real_steps].unsqueeze(0)).squeeze(0)
        return scores, None


class RealStepLossMixin:
    """ParlAI's ``compute_loss`` on the real label steps (see the module docstring). Needs
    ``_unwrapped_model()``; the model must honour :func:`scoring_real_steps`."""

    #: False: ParlAI's padded pass (the reference the tests and the benchmark compare with)
    real_step_loss = True

    def compute_loss(self, batch, return_output=False):
        if batch.label_vec is None:
            raise ValueError('Cannot compute loss without a label.')
        if getattr(self, 'show_token_details', False) or not self.real_step_loss:
            return super().compute_loss(batch, return_output=return_output)
        labels = batch.label_vec
        notnull = labels.ne(self.NULL_IDX)
        with scoring_real_steps(self._unwrapped_model(), notnull):
            scores, _, *rest = self.model(*self._model_input(batch), ys=labels)
        scores = at_real_steps(scores, notnull)
        # ParlAI's argmax (the first maximal entry), without argmax's slow walk over [n, V] on CPU
        real_preds = row_max(scores.detach())[1]
        real_loss = self.criterion(scores, labels[notnull])
        # ParlAI's metrics, from [B, T] tensors that are zero (loss) / NULL (preds) at padding
        loss_per_token = torch.zeros(
            labels.shape, dtype=real_loss.dtype, device=labels.device
        ).masked_scatter_(notnull, real_loss.detach())
        preds = torch.full_like(labels, self.NULL_IDX).masked_scatter_(
            notnull, real_preds
        )
        self.record_local_metric(
            'loss', AverageMetric.from_mask(loss_per_token, notnull)
        )
        self.record_local_metric('ppl', PPLMetric.from_mask(loss_per_token, notnull))
        self.record_local_metric(
            'token_acc', AverageMetric.from_mask(labels == preds, notnull)
        )
        num_target_tokens = notnull.long().sum(dim=-1)
        num_tokens_correct = ((labels == preds) * notnull).sum(dim=-1)
        self.record_local_metric(
            'token_em', AverageMetric.many(num_tokens_correct == num_target_tokens)
        )
        self.record_per_token_metrics(batch, loss_per_token)
        loss = real_loss.sum() / num_target_tokens.sum()  # average loss per token
        model_output = (scores, preds, *rest)
        return (loss, model_output) if return_output else loss


def at_real_steps(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``scores`` of the ``mask`` steps, ``[n, V]``: as they are when the model honoured
    :func:`scoring_real_steps`, else (a model class of a subclass that ignores the switch, padded
    ``[B, T, V]``) the rows of those steps: the same values, without the saving.

    :raises ValueError: for any other shape."""
    if scores.dim() == 3 and scores.shape[:2] == mask.shape:
        return scores[mask]
    if scores.dim() != 2 or scores.size(0) != int(mask.sum()):
        raise ValueError(
            f'teacher-forced scores of shape {tuple(scores.shape)} are neither the '
            f'{int(mask.sum())} real label steps (scoring_real_steps) nor the padded '
            f'{tuple(mask.shape)} batch'
        )
    return scores


def real_step_rows(mask: torch.Tensor) -> torch.Tensor:
    """``rows[b, t]``: the row of step ``(b, t)`` among the packed real steps of ``mask`` [B, T]
    (row-major), -1 at padding."""
    flat = mask.reshape(-1)
    rows = flat.long().cumsum(0) - 1
    return torch.where(flat, rows, torch.full_like(rows, -1)).view(mask.shape)
