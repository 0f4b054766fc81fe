"""The ConKD target of a batch, fast: what :func:`parlai_conkd.distill.conkd_terms` defines, built
without vocabulary-sized temporaries (plain torch, no ParlAI import).

``KL(q || p) = sum q log q - sum q log p``. The first sum has no gradient and is computed once with
the target (:func:`make_target`); the second is linear in q, ``(1 - w) E_dial[log p] + w E_rec[log p]``,
two batched dot products, so the [B,T,V] target is never built (the fused loss,
:mod:`parlai_conkd.fused_loss`, takes it from there). Padding steps need no target: the dense
dialogue-teacher distribution is kept for the real steps only, packed [n,V] in row-major order,
the order in which the student's scores come (issue #26).

Precision: the target is computed in float32 whatever the models run in. Half-precision (fp16/bf16)
scores from a ``--fp16`` teacher are promoted first and autocast is switched off inside (issue #17).
"""

import contextlib
import functools
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

from parlai_conkd.distill import (
    Distribution,
    TopK,
    at_least_float,
    check_gate_and_temperature,
    gate_values,
    tempered,
)
from parlai_conkd.item_vocab import ItemVocab

#: stands in for log(0) where a product with p = 0 must give exactly 0 (any p > 0 in float32 has
#: log p > -104, so no real log-probability is changed by clamping at this value)
LOG_ZERO = -1000.0


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(a * b).sum(-1)`` for [..., K] tensors (``torch.linalg.vecdot``).

    Not a batched GEMV (``bmm`` of [R,1,K] by [R,K,1]), which this used to be to avoid the [..., K]
    temporary: on CPU that runs at under 1 GFLOP/s, and measured on the zoo student's blocks
    ([99, 6924] and [99, 10531], one thread) it takes 6x vecdot's time, about 12 ms of a live soft
    step (issue #26's profile)."""
    return torch.linalg.vecdot(a, b)


def _plogp(probs: torch.Tensor) -> torch.Tensor:
    """``sum p log p`` over the last dim with ``0 log 0 = 0``."""
    return torch.xlogy(probs, probs).sum(-1)


def without_autocast(fn):
    """Run ``fn`` with autocast off: the loss sums vocabulary-sized products, and autocast would run
    its matmuls (bmm, baddbmm, @) in bf16/fp16 (measured: KD off by 1e-2 under CPU bf16 autocast).
    Half-precision inputs are promoted by :func:`at_least_float` instead (issue #17)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device in ('cpu', 'cuda'):
                if torch.is_autocast_enabled(device):
                    stack.enter_context(torch.autocast(device, enabled=False))
            return fn(*args, **kwargs)

    return wrapper


@dataclass
class DistillTarget:
    """The ConKD target of a batch, ``q[b,t] = (1 - w[b,t]) * dial[b,t] + w[b,t] * rec_V[b]``.

    Probabilities at the distillation temperature: ``dial`` is [n,V] for the n real (non-padding)
    steps in row-major order (``real``: their flat indices in [B*T]), or a :class:`TopK` [B,T,k]
    over vocabulary ids; ``rec`` [B,N] or :class:`TopK` over catalog indices. ``plogp`` is
    ``sum q log q`` [B,T]; ``weight``, ``gate``, ``plogp`` are zero on padding.

    The student's side (:meth:`expected_log_prob`, :meth:`subtract_scaled_`) works on the same n
    real steps, packed [n,V] in row-major order (issue #26: the student's output layer and softmax
    run at those steps only); :meth:`at_real_steps` packs a [B,T] field the same way.
    """

    dial: Distribution
    rec: Distribution
    weight: torch.Tensor
    plogp: torch.Tensor
    gate: torch.Tensor
    rec_steps: torch.Tensor
    mask: torch.Tensor
    temperature: float
    real: Optional[torch.Tensor] = None

    def at_real_steps(self, field: torch.Tensor) -> torch.Tensor:
        """A [B,T,...] tensor's rows at the real steps, packed [n,...] in row-major order."""
        return field[self.mask]

    def _example_runs(self) -> List[Tuple[int, int, int]]:
        """``(b, start, end)`` per example with real steps: its rows of the packed [n,...] steps
        (row-major packing keeps each example's steps together, whatever the padding side).
        """
        counts = self.mask.sum(dim=1).tolist()
        runs, start = [], 0
        for b, count in enumerate(counts):
            if count:
                runs.append((b, start, start + count))
                start += count
        return runs

    def _dial_rows(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """A top-k dialogue teacher at the real steps: values and vocabulary ids, [n,k]."""
        return self.at_real_steps(self.dial.values), self.at_real_steps(
            self.dial.indices
        )

    def _rec_rows(self) -> TopK:
        """A top-k rec teacher at each real step: its values and vocabulary ids, [n,k]."""
        example = self.mask.nonzero()[:, 0]
        return TopK(self.rec.values[example], self.rec.indices[example])

    def expected_log_prob(
        self, log_probs: torch.Tensor, slots: ItemVocab
    ) -> torch.Tensor:
        """``sum_v q[s,v] * log_probs[s,v]`` [n] for the n real steps (``log_probs`` [n,V], packed
        in row-major order); not differentiable in place of autograd (the fused loss writes the
        gradient itself)."""
        if isinstance(self.dial, TopK):
            values, indices = self._dial_rows()
            on_dial = (values * log_probs.gather(-1, indices)).sum(-1)
        else:
            on_dial = _dot(self.dial, log_probs)
        if isinstance(self.rec, TopK):
            rec = self._rec_rows()
            ids = slots.ids[rec.indices]
            on_rec = (rec.values * log_probs.gather(-1, ids)).sum(-1)
        else:
            on_rec = log_probs.new_empty(log_probs.size(0))
            for b, start, end in self._example_runs():
                on_rec[start:end] = slots.take(log_probs[start:end]) @ self.rec[b]
        weight = self.at_real_steps(self.weight)
        return (1.0 - weight) * on_dial + weight * on_rec

    def subtract_scaled_(
        self, grad: torch.Tensor, coef: torch.Tensor, slots: ItemVocab
    ) -> None:
        """``grad[s,:] -= coef[s] * q[s,:]`` in place for the n real steps (``grad`` [n,V] and
        ``coef`` [n], packed in row-major order)."""
        weight = self.at_real_steps(self.weight)
        on_dial, on_rec = coef * (1.0 - weight), coef * weight
        if isinstance(self.dial, TopK):
            values, indices = self._dial_rows()
            grad.scatter_add_(-1, indices, values * -on_dial.unsqueeze(-1))
        else:
            grad.addcmul_(self.dial, on_dial.unsqueeze(-1), value=-1.0)
        if isinstance(self.rec, TopK):
            rec = self._rec_rows()
            grad.scatter_add_(
                -1, slots.ids[rec.indices], rec.values * -on_rec.unsqueeze(-1)
            )
        else:
            for b, start, end in self._example_runs():
                slots.subtract_outer_(
                    grad[start:end].unsqueeze(0),
                    on_rec[start:end].unsqueeze(0),
                    self.rec[b : b + 1],
                )


def _tempered_topk(dist: TopK, temperature: float) -> Tuple[TopK, torch.Tensor]:
    """Renormalised probabilities of a top-k slice at ``temperature`` and their ``sum p log p``."""
    probs = torch.softmax(at_least_float(dist.values) / temperature, dim=-1)
    return TopK(probs, dist.indices), _plogp(probs)


def _log0(probs: torch.Tensor) -> torch.Tensor:
    """``log probs`` of a fresh tensor with log 0 at :data:`LOG_ZERO` (``0 * log 0`` then is 0)."""
    return probs.log().clamp_(min=LOG_ZERO)


def _dense_mixture_plogp(
    dial: torch.Tensor,
    items_plogp: torch.Tensor,
    items_mass: torch.Tensor,
    dial_plogp: torch.Tensor,
    rec: torch.Tensor,
    weight: torch.Tensor,
    slots: ItemVocab,
) -> torch.Tensor:
    """``sum q log q`` for ``q = (1 - w) * dial + w * rec_V``, per step (``dial`` [n,V], ``rec`` [n,N],
    the rest [n]; the dialogue item block has ``sum d log d = items_plogp`` and mass ``items_mass``),
    without building q over V: words carry the dialogue part alone, so only the item block needs
    the mixture itself."""
    keep = 1.0 - weight
    words = keep * (dial_plogp - items_plogp) + torch.xlogy(keep, keep) * (
        1.0 - items_mass
    )
    q_items = slots.take(dial) * keep.unsqueeze(-1)
    q_items.addcmul_(weight.unsqueeze(-1), rec)
    return words + _dot(q_items, _log0(q_items))


def _topk_mixture_plogp(
    dial: TopK,
    rec: torch.Tensor,
    rec_plogp: torch.Tensor,
    weight: torch.Tensor,
    slots: ItemVocab,
) -> torch.Tensor:
    """The same for a top-k dialogue teacher, in O(k): start from the rec part alone,
    ``w * sum r log r + w log w`` (sum r = 1); each of the k dialogue entries then replaces its
    item's term or adds a word's."""
    keep = 1.0 - weight
    size = int(max(int(slots.ids.max()), int(dial.indices.max()))) + 1
    item_of_token = torch.full((size,), -1, dtype=torch.long, device=slots.ids.device)
    item_of_token[slots.ids] = torch.arange(len(slots), device=slots.ids.device)
    items = item_of_token[dial.indices]  # [B,T,k], -1 for words
    is_item = items >= 0
    rec_at = (
        rec.unsqueeze(1).expand(-1, items.size(1), -1).gather(-1, items.clamp(min=0))
    )
    rec_at = torch.where(is_item, rec_at, torch.zeros_like(rec_at))
    rec_only = weight.unsqueeze(-1) * rec_at
    q = rec_only + keep.unsqueeze(-1) * dial.values
    corrections = torch.xlogy(q, q) - torch.where(
        is_item, torch.xlogy(rec_only, rec_only), torch.zeros_like(q)
    )
    return (
        weight * rec_plogp.unsqueeze(1)
        + torch.xlogy(weight, weight)
        + corrections.sum(-1)
    )


def _gated(
    gate: str,
    item_mass_: torch.Tensor,
    mask: torch.Tensor,
    dial_plogp: torch.Tensor,
    rec_plogp: torch.Tensor,
    mixture_plogp,
    hard_threshold: float,
    static_gate: float,
):
    """``(lambda, w, rec_steps, sum q log q)`` per step (every argument shaped like ``mask``);
    ``mixture_plogp(w)`` gives the soft/static entropy (only called for those gates)."""
    lam = gate_values(gate, at_least_float(item_mass_), static_gate) * mask
    rec_steps = torch.zeros_like(mask)
    if gate == 'none':
        weight, plogp = torch.zeros_like(lam), torch.zeros_like(lam)
    elif gate == 'hard':
        rec_steps = (lam > hard_threshold) & mask
        weight = rec_steps.to(lam.dtype)
        plogp = torch.where(rec_steps, rec_plogp, dial_plogp)
    else:
        weight = lam
        plogp = mixture_plogp(weight)
    return lam, weight, rec_steps, torch.where(mask, plogp, torch.zeros_like(plogp))


#: temporaries of the dense target are made a few steps at a time, this size at most: small blocks
#: are recycled by the allocator (and stay in cache), where [B,T,V]-sized ones cost fresh pages
#: every step (measured: a 47 MB tensor costs 25 ms to allocate and fill on a 2-core CPU, 3 ms reused)
_BLOCK_BYTES = 4 << 20


def _normalise_block(block: torch.Tensor, slots: ItemVocab, item_entropy: bool):
    """Softmax of a block of scores, written over them, without a log-softmax copy, using
    ``log p = (s - max) - log Z``. Returns ``(p, sum p log p, item mass, sum over the item block of
    p log p or None)``."""
    shifted = block.sub_(block.amax(-1, keepdim=True))
    # -inf scores (ParlAI's output layer gives one to the start token): any finite stand-in this
    # low still has p = 0 exactly, and keeps 0 * score at 0 in the dot products
    shifted.clamp_(min=torch.finfo(shifted.dtype).min / 2)
    exps = shifted.exp()
    total = exps.sum(-1)
    log_total = total.log()
    items_mass = slots.take(exps).sum(-1) / total
    all_plogp = _dot(exps, shifted) / total - log_total
    items_plogp = None
    if item_entropy:
        items_plogp = (
            _dot(slots.take(exps), slots.take(shifted)) / total - log_total * items_mass
        )
    probs = torch.div(exps, total.unsqueeze(-1), out=shifted)
    return probs, all_plogp, items_mass, items_plogp


def _dense_target(
    gate,
    scores,
    rec,
    rec_plogp,
    slots,
    mask,
    hard_threshold,
    static_gate,
    temperature,
    dial_item_mass,
    overwrite_scores,
):
    """make_target's dense dialogue-teacher path: the real (non-padding) steps only, a block at a
    time. ``scores`` is [B,T,V] or already packed, [n,V] for the n real steps in row-major order;
    the probabilities come back packed, [n,V]."""
    source = at_least_float(scores).contiguous()
    vocab = source.size(-1)
    flat_source = source.view(-1, vocab)
    flat_mask = mask.reshape(-1)
    real = flat_mask.nonzero().squeeze(1)
    packed = source.dim() == 2
    if packed and source.size(0) != real.numel():
        raise ValueError(
            f'packed teacher scores have {source.size(0)} rows for {real.numel()} real steps'
        )
    # the probabilities go into the scores' own memory (its first n rows) when the caller hands it
    # over or it is our copy: the j-th real step is row >= j, so no row is written before it is read
    own = overwrite_scores or source is not scores
    out = flat_source[: real.numel()] if own else source.new_empty(real.numel(), vocab)
    lam, weight, plogp = (source.new_zeros(flat_mask.numel()) for _ in range(3))
    rec_steps = torch.zeros_like(flat_mask)
    steps = mask.size(-1)
    rows_per_block = max(1, _BLOCK_BYTES // max(1, vocab * source.element_size()))
    for start in range(0, real.numel(), rows_per_block):
        rows = slice(start, start + rows_per_block)
        idx = real[rows]
        example = idx // steps
        if packed:
            block = flat_source[rows] if own else flat_source[rows].clone()
        else:
            block = flat_source.index_select(0, idx)  # a copy: ours
        mass = None if dial_item_mass is None else dial_item_mass.reshape(-1)[idx]
        if temperature != 1.0:
            if mass is None:  # the gate reads the untempered teacher
                mass = slots.take(torch.softmax(block, dim=-1)).sum(-1)
            block.div_(temperature)
        probs, dial_plogp, items_mass, items_plogp = _normalise_block(
            block, slots, item_entropy=gate in ('soft', 'static')
        )
        mass = (items_mass if mass is None else mass).clamp(0.0, 1.0)

        def mixture(
            w,
            probs=probs,
            dial_plogp=dial_plogp,
            items_mass=items_mass,
            items_plogp=items_plogp,
            example=example,
        ):
            return _dense_mixture_plogp(
                probs,
                items_plogp,
                items_mass,
                dial_plogp,
                rec.index_select(0, example),
                w,
                slots,
            )

        outputs = _gated(
            gate,
            mass,
            flat_mask[idx],
            dial_plogp,
            rec_plogp[example],
            mixture,
            hard_threshold,
            static_gate,
        )
        for full, part in zip((lam, weight, rec_steps, plogp), outputs):
            full[idx] = part
        if probs.data_ptr() != out[rows].data_ptr():
            out[rows].copy_(probs)
    shape = mask.shape
    return (
        out,
        real,
        lam.view(shape),
        weight.view(shape),
        rec_steps.view(shape),
        plogp.view(shape),
    )


@without_autocast
@torch.no_grad()
def make_target(
    gate: str,
    dial_scores: Distribution,
    rec_item_log_probs: Distribution,
    item_token_ids,
    mask: torch.Tensor,
    hard_threshold: float = 0.5,
    static_gate: float = 0.5,
    temperature: float = 1.0,
    dial_item_mass: Optional[torch.Tensor] = None,
    overwrite_scores: bool = False,
) -> DistillTarget:
    """The batch's distillation target from the two teachers' outputs (no gradient).

    :param dial_scores: [B,T,V] dialogue-teacher logits or log-probabilities (either: the target is
        their softmax), the same packed as [n,V] for the n real steps of ``mask`` in row-major
        order, or a :class:`TopK` of its log-probabilities.
    :param rec_item_log_probs: [B,N] rec-teacher log-probabilities over catalog items (catalog
        order), or their :class:`TopK` over catalog indices.
    :param item_token_ids: [N] vocabulary id of each catalog item (or an :class:`ItemVocab`).
    :param mask: [B,T] true on real (non-padding) target steps.
    :param dial_item_mass: the gate lambda; required with a top-k teacher (the cache stores it
        exactly), computed from the dense teacher otherwise.
    :param overwrite_scores: the dense ``dial_scores`` are the caller's to give away: the target's
        probabilities are written into their memory.
    """
    check_gate_and_temperature(gate, temperature)
    slots = (
        ItemVocab.of(item_token_ids)
        if torch.is_tensor(item_token_ids)
        else item_token_ids
    )
    mask = mask.bool()
    if isinstance(rec_item_log_probs, TopK):
        rec, rec_plogp = _tempered_topk(rec_item_log_probs, temperature)
        rec_rows = rec.values.new_zeros(rec.values.size(0), len(slots)).scatter_(
            -1, rec.indices, rec.values
        )
    else:
        rec = rec_rows = tempered(at_least_float(rec_item_log_probs), temperature).exp()
        rec_plogp = _plogp(rec)
    if isinstance(dial_scores, TopK):
        if dial_item_mass is None:
            raise ValueError(
                'a top-k dialogue teacher needs its exact item mass (dial_item_mass)'
            )
        dial, dial_plogp = _tempered_topk(dial_scores, temperature)
        lam, weight, rec_steps, plogp = _gated(
            gate,
            dial_item_mass,
            mask,
            dial_plogp,
            rec_plogp.unsqueeze(1).expand_as(dial_plogp),
            lambda w: _topk_mixture_plogp(dial, rec_rows, rec_plogp, w, slots),
            hard_threshold,
            static_gate,
        )
    else:
        dial, real, lam, weight, rec_steps, plogp = _dense_target(
            gate,
            dial_scores,
            rec_rows,
            rec_plogp,
            slots,
            mask,
            hard_threshold,
            static_gate,
            temperature,
            dial_item_mass,
            overwrite_scores,
        )
        return DistillTarget(
            dial=dial,
            rec=rec,
            weight=weight,
            plogp=plogp,
            gate=lam,
            rec_steps=rec_steps,
            mask=mask,
            temperature=float(temperature),
            real=real,
        )
    return DistillTarget(
        dial=dial,
        rec=rec,
        weight=weight,
        plogp=plogp,
        gate=lam,
        rec_steps=rec_steps,
        mask=mask,
        temperature=float(temperature),
    )
