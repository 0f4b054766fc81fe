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
- ``KD[b,t] = tau^2 * KL(q_tau || p_student_tau)`` with ``0 log 0 = 0``, where ``_tau`` means the
  teacher/student log-probabilities divided by the temperature tau and renormalised (Hinton et al.;
  the tau^2 factor keeps gradient scale independent of tau). The gate itself always uses the
  untempered teacher (it is a probability, not a target).
- total loss ``= (1 - alpha) * NLL + alpha * KD``, both averaged over non-padding target tokens.
"""
from dataclasses import dataclass
from typing import Optional

import torch

GATES = ('none', 'static', 'hard', 'soft')


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


def item_mass(dial_log_probs: torch.Tensor, item_token_ids: torch.Tensor) -> torch.Tensor:
    """``lambda[b,t]``: total probability the dialogue teacher puts on item tokens. [B,T,V] -> [B,T].

    A product with the items' indicator vector: one pass over the vocabulary, no [B,T,N] copy.
    """
    indicator = dial_log_probs.new_zeros(dial_log_probs.size(-1)).index_fill_(0, item_token_ids, 1.0)
    return dial_log_probs.exp().matmul(indicator).clamp(0.0, 1.0)


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


@dataclass
class TopK:
    """A per-step distribution kept as its k largest log-probabilities (the teacher cache's form).

    ``values`` [B,T,k] log-probabilities, ``indices`` [B,T,k] vocabulary ids. Everything outside
    the k entries has probability 0: the distribution is renormalised over them.
    """

    values: torch.Tensor
    indices: torch.Tensor


def target_log_probs(
    kind: str,
    dial_log_probs: torch.Tensor,
    rec_vocab_log_probs: torch.Tensor,
    gate: torch.Tensor,
    hard_threshold: float = 0.5,
):
    """The dense distillation target ``log q`` [B,T,V] and the hard gate's rec-step mask [B,T].

    The loss never materialises this (see :func:`conkd_terms`); it is the definition, kept for
    inspection and plots.
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


def _plogp(probs: torch.Tensor) -> torch.Tensor:
    """``sum p log p`` over the last dim with ``0 log 0 = 0``."""
    return torch.xlogy(probs, probs).sum(-1)


def _topk_mixture_plogp(dial: TopK, rec: torch.Tensor, lam: torch.Tensor, item_token_ids: torch.Tensor,
                        vocab_size: int) -> torch.Tensor:
    """``sum q log q`` for ``q = lam * rec + (1 - lam) * dial`` with a top-k dialogue teacher, in O(k).

    Without the dialogue part the item block would give ``lam * sum r log r + lam log lam``; each of
    the k teacher entries then either replaces its item's term (an item) or adds a word's term.
    """
    item_of_token = torch.full((vocab_size,), -1, dtype=torch.long, device=item_token_ids.device)
    item_of_token[item_token_ids] = torch.arange(len(item_token_ids), device=item_token_ids.device)
    slots = item_of_token[dial.indices]  # [B,T,k], -1 for words
    is_item = slots >= 0
    rec_at = rec.unsqueeze(1).expand(-1, slots.size(1), -1).gather(-1, slots.clamp(min=0))
    rec_at = torch.where(is_item, rec_at, torch.zeros_like(rec_at))
    lam_k, keep_k = lam.unsqueeze(-1), (1.0 - lam).unsqueeze(-1)
    rec_only = lam_k * rec_at
    q = rec_only + keep_k * dial.values
    corrections = torch.where(is_item, torch.xlogy(q, q) - torch.xlogy(rec_only, rec_only), torch.xlogy(q, q))
    base = lam * _plogp(rec).unsqueeze(1) + torch.xlogy(lam, lam) * rec.sum(-1, keepdim=True)
    return base + corrections.sum(-1)


def conkd_terms(
    student_logits: torch.Tensor,
    dial_log_probs,
    rec_item_log_probs: torch.Tensor,
    item_token_ids: torch.Tensor,
    mask: torch.Tensor,
    gate: str = 'soft',
    hard_threshold: float = 0.5,
    static_gate: float = 0.5,
    temperature: float = 1.0,
    dial_item_mass: Optional[torch.Tensor] = None,
) -> DistillationTerms:
    """Per-step distillation terms for a batch.

    :param student_logits: [B,T,V] student scores for each target step (teacher forcing).
    :param dial_log_probs: [B,T,V] dialogue teacher log-probabilities for the same steps, or a
        :class:`TopK` slice of them (the cache); a top-k teacher is renormalised over its k.
    :param rec_item_log_probs: [B,N] rec teacher log-probabilities over catalog items.
    :param item_token_ids: [N] vocabulary id of each catalog item, in catalog order.
    :param mask: [B,T] true on real (non-padding) target steps.
    :param dial_item_mass: the gate lambda, required with a top-k teacher (the cache stores it
        exactly); computed from ``dial_log_probs`` otherwise.

    ``KL(q || p) = sum q log q - sum q log p``, and the second term is linear in q:
    ``lam * E_rec[log p] + (1 - lam) * E_dial[log p]``. So no [B,T,V] target is built: the
    gradient flows through two expectations (the rec one is a batched matrix-vector product), and
    the target's ``sum q log q``, which has no gradient, is computed without autograd.
    """
    if gate not in GATES:
        raise ValueError(f'unknown gate {gate!r}; choose one of {GATES}')
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    mask = mask.bool()
    if dial_item_mass is None:
        if isinstance(dial_log_probs, TopK):
            raise ValueError('a top-k dialogue teacher needs its exact item mass (dial_item_mass)')
        dial_item_mass = item_mass(dial_log_probs, item_token_ids)
    lam = gate_values(gate, dial_item_mass, static_gate) * mask
    zeros = torch.zeros_like(lam)
    if gate == 'none':
        return DistillationTerms(kd=zeros, gate=lam, rec_steps=zeros.bool(), mask=mask)

    vocab_size = student_logits.size(-1)
    student = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    with torch.no_grad():
        if isinstance(dial_log_probs, TopK):  # renormalised over its k entries
            dial = TopK(torch.softmax(dial_log_probs.values.float() / temperature, -1), dial_log_probs.indices)
            dial_plogp = _plogp(dial.values)
        else:
            dial = tempered(dial_log_probs, temperature).exp()
            dial_plogp = _plogp(dial)
        rec = tempered(rec_item_log_probs, temperature).exp()  # [B,N]
        rec_on_vocab = rec.new_zeros((rec.size(0), vocab_size)).index_copy_(1, item_token_ids, rec)
    if isinstance(dial, TopK):
        expect_dial = (dial.values * student.gather(-1, dial.indices)).sum(-1)
    else:
        expect_dial = (dial * student).sum(-1)
    expect_rec = torch.bmm(student, rec_on_vocab.unsqueeze(-1)).squeeze(-1)  # [B,T]

    with torch.no_grad():
        rec_plogp = _plogp(rec).unsqueeze(1).expand_as(dial_plogp)
        if gate == 'hard':
            rec_steps = (lam > hard_threshold) & mask
            target_plogp = torch.where(rec_steps, rec_plogp, dial_plogp)
        elif isinstance(dial, TopK):
            rec_steps = zeros.bool()
            target_plogp = _topk_mixture_plogp(dial, rec, lam, item_token_ids, vocab_size)
        else:
            rec_steps = zeros.bool()
            # q = lam * rec (items only) + (1 - lam) * dial: words carry the dialogue part alone.
            dial_items = dial.index_select(-1, item_token_ids)  # [B,T,N]
            keep = 1.0 - lam
            words = torch.xlogy(keep, keep) * (1.0 - dial_items.sum(-1)) + keep * (dial_plogp - _plogp(dial_items))
            q_items = dial_items.mul_(keep.unsqueeze(-1)).add_(lam.unsqueeze(-1) * rec.unsqueeze(1))
            target_plogp = words + _plogp(q_items)
    if gate == 'hard':
        expected = torch.where(rec_steps, expect_rec, expect_dial)
    else:
        expected = lam * expect_rec + (1.0 - lam) * expect_dial
    kd = (target_plogp - expected) * (temperature ** 2)
    kd = torch.where(mask, kd, torch.zeros_like(kd))
    return DistillationTerms(kd=kd, gate=lam, rec_steps=rec_steps, mask=mask)


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
