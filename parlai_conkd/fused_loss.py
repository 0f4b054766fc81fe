"""The student's NLL and ConKD KD from one softmax, with a hand-written backward (plain torch).

:func:`nll_and_kd` computes both per step from one log-softmax of the student's logits and writes
their joint gradient ``g_nll (p - onehot) + tau g_kd (p_tau - q)`` in place (a custom autograd
function), instead of autograd's chain of vocabulary-sized temporaries. The KD equals
:func:`parlai_conkd.distill.conkd_terms` (the definition; tests/student/test_fused_loss.py), with
the target from :func:`parlai_conkd.fast_target.make_target`. Computed in float32, autocast off;
the gradient is handed back in the logits' own dtype (issue #17).
"""

from typing import Tuple

import torch

from parlai_conkd.distill import at_least_float
from parlai_conkd.fast_target import DistillTarget, without_autocast
from parlai_conkd.item_vocab import ItemVocab


class _NllAndKd(torch.autograd.Function):
    """Forward: per-step NLL and KD from one log-softmax. Backward: their joint gradient,
    ``g_nll * (p - onehot(y)) + tau * g_kd * (p_tau - q)``, written into one buffer."""

    @staticmethod
    @without_autocast
    def forward(
        ctx, logits, labels, target: DistillTarget, slots: ItemVocab, ignore_index: int
    ):
        batch, steps = target.weight.shape
        scores = at_least_float(logits.reshape(batch, steps, -1))
        labels = labels.reshape(batch, steps)
        valid = labels.ne(ignore_index)
        log_p = torch.log_softmax(scores, dim=-1)
        picked = log_p.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        nll = torch.where(valid, -picked, torch.zeros_like(picked))
        tau = target.temperature
        log_p_tau = log_p if tau == 1.0 else torch.log_softmax(scores / tau, dim=-1)
        kd = (
            target.plogp - target.expected_log_prob(log_p_tau, slots, by_span=True)
        ) * (tau**2)
        kd = torch.where(target.mask, kd, torch.zeros_like(kd))
        ctx.save_for_backward(
            log_p, labels, valid, *(() if tau == 1.0 else (log_p_tau,))
        )
        ctx.target, ctx.slots, ctx.shape, ctx.dtype = (
            target,
            slots,
            logits.shape,
            logits.dtype,
        )
        out_shape = logits.shape[:-1]
        return nll.view(out_shape), kd.view(out_shape)

    @staticmethod
    @without_autocast
    def backward(ctx, grad_nll, grad_kd):
        log_p, labels, valid, *tempered_ = ctx.saved_tensors
        target, tau = ctx.target, ctx.target.temperature
        zeros = torch.zeros(labels.shape, dtype=log_p.dtype, device=log_p.device)
        g_nll = (
            zeros
            if grad_nll is None
            else grad_nll.reshape(labels.shape).to(log_p.dtype) * valid
        )
        coef = (
            zeros
            if grad_kd is None
            else grad_kd.reshape(labels.shape).to(log_p.dtype) * target.mask * tau
        )
        # a new buffer, as cross-entropy's backward makes: the graph may be reused
        grad = log_p.exp()
        if tau == 1.0:
            grad.mul_((g_nll + coef).unsqueeze(-1))
        else:
            grad.mul_(g_nll.unsqueeze(-1)).add_(
                tempered_[0].exp().mul_(coef.unsqueeze(-1))
            )
        target.subtract_scaled_(grad, coef, ctx.slots)
        grad.scatter_add_(-1, labels.clamp(min=0).unsqueeze(-1), -g_nll.unsqueeze(-1))
        return grad.to(ctx.dtype).view(ctx.shape), None, None, None, None


def nll_and_kd(
    logits: torch.Tensor,
    labels: torch.Tensor,
    target: DistillTarget,
    item_token_ids,
    ignore_index: int = -100,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-step NLL (as ``cross_entropy(reduction='none')``) and KD (as :func:`conkd_terms`).

    :param logits: student scores, [B,T,V] or flattened [B*T,V] (as ParlAI's criterion sees them).
    :param labels: gold ids, [B,T] or [B*T]; ``ignore_index`` marks padding (NLL 0 there).
    :returns: ``(nll, kd)``, each shaped ``logits.shape[:-1]``.
    """
    return _NllAndKd.apply(
        logits,
        labels,
        target,
        (
            ItemVocab.of(item_token_ids)
            if torch.is_tensor(item_token_ids)
            else item_token_ids
        ),
        ignore_index,
    )
