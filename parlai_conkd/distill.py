"""ConKD gates and the distillation loss, in plain torch (no ParlAI import).

Notation, per example b and target step t (V = vocabulary, I = the item tokens, N = |I|):

- ``p_dial[b,t,:]``   dialogue teacher's next-token distribution over V
- ``p_rec[b,:]``      recommendation teacher's distribution over the N catalog items, placed on
                      the item tokens of V (zero on every word): ``p_rec_V[b, I[n]] = p_rec[b, n]``
- gate ``lambda[b,t] = sum_{v in I} p_dial[b,t,v]`` (the dialogue teacher's item mass)
- targets:
    hard:   ``q = p_rec_V`` where ``lambda > threshold``, else ``p_dial``
    soft:   ``q = lambda * p_rec_V + (1 - lambda) * p_dial``
    static: soft with a constant ``lambda`` (default 0.5), the paper's ablation
    none:   no distillation (NLL only: the baseline)
  All three are ``q = (1 - w) * p_dial + w * p_rec_V`` with a per-step weight ``w``: the gate
  (soft, static) or ``1[lambda > threshold]`` (hard).
- ``KD[b,t] = tau^2 * KL(q_tau || p_student_tau)`` with ``0 log 0 = 0``, where ``_tau`` means the
  teacher/student log-probabilities divided by the temperature tau and renormalised (Hinton et al.;
  the tau^2 factor keeps gradient scale independent of tau). The gate itself always uses the
  untempered teacher (it is a probability, not a target).
- total loss ``= (1 - alpha) * NLL + alpha * KD``, both averaged over non-padding target tokens.

How it is computed for training: :mod:`parlai_conkd.fast_target` (the target without [B,T,V]
temporaries) and :mod:`parlai_conkd.fused_loss` (NLL and KD from one softmax, hand-written
backward). :func:`conkd_terms` is the same loss through plain autograd, kept as the readable
reference the fused one is tested against.

Precision: the target and the loss are computed in float32 whatever the models run in. Half-precision
(fp16/bf16) scores from a ``--fp16`` student or teacher are promoted first, autocast is switched off
inside the loss, and the gradient is handed back in the logits' own dtype (issue #17).
"""
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import torch

GATES = ('none', 'static', 'hard', 'soft')


@dataclass
class TopK:
    """A distribution kept as its k largest entries (the teacher cache's form).

    ``values`` [..., k] log-probabilities (or, inside :class:`DistillTarget`, probabilities) and
    ``indices`` [..., k] their ids: vocabulary ids for the dialogue teacher, catalog indices for
    the rec teacher. Everything outside the k entries has probability 0: the distribution is
    renormalised over them.
    """

    values: torch.Tensor
    indices: torch.Tensor


Distribution = Union[torch.Tensor, TopK]


@dataclass
class DistillationTerms:
    """Per-step pieces of the ConKD loss; every tensor is [B, T] and zero on padding."""

    kd: torch.Tensor
    gate: torch.Tensor
    rec_steps: torch.Tensor  # bool: steps that distilled from the rec teacher (hard gate only)
    mask: torch.Tensor  # bool: non-padding target steps

    def kd_sum(self) -> torch.Tensor:
        return self.kd.sum()

    def gate_mean(self) -> torch.Tensor:
        return _masked_mean(self.gate, self.mask)

    def rec_share(self) -> torch.Tensor:
        return _masked_mean(self.rec_steps.float(), self.mask)


def item_mass(dial_log_probs: torch.Tensor, item_token_ids) -> torch.Tensor:
    """``lambda[b,t]``: total probability the dialogue teacher puts on item tokens. [B,T,V] -> [B,T]."""
    from parlai_conkd.fast_target import ItemSlots

    return ItemSlots.of(item_token_ids).take(dial_log_probs).exp().sum(-1).clamp(0.0, 1.0)


def items_on_vocab(rec_log_probs: torch.Tensor, item_token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Place item log-probabilities [B,N] on the vocabulary [B,V]; non-item tokens get -inf (p = 0)."""
    out = rec_log_probs.new_full((rec_log_probs.size(0), vocab_size), float('-inf'))
    return out.index_copy(1, item_token_ids, rec_log_probs)


def tempered(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Renormalised ``p^(1/tau)`` in log space; entries at -inf (p = 0) stay at -inf."""
    if temperature == 1.0:
        return log_probs
    return torch.log_softmax(log_probs / temperature, dim=-1)


def gate_values(kind: str, dial_item_mass: torch.Tensor, static_gate: float = 0.5) -> torch.Tensor:
    if kind == 'static':
        return torch.full_like(dial_item_mass, float(static_gate))
    if kind in ('hard', 'soft'):
        return dial_item_mass
    if kind == 'none':
        return torch.zeros_like(dial_item_mass)
    raise ValueError(f'unknown gate {kind!r}; choose one of {GATES}')


def target_log_probs(
    kind: str,
    dial_log_probs: torch.Tensor,
    rec_vocab_log_probs: torch.Tensor,
    gate: torch.Tensor,
    hard_threshold: float = 0.5,
):
    """The dense distillation target ``log q`` [B,T,V] and the hard gate's rec-step mask [B,T].

    The loss never materialises this (see :func:`make_target`); it is the definition, kept for
    inspection, plots and tests.
    """
    rec = rec_vocab_log_probs.unsqueeze(1).expand_as(dial_log_probs)
    if kind == 'hard':
        rec_steps = gate > hard_threshold
        return torch.where(rec_steps.unsqueeze(-1), rec, dial_log_probs), rec_steps
    if kind in ('soft', 'static'):
        lam = gate.unsqueeze(-1)
        mixed = torch.logaddexp(torch.log(lam) + rec, torch.log1p(-lam) + dial_log_probs)
        return mixed, torch.zeros_like(gate, dtype=torch.bool)
    raise ValueError(f'gate {kind!r} has no distillation target; choose one of hard/soft/static')


def kl_divergence(target_log_probs: torch.Tensor, student_log_probs: torch.Tensor) -> torch.Tensor:
    """``KL(q || p)`` over the last dim with ``0 log 0 = 0``; finite whenever p > 0 where q > 0."""
    q = target_log_probs.exp()
    terms = q * (target_log_probs - student_log_probs)
    return torch.where(q > 0, terms, torch.zeros_like(terms)).sum(-1)


# ---------------------------------------------------------------------------------- the loss
def conkd_terms(
    student_logits: torch.Tensor,
    dial_scores: Distribution,
    rec_item_log_probs: Distribution,
    item_token_ids,
    mask: torch.Tensor,
    gate: str = 'soft',
    hard_threshold: float = 0.5,
    static_gate: float = 0.5,
    temperature: float = 1.0,
    dial_item_mass: Optional[torch.Tensor] = None,
) -> DistillationTerms:
    """Per-step distillation terms for a batch through plain autograd (the reference).

    :param student_logits: [B,T,V] student scores for each target step (teacher forcing).
    Every other argument is :func:`make_target`'s. Training uses :func:`nll_and_kd`, which gives
    the same values and gradients from one softmax shared with the NLL.
    """
    from parlai_conkd.fast_target import without_autocast

    return without_autocast(_conkd_terms)(student_logits, dial_scores, rec_item_log_probs, item_token_ids, mask,
                                          gate, hard_threshold, static_gate, temperature, dial_item_mass)


def _conkd_terms(student_logits, dial_scores, rec_item_log_probs, item_token_ids, mask, gate, hard_threshold,
                 static_gate, temperature, dial_item_mass):
    from parlai_conkd.fast_target import ItemSlots, at_least_float, make_target

    target = make_target(gate, dial_scores, rec_item_log_probs, item_token_ids, mask,
                         hard_threshold, static_gate, temperature, dial_item_mass)
    if gate == 'none':
        zeros = torch.zeros_like(target.gate)
        return DistillationTerms(kd=zeros, gate=target.gate, rec_steps=target.rec_steps, mask=target.mask)
    student = torch.log_softmax(at_least_float(student_logits) / temperature, dim=-1)
    expected = target.expected_log_prob(student, ItemSlots.of(item_token_ids))
    kd = (target.plogp - expected) * (temperature ** 2)
    kd = torch.where(target.mask, kd, torch.zeros_like(kd))
    return DistillationTerms(kd=kd, gate=target.gate, rec_steps=target.rec_steps, mask=target.mask)


def mix_losses(nll_sum: torch.Tensor, kd_sum: torch.Tensor, num_tokens, kd_weight: float) -> torch.Tensor:
    """``(1 - alpha) * NLL + alpha * KD``, each averaged over the batch's target tokens."""
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f'kd weight must be in [0, 1], got {kd_weight}')
    return ((1.0 - kd_weight) * nll_sum + kd_weight * kd_sum) / max(float(num_tokens), 1.0)


def topk_log_probs(log_probs: torch.Tensor, k: int):
    """Compress a distribution to its k most likely entries (what the teacher cache stores)."""
    k = min(k, log_probs.size(-1))
    values, indices = log_probs.topk(k, dim=-1)
    return values, indices


def from_topk(values: torch.Tensor, indices: torch.Tensor, size: int) -> torch.Tensor:
    """Dense log-probabilities from a top-k slice, renormalised over the kept entries (others p=0).

    This is the cache's approximation: the tail beyond the top k is dropped, so the target is
    the teacher's distribution conditioned on its top k.
    """
    dense = values.new_full((*values.shape[:-1], size), float('-inf'))
    return torch.log_softmax(dense.scatter(-1, indices, values), dim=-1)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    if count == 0:
        return values.new_zeros(())
    return (values * mask).sum() / count
