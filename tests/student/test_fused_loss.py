"""The fast target and the fused NLL + KD (one softmax, hand-written backward) against the independent
dense reference (distill.conkd_terms) through plain autograd."""

import pytest
import torch
import torch.nn.functional as F

from parlai_conkd import distill, fast_target
from parlai_conkd.fused_loss import nll_and_kd
from parlai_conkd.item_vocab import ItemVocab
from parlai_conkd.teacher_cache import topk_log_probs
from tests.support import CONTIGUOUS, PAD, _inputs

# any other layout (index_select / index_add path)
SCATTERED = torch.tensor([9, 2, 6, 4, 7])


def _as_topk(dial, rec, k_dial, k_rec):
    values, indices = topk_log_probs(dial, k_dial)
    rec_values, rec_indices = topk_log_probs(rec, k_rec)
    return distill.TopK(values, indices), distill.TopK(rec_values, rec_indices)


def _reference(logits, labels, dial, rec, items, gate, tau, mass):
    """NLL from torch's cross-entropy and KD from the definition (distill.conkd_terms: the target
    materialised over the vocabulary, no fast_target), differentiated by autograd."""
    nll = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        labels.reshape(-1),
        ignore_index=PAD,
        reduction='none',
    ).view(labels.shape)
    kd = distill.conkd_terms(
        logits,
        dial,
        rec,
        items,
        labels.ne(PAD),
        gate=gate,
        hard_threshold=0.3,
        static_gate=0.4,
        temperature=tau,
        dial_item_mass=mass,
    ).kd
    return nll, kd


@pytest.mark.parametrize('items', [CONTIGUOUS, SCATTERED], ids=['block', 'scattered'])
@pytest.mark.parametrize('gate', ['soft', 'hard', 'static'])
@pytest.mark.parametrize('tau', [1.0, 2.0])
@pytest.mark.parametrize('form', ['dense', 'topk'])
def test_fused_values_and_gradients_equal_autograd_reference(items, gate, tau, form):
    dial, rec, labels, logits = _inputs(items)
    mass = distill.item_mass(dial, items)
    if form == 'topk':
        dial, rec = _as_topk(dial, rec, k_dial=6, k_rec=3)
    weights = torch.rand(labels.shape, generator=torch.Generator().manual_seed(1))

    ref_logits = logits.clone().requires_grad_(True)
    ref_nll, ref_kd = _reference(ref_logits, labels, dial, rec, items, gate, tau, mass)
    ((ref_nll * weights).sum() + (ref_kd * weights.flip(0)).sum()).backward()

    fused_logits = logits.clone().requires_grad_(True)
    target = fast_target.make_target(
        gate,
        dial,
        rec,
        items,
        labels.ne(PAD),
        hard_threshold=0.3,
        static_gate=0.4,
        temperature=tau,
        dial_item_mass=mass,
    )
    nll, kd = nll_and_kd(
        fused_logits.view(-1, logits.size(-1)),
        labels.view(-1),
        target,
        items,
        ignore_index=PAD,
    )
    (
        (nll.view(labels.shape) * weights).sum()
        + (kd.view(labels.shape) * weights.flip(0)).sum()
    ).backward()

    assert torch.allclose(nll.view(labels.shape), ref_nll, atol=1e-5)
    assert torch.allclose(kd.view(labels.shape), ref_kd, atol=1e-5)
    assert torch.allclose(fused_logits.grad, ref_logits.grad, atol=1e-5)
    assert torch.isfinite(fused_logits.grad).all()


def test_hard_gate_fires_in_the_fixture():
    """The hard-gate cases above compare both branches only if some step crosses the threshold."""
    dial, rec, labels, _ = _inputs(CONTIGUOUS)
    target = fast_target.make_target(
        'hard', dial, rec, CONTIGUOUS, labels.ne(PAD), hard_threshold=0.3
    )
    assert 0 < target.rec_steps.sum() < labels.ne(PAD).sum()


def test_fused_gradient_passes_gradcheck_in_double():
    dial, rec, labels, logits = _inputs(CONTIGUOUS, dtype=torch.float64)
    target = fast_target.make_target(
        'soft', dial, rec, CONTIGUOUS, labels.ne(PAD), temperature=1.5
    )
    logits = logits.detach().requires_grad_(True)

    def loss(x):
        nll, kd = nll_and_kd(x, labels, target, CONTIGUOUS, ignore_index=PAD)
        return 0.3 * nll.sum() + 0.7 * kd.sum()

    assert torch.autograd.gradcheck(loss, (logits,), eps=1e-6, atol=1e-6)


def test_padding_gets_no_loss_and_no_gradient():
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    logits.requires_grad_(True)
    target = fast_target.make_target('soft', dial, rec, CONTIGUOUS, labels.ne(PAD))
    nll, kd = nll_and_kd(logits, labels, target, CONTIGUOUS, ignore_index=PAD)
    (nll.sum() + kd.sum()).backward()
    padding = labels.eq(PAD)
    assert nll[padding].abs().sum() == 0 and kd[padding].abs().sum() == 0
    assert logits.grad[padding].abs().sum() == 0
    assert (kd[~padding] > 0).all()  # a KL between different distributions


def test_only_the_nll_used_gives_cross_entropy_gradient():
    """With the KD output unused (e.g. a zero KD weight), the gradient is exactly cross-entropy's."""
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    fused = logits.clone().requires_grad_(True)
    target = fast_target.make_target('hard', dial, rec, CONTIGUOUS, labels.ne(PAD))
    nll, _kd = nll_and_kd(fused, labels, target, CONTIGUOUS, ignore_index=PAD)
    nll.sum().backward()
    plain = logits.clone().requires_grad_(True)
    F.cross_entropy(
        plain.view(-1, 11), labels.view(-1), ignore_index=PAD, reduction='sum'
    ).backward()
    assert torch.allclose(fused.grad, plain.grad, atol=1e-6)


def test_target_entropy_matches_the_materialised_soft_target():
    """``plogp`` (sum q log q, built without q over V) against q from the definition."""
    dial, rec, labels, _ = _inputs(SCATTERED)
    mask = labels.ne(PAD)
    target = fast_target.make_target('soft', dial, rec, SCATTERED, mask)
    lam = distill.item_mass(dial, SCATTERED) * mask
    q, _ = distill.target_log_probs(
        'soft', dial, distill.items_on_vocab(rec, SCATTERED, 11), lam
    )
    expected = (
        torch.where(q > float('-inf'), q.exp() * q, torch.zeros_like(q)).sum(-1) * mask
    )
    assert torch.allclose(target.plogp, expected, atol=1e-5)
    assert torch.allclose(target.gate, lam)


def test_item_vocab_uses_a_view_only_for_a_contiguous_block():
    assert ItemVocab.of(CONTIGUOUS).block == slice(5, 10)
    assert ItemVocab.of(SCATTERED).block is None
    x = torch.arange(11.0).expand(2, 11)
    assert ItemVocab.of(SCATTERED).take(x)[0].tolist() == [
        9.0,
        2.0,
        6.0,
        4.0,
        7.0,
    ]


@pytest.mark.parametrize('gate', ['soft', 'hard'])
def test_target_from_logits_equals_target_from_log_probs(gate):
    """The live path hands the dialogue teacher's raw logits over (one softmax, no log-softmax copy)."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 3, 11, generator=g) * 4 + 20  # far from normalised
    rec = torch.log_softmax(torch.randn(2, 5, generator=g), -1)
    mask = torch.ones(2, 3, dtype=torch.bool)
    from_logits = fast_target.make_target(
        gate, logits, rec, CONTIGUOUS, mask, hard_threshold=0.3
    )
    from_log_probs = fast_target.make_target(
        gate, torch.log_softmax(logits, -1), rec, CONTIGUOUS, mask, hard_threshold=0.3
    )
    for field in ('dial', 'weight', 'plogp', 'gate'):
        assert torch.allclose(
            getattr(from_logits, field), getattr(from_log_probs, field), atol=1e-5
        ), field


@pytest.mark.parametrize('gate', ['soft', 'hard', 'static'])
@pytest.mark.parametrize('tau', [1.0, 2.0])
def test_dense_target_is_the_same_built_row_by_row_and_in_the_scores_memory(
    monkeypatch, gate, tau
):
    dial, rec, labels, _ = _inputs(CONTIGUOUS)
    mask = labels.ne(PAD)
    whole = fast_target.make_target(
        gate, dial, rec, CONTIGUOUS, mask, hard_threshold=0.3, temperature=tau
    )
    monkeypatch.setattr(fast_target, '_BLOCK_BYTES', 1)  # one batch row per block
    scores = dial.clone()
    by_row = fast_target.make_target(
        gate,
        scores,
        rec,
        CONTIGUOUS,
        mask,
        hard_threshold=0.3,
        temperature=tau,
        overwrite_scores=True,
    )
    assert by_row.dial.data_ptr() == scores.data_ptr()  # no second [B,T,V] buffer
    for field in ('dial', 'weight', 'plogp', 'gate', 'rec_steps'):
        assert torch.allclose(
            getattr(by_row, field).float(), getattr(whole, field).float(), atol=1e-6
        ), field
    untouched = dial.clone()
    fast_target.make_target(gate, untouched, rec, CONTIGUOUS, mask, temperature=tau)
    # without overwrite_scores the caller's tensor is left alone
    assert torch.equal(untouched, dial)


def test_each_examples_real_steps_are_one_run_of_the_packed_rows():
    """Row-major packing keeps an example's steps together: right, left padding and holes alike."""
    mask = torch.tensor(
        [
            [True, True, False],
            [False, True, True],
            [False, False, False],
            [True, False, True],
        ]
    )
    dial, rec, _labels, _logits = _inputs(CONTIGUOUS)
    target = fast_target.make_target(
        'soft', dial[:1, :3].expand(4, 3, -1), rec[:1].expand(4, -1), CONTIGUOUS, mask
    )
    # (b, start, end) among the packed rows
    assert target._example_runs() == [(0, 0, 2), (1, 2, 4), (3, 4, 6)]


@pytest.mark.parametrize('form', ['dense', 'topk'])
@pytest.mark.parametrize('tau', [1.0, 2.0])
def test_packed_student_scores_give_the_padded_batchs_values_and_gradients(form, tau):
    """Issue #26: the generators' loss hands the fused loss the real steps only, [n,V] in
    row-major order; values and gradients are those of the padded batch at those steps.
    """
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    mask = labels.ne(PAD)
    if form == 'topk':
        dial, rec = _as_topk(dial, rec, k_dial=6, k_rec=3)
        mass = torch.rand(labels.shape, generator=torch.Generator().manual_seed(2))
    else:
        mass = None
    target = fast_target.make_target(
        'soft', dial, rec, CONTIGUOUS, mask, temperature=tau, dial_item_mass=mass
    )
    padded = logits.clone().requires_grad_(True)
    packed = logits[mask].clone().requires_grad_(True)
    nll_p, kd_p = nll_and_kd(padded, labels, target, CONTIGUOUS, ignore_index=PAD)
    nll, kd = nll_and_kd(packed, labels[mask], target, CONTIGUOUS, ignore_index=PAD)
    assert nll.shape == kd.shape == (int(mask.sum()),)
    assert torch.allclose(nll, nll_p[mask]) and torch.allclose(kd, kd_p[mask])
    assert not kd_p[~mask].any() and not nll_p[~mask].any()
    weights = torch.rand(labels.shape, generator=torch.Generator().manual_seed(3))
    ((nll_p + 2 * kd_p) * weights).sum().backward()
    ((nll + 2 * kd) * weights[mask]).sum().backward()
    assert torch.allclose(packed.grad, padded.grad[mask], atol=1e-6)
    assert not padded.grad[~mask].any()


def test_student_scores_of_the_wrong_size_are_refused():
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    target = fast_target.make_target('soft', dial, rec, CONTIGUOUS, labels.ne(PAD))
    with pytest.raises(ValueError, match='neither the .* real steps nor'):
        nll_and_kd(logits[:2], labels[:2], target, CONTIGUOUS, ignore_index=PAD)


def test_fused_loss_with_a_hole_in_the_mask_matches_the_reference():
    """A mask with a hole (not something ParlAI makes) gives the reference's results too."""
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    labels[1, 1] = PAD  # a hole in row 1
    ref_logits, fused_logits = logits.clone().requires_grad_(
        True
    ), logits.clone().requires_grad_(True)
    ref_nll, ref_kd = _reference(
        ref_logits, labels, dial, rec, CONTIGUOUS, 'soft', 1.0, None
    )
    (ref_nll.sum() + ref_kd.sum()).backward()
    target = fast_target.make_target('soft', dial, rec, CONTIGUOUS, labels.ne(PAD))
    nll, kd = nll_and_kd(fused_logits, labels, target, CONTIGUOUS, ignore_index=PAD)
    (nll.sum() + kd.sum()).backward()
    assert torch.allclose(kd, ref_kd, atol=1e-5) and torch.allclose(
        fused_logits.grad, ref_logits.grad, atol=1e-5
    )


@pytest.mark.parametrize('gate', ['soft', 'hard'])
def test_target_from_packed_scores_equals_target_from_the_padded_batch(gate):
    """The dialogue teacher can hand over logits for the real steps only ([n,V], row-major)."""
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    mask = labels.ne(PAD)
    padded = fast_target.make_target(
        gate, dial, rec, CONTIGUOUS, mask, hard_threshold=0.3
    )
    packed = fast_target.make_target(
        gate, dial[mask], rec, CONTIGUOUS, mask, hard_threshold=0.3
    )
    for field in ('dial', 'weight', 'plogp', 'gate', 'rec_steps', 'real'):
        assert torch.equal(getattr(packed, field), getattr(padded, field)), field
    assert packed.dial.shape == (int(mask.sum()), 11)
    with pytest.raises(ValueError, match='packed teacher scores'):
        fast_target.make_target(gate, dial[mask][:-1], rec, CONTIGUOUS, mask)


@pytest.mark.parametrize('form', ['dense', 'topk'])
def test_gate_none_distils_nothing_in_the_reference_and_the_target(form):
    """--gate none: KD 0 and gate 0 (the student then loads no teacher and uses plain cross-entropy)."""
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    mass = distill.item_mass(dial, CONTIGUOUS)
    if form == 'topk':
        dial, rec = _as_topk(dial, rec, k_dial=6, k_rec=3)
    _, ref_kd = _reference(logits, labels, dial, rec, CONTIGUOUS, 'none', 2.0, mass)
    target = fast_target.make_target(
        'none',
        dial,
        rec,
        CONTIGUOUS,
        labels.ne(PAD),
        temperature=2.0,
        dial_item_mass=mass,
    )
    assert (
        ref_kd.abs().sum() == 0
        and target.weight.abs().sum() == 0
        and target.gate.abs().sum() == 0
    )
