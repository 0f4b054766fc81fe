"""The ConKD loss as the paper defines it (Jung, Jung & Chen, EMNLP 2023, Sec. 3), in plain torch.

Per example b and target step t (V: the vocabulary, I: the vocabulary ids of the N catalog items):

- ``p_dial[b,t,:]``: the dialogue teacher's next-token distribution over V;
- ``p_rec[b,:]``: the recommendation teacher's distribution over the N items, placed on the item
  tokens of V (zero on every word): ``p_rec_V[b, I[n]] = p_rec[b, n]``;
- the gate ``lambda[b,t] = sum_{v in I} p_dial[b,t,v]``, the dialogue teacher's item mass;
- the target ``q[b,t] = (1 - w[b,t]) * p_dial[b,t] + w[b,t] * p_rec_V[b]``, with the weight
  ``w = lambda`` (soft gate), a constant ``w`` (static gate, the paper's ablation),
  ``w = 1[lambda > threshold]`` (hard gate), or no distillation at all (gate none, the baseline);
- ``KD[b,t] = tau^2 * KL(q^tau || p_student^tau)`` with ``0 log 0 = 0``: at temperature tau each
  teacher distribution and the student's are softened (``softmax(log p / tau)``) before the mixing
  and the KL (Hinton et al.; tau^2 keeps the gradient scale). The gate reads the untempered
  teacher: it is a probability, not a target;
- the loss ``(1 - alpha) * NLL + alpha * KD``, both averaged over the real (non-padding) steps.

A teacher kept as its top k entries (:class:`TopK`, the teacher cache's form) stands for its
distribution renormalised over those k (:func:`from_topk`); the gate then comes from the cache,
which stores the exact item mass.

:func:`conkd_terms` computes KD exactly this way, materialising ``q`` over V: the reference.
Training computes the same numbers without [B,T,V] temporaries (:mod:`parlai_conkd.fast_target`,
:mod:`parlai_conkd.fused_loss`); tests/student/test_fused_loss.py checks both against each other.
"""

from dataclasses import dataclass
from typing import Optional, Union

import torch

GATES = ('none', 'static', 'hard', 'soft')


@dataclass
class TopK:
    """A distribution kept as its k largest entries: ``values`` [..., k] log-probabilities and
    ``indices`` [..., k] their ids (vocabulary ids for the dialogue teacher, catalog indices for
    the rec teacher). Entries outside the k have probability 0."""

    values: torch.Tensor
    indices: torch.Tensor


Distribution = Union[torch.Tensor, TopK]


def from_topk(values: torch.Tensor, indices: torch.Tensor, size: int) -> torch.Tensor:
    """Dense log-probabilities [..., size] of a top-k slice, renormalised over the kept entries
    (the others get -inf): the teacher's distribution conditioned on its top k."""
    dense = values.new_full((*values.shape[:-1], size), float('-inf'))
    return torch.log_softmax(dense.scatter(-1, indices, values), dim=-1)


def item_mass(
    dial_log_probs: torch.Tensor, item_token_ids: torch.Tensor
) -> torch.Tensor:
    """The gate ``lambda`` [B,T]: the probability ``dial_log_probs`` [B,T,V] puts on the item
    tokens ``item_token_ids`` [N]."""
    return dial_log_probs.index_select(-1, item_token_ids).exp().sum(-1).clamp(0.0, 1.0)


def gate_values(
    kind: str, dial_item_mass: torch.Tensor, static_gate: float = 0.5
) -> torch.Tensor:
    """The gate per step [B,T] for a ``--gate`` kind, from the item mass [B,T]."""
    if kind == 'static':
        return torch.full_like(dial_item_mass, float(static_gate))
    if kind in ('hard', 'soft'):
        return dial_item_mass
    if kind == 'none':
        return torch.zeros_like(dial_item_mass)
    raise ValueError(f'unknown gate {kind!r}; choose one of {GATES}')


def tempered(log_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Renormalised ``p^(1/tau)`` in log space; entries at -inf (p = 0) stay at -inf."""
    if temperature == 1.0:
        return log_probs
    return torch.log_softmax(log_probs / temperature, dim=-1)


def items_on_vocab(
    rec_log_probs: torch.Tensor, item_token_ids: torch.Tensor, vocab_size: int
) -> torch.Tensor:
    """Item log-probabilities [B,N] placed on the vocabulary [B,V]; words get -inf (p = 0)."""
    out = rec_log_probs.new_full((rec_log_probs.size(0), vocab_size), float('-inf'))
    return out.index_copy(1, item_token_ids, rec_log_probs)


def target_log_probs(
    kind: str,
    dial_log_probs: torch.Tensor,
    rec_vocab_log_probs: torch.Tensor,
    gate: torch.Tensor,
    hard_threshold: float = 0.5,
):
    """``log q`` [B,T,V] from ``log p_dial`` [B,T,V], ``log p_rec_V`` [B,V] and the gate [B,T],
    with the hard gate's rec steps [B,T] (bool; all False for soft/static)."""
    rec = rec_vocab_log_probs.unsqueeze(1).expand_as(dial_log_probs)
    if kind == 'hard':
        rec_steps = gate > hard_threshold
        return torch.where(rec_steps.unsqueeze(-1), rec, dial_log_probs), rec_steps
    if kind in ('soft', 'static'):
        lam = gate.unsqueeze(-1)
        mixed = torch.logaddexp(
            torch.log(lam) + rec, torch.log1p(-lam) + dial_log_probs
        )
        return mixed, torch.zeros_like(gate, dtype=torch.bool)
    raise ValueError(
        f'gate {kind!r} has no distillation target; choose one of hard/soft/static'
    )


def kl_divergence(
    target_log_probs: torch.Tensor, student_log_probs: torch.Tensor
) -> torch.Tensor:
    """``KL(q || p)`` over the last dim with ``0 log 0 = 0``; finite whenever p > 0 where q > 0."""
    q = target_log_probs.exp()
    terms = q * (target_log_probs - student_log_probs)
    return torch.where(q > 0, terms, torch.zeros_like(terms)).sum(-1)


@dataclass
class DistillationTerms:
    """Per-step pieces of the ConKD loss; every tensor is [B,T] and zero on padding."""

    kd: torch.Tensor
    gate: torch.Tensor
    #: bool: steps distilled from the rec teacher (hard gate only)
    rec_steps: torch.Tensor
    #: bool: real (non-padding) target steps
    mask: torch.Tensor

    def kd_sum(self) -> torch.Tensor:
        return self.kd.sum()

    def gate_mean(self) -> torch.Tensor:
        return _masked_mean(self.gate, self.mask)

    def rec_share(self) -> torch.Tensor:
        return _masked_mean(self.rec_steps.float(), self.mask)


def conkd_terms(
    student_logits: torch.Tensor,
    dial_scores: Distribution,
    rec_item_log_probs: Distribution,
    item_token_ids: torch.Tensor,
    mask: torch.Tensor,
    gate: str = 'soft',
    hard_threshold: float = 0.5,
    static_gate: float = 0.5,
    temperature: float = 1.0,
    dial_item_mass: Optional[torch.Tensor] = None,
) -> DistillationTerms:
    """KD per step by the definition above: ``q`` materialised over V, then the KL (autograd).

    :param student_logits: [B,T,V] student scores at each target step (teacher forcing).
    :param dial_scores: [B,T,V] dialogue-teacher logits or log-probabilities, or their :class:`TopK`.
    :param rec_item_log_probs: [B,N] rec-teacher log-probabilities (catalog order), or a :class:`TopK`.
    :param item_token_ids: [N] vocabulary id of each catalog item.
    :param mask: [B,T] true on real target steps.
    :param dial_item_mass: the gate's item mass [B,T]; required with a top-k dialogue teacher.
    :raises ValueError: an unknown gate, ``temperature <= 0``, a top-k teacher without its mass.
    """
    check_gate_and_temperature(gate, temperature)
    vocab, mask = student_logits.size(-1), mask.bool()
    if isinstance(dial_scores, TopK):
        if dial_item_mass is None:
            raise ValueError(
                'a top-k dialogue teacher needs its exact item mass (dial_item_mass)'
            )
        dial_scores = from_topk(dial_scores.values, dial_scores.indices, vocab)
    if isinstance(rec_item_log_probs, TopK):
        rec_item_log_probs = from_topk(
            rec_item_log_probs.values, rec_item_log_probs.indices, len(item_token_ids)
        )
    dial = torch.log_softmax(at_least_float(dial_scores), dim=-1)
    # used as given: the teacher's item_log_probs are normalised
    rec = at_least_float(rec_item_log_probs)
    if dial_item_mass is None:
        dial_item_mass = item_mass(dial, item_token_ids)
    lam = gate_values(gate, at_least_float(dial_item_mass), static_gate) * mask
    if gate == 'none':
        zeros = torch.zeros_like(lam)
        return DistillationTerms(
            kd=zeros, gate=lam, rec_steps=torch.zeros_like(mask), mask=mask
        )
    rec_vocab = items_on_vocab(tempered(rec, temperature), item_token_ids, vocab)
    q, rec_steps = target_log_probs(
        gate, tempered(dial, temperature), rec_vocab, lam, hard_threshold
    )
    student = torch.log_softmax(at_least_float(student_logits) / temperature, dim=-1)
    kd = temperature**2 * kl_divergence(q, student)
    kd = torch.where(mask, kd, torch.zeros_like(kd))
    return DistillationTerms(kd=kd, gate=lam, rec_steps=rec_steps & mask, mask=mask)


def item_conditional_kd(
    student_item_logits: torch.Tensor,
    rec_log_probs: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """The rec teacher distilled into the student's *item-conditional* distribution at every step
    (issue #24, "what"; beyond the paper, whose rec term reaches a step only through the gate).

    ``p_student(i | item, y_<t, x) = softmax_i(z[b,t,I[i]])``, the student's distribution over the
    N items given that it names one; ``KD_item[b,t] = tau^2 * KL(p_rec^tau[b] || p_student^tau(.|
    item)[b,t])``. The rec teacher's distribution is a function of the context alone, so it is an
    equally valid target for the item choice at every step of the reply, whatever the gate.

    :param student_item_logits: ``[B,T,N]`` the student's logits of the item tokens.
    :param rec_log_probs: ``[B,N]`` the rec teacher's log-probabilities (-inf: probability 0).
    :param mask: ``[B,T]`` bool, the real (non-padding) target steps.
    :returns: ``[B,T]``, zero on padding.
    """
    student = torch.log_softmax(
        at_least_float(student_item_logits) / temperature, dim=-1
    )
    target = tempered(at_least_float(rec_log_probs), temperature).unsqueeze(1)
    kd = kl_divergence(target.expand_as(student), student) * temperature**2
    return torch.where(mask, kd, torch.zeros_like(kd))


def mix_losses(
    nll_sum: torch.Tensor, kd_sum: torch.Tensor, num_tokens, kd_weight: float
) -> torch.Tensor:
    """``(1 - alpha) * NLL + alpha * KD``, each averaged over the batch's target tokens."""
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f'kd weight must be in [0, 1], got {kd_weight}')
    return ((1.0 - kd_weight) * nll_sum + kd_weight * kd_sum) / max(
        float(num_tokens), 1.0
    )


def at_least_float(x: torch.Tensor) -> torch.Tensor:
    """Half precision promoted to float32 (the loss sums many small terms); double stays."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def check_gate_and_temperature(gate: str, temperature: float) -> None:
    """Raise ValueError for a gate not in :data:`GATES` or a temperature that is not > 0."""
    if gate not in GATES:
        raise ValueError(f'unknown gate {gate!r}; choose one of {GATES}')
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum()
    return values.new_zeros(()) if count == 0 else (values * mask).sum() / count
