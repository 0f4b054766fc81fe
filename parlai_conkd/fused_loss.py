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
    """On the n real steps, packed [n,V]. Forward: per-step NLL and KD from one log-softmax.
    Backward: their joint gradient, ``g_nll * (p - onehot(y)) + tau * g_kd * (p_tau - q)``,
    written into one buffer."""

    @staticmethod
    @without_autocast
    def forward(ctx, logits, labels, target: DistillTarget, slots: ItemVocab):
        scores = at_least_float(logits)
        log_p = torch.log_softmax(scores, dim=-1)
        nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
        tau = target.temperature
        log_p_tau = log_p if tau == 1.0 else torch.log_softmax(scores / tau, dim=-1)
        kd = (
            target.at_real_steps(target.plogp)
            - target.expected_log_prob(log_p_tau, slots)
        ) * (tau**2)
        ctx.save_for_backward(log_p, labels, *(() if tau == 1.0 else (log_p_tau,)))
        ctx.target, ctx.slots, ctx.dtype = target, slots, logits.dtype
        return nll, kd

    @staticmethod
    @without_autocast
    def backward(ctx, grad_nll, grad_kd):
        log_p, labels, *tempered_ = ctx.saved_tensors
        target, tau = ctx.target, ctx.target.temperature
        zeros = torch.zeros(labels.shape, dtype=log_p.dtype, device=log_p.device)
        g_nll = zeros if grad_nll is None else grad_nll.to(log_p.dtype)
        coef = zeros if grad_kd is None else grad_kd.to(log_p.dtype) * tau
        # a new buffer, as cross-entropy's backward makes: the graph may be reused
        grad = log_p.exp()
        if tau == 1.0:
            grad.mul_((g_nll + coef).unsqueeze(-1))
        else:
            grad.mul_(g_nll.unsqueeze(-1)).add_(
                tempered_[0].exp().mul_(coef.unsqueeze(-1))
            )
        target.subtract_scaled_(grad, coef, ctx.slots)
        grad.scatter_add_(-1, labels.unsqueeze(-1), -g_nll.unsqueeze(-1))
        return grad.to(ctx.dtype), None, None, None


def nll_and_kd(
    logits: torch.Tensor,
    labels: torch.Tensor,
    target: DistillTarget,
    item_token_ids,
    ignore_index: int = -100,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-step NLL (as ``cross_entropy(reduction='none')``) and KD (as :func:`conkd_terms`).

    :param logits: student scores at the n real steps of ``target.mask``, packed [n,V] in
        row-major order (what the generators' loss computes, issue #26); or padded, [B,T,V] or
        [B*T,V] (as ParlAI's criterion sees them), packed here first.
    :param labels: gold ids, [n], or [B,T] / [B*T] with ``ignore_index`` on padding (NLL 0 there).
    :returns: ``(nll, kd)``, each shaped ``logits.shape[:-1]`` (padded input: zero on padding).
    :raises ValueError: when the rows match neither the real steps nor the padded batch.
    """
    slots = (
        ItemVocab.of(item_token_ids)
        if torch.is_tensor(item_token_ids)
        else item_token_ids
    )
    mask = target.mask.reshape(-1)
    rows = logits.reshape(-1, logits.size(-1))
    real = int(mask.sum())
    if rows.size(0) == real:
        return _NllAndKd.apply(rows, labels.reshape(-1), target, slots)
    if rows.size(0) != mask.numel():
        raise ValueError(
            f'student scores have {rows.size(0)} rows: neither the {real} real steps nor the '
            f'{mask.numel()} steps of the padded batch'
        )
    flat_labels = labels.reshape(-1)
    if bool((flat_labels[mask] == ignore_index).any()) or bool(
        (flat_labels[~mask] != ignore_index).any()
    ):
        raise ValueError('labels: padding (ignore_index) differs from the target mask')
    steps = mask.nonzero().squeeze(1)
    nll, kd = _NllAndKd.apply(
        rows.index_select(0, steps), flat_labels[steps], target, slots
    )
    shape = logits.shape[:-1]
    return tuple(
        x.new_zeros(mask.numel()).index_copy(0, steps, x).view(shape) for x in (nll, kd)
    )
