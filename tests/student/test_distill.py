"""The ConKD gate and loss math against values computed by hand (V = 4: two words, two items)."""

import math

import pytest
import torch

from parlai_conkd import distill
from parlai_conkd.teacher_cache import topk_log_probs

ITEMS = torch.tensor([2, 3])  # vocabulary ids of catalog items 0 and 1
# step 1: item mass 0.8
P_DIAL = torch.tensor(
    [[[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.6, 0.2]]]  # step 0: item mass 0.2
)
P_REC = torch.tensor([[0.75, 0.25]])
UNIFORM_STUDENT = torch.zeros(1, 2, 4)  # logits -> p = 0.25 everywhere
MASK = torch.tensor([[True, True]])


def kl_to_uniform(q):
    return sum(x * math.log(x / 0.25) for x in q if x > 0)


def terms(gate, **kw):
    return distill.conkd_terms(
        UNIFORM_STUDENT, P_DIAL.log(), P_REC.log(), ITEMS, MASK, gate=gate, **kw
    )


def test_gate_is_dialogue_teacher_item_mass():
    assert distill.item_mass(P_DIAL.log(), ITEMS)[0].tolist() == pytest.approx(
        [0.2, 0.8]
    )


def test_soft_gate_mixes_by_item_mass():
    # [.4,.24,.23,.13]
    q0 = [
        0.8 * 0.5,
        0.8 * 0.3,
        0.2 * 0.75 + 0.8 * 0.1,
        0.2 * 0.25 + 0.8 * 0.1,
    ]
    q1 = [0.2 * 0.1, 0.2 * 0.1, 0.8 * 0.75 + 0.2 * 0.6, 0.8 * 0.25 + 0.2 * 0.2]
    out = terms('soft')
    assert out.kd[0].tolist() == pytest.approx(
        [kl_to_uniform(q0), kl_to_uniform(q1)], rel=1e-5
    )
    assert out.gate_mean().item() == pytest.approx(0.5)
    assert out.rec_share().item() == 0.0


def test_hard_gate_switches_teacher_at_threshold():
    out = terms('hard', hard_threshold=0.5)
    assert out.kd[0].tolist() == pytest.approx(
        [kl_to_uniform([0.5, 0.3, 0.1, 0.1]), kl_to_uniform([0, 0, 0.75, 0.25])],
        rel=1e-5,
    )
    assert out.rec_steps.tolist() == [[False, True]]
    assert out.rec_share().item() == pytest.approx(0.5)
    # above every gate: dialogue teacher everywhere
    high = terms('hard', hard_threshold=0.9)
    assert high.rec_steps.sum().item() == 0


def test_static_gate_ignores_item_mass():
    out = terms('static', static_gate=0.5)
    q1 = [0.05, 0.05, 0.5 * 0.75 + 0.5 * 0.6, 0.5 * 0.25 + 0.5 * 0.2]
    assert out.kd[0, 1].item() == pytest.approx(kl_to_uniform(q1), rel=1e-5)
    assert out.gate.tolist() == [[0.5, 0.5]]


def test_none_gate_has_no_distillation():
    out = terms('none')
    assert out.kd.abs().sum().item() == 0.0


@pytest.mark.parametrize(
    'mass, expected_q',
    [
        # all mass on items: the target is exactly the rec teacher
        (
            1.0,
            [0.0, 0.0, 0.75, 0.25],
        ),
        (0.0, [0.7, 0.3, 0.0, 0.0]),  # no item mass: exactly the dialogue teacher
    ],
)
def test_gate_edges_zero_and_one_are_exact_and_finite(mass, expected_q):
    dial = (
        torch.tensor([[[0.0, 0.0, 0.5, 0.5]]])
        if mass == 1.0
        else torch.tensor([[[0.7, 0.3, 0.0, 0.0]]])
    )
    student = torch.randn(1, 1, 4, requires_grad=True)
    out = distill.conkd_terms(
        student, dial.log(), P_REC.log(), ITEMS, torch.tensor([[True]]), gate='soft'
    )
    p_student = torch.softmax(student.detach(), -1)[0, 0].tolist()
    expected = sum(q * math.log(q / p) for q, p in zip(expected_q, p_student) if q > 0)
    assert out.kd.item() == pytest.approx(expected, rel=1e-5)
    out.kd.sum().backward()
    assert torch.isfinite(student.grad).all()


def test_all_padding_gives_zero_loss_and_finite_gradients():
    student = torch.randn(2, 3, 4, requires_grad=True)
    dial = torch.log_softmax(torch.randn(2, 3, 4), -1)
    out = distill.conkd_terms(
        student,
        dial,
        torch.log_softmax(torch.randn(2, 2), -1),
        ITEMS,
        torch.zeros(2, 3, dtype=torch.bool),
        gate='hard',
    )
    assert (
        out.kd_sum().item() == 0.0
        and out.gate_mean().item() == 0.0
        and out.rec_share().item() == 0.0
    )
    loss = distill.mix_losses(
        torch.tensor(0.0), out.kd_sum(), num_tokens=0, kd_weight=0.5
    )
    loss.backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() == 0


def test_padding_steps_are_masked():
    out = distill.conkd_terms(
        UNIFORM_STUDENT,
        P_DIAL.log(),
        P_REC.log(),
        ITEMS,
        torch.tensor([[True, False]]),
        gate='soft',
    )
    assert out.kd[0, 1].item() == 0.0 and out.gate[0, 1].item() == 0.0
    assert out.gate_mean().item() == pytest.approx(0.2)


def test_temperature_softens_both_sides_and_scales_by_tau_squared():
    tau = 2.0
    out = terms('hard', temperature=tau, hard_threshold=0.5)
    soft_dial = [p**0.5 for p in [0.5, 0.3, 0.1, 0.1]]
    soft_dial = [p / sum(soft_dial) for p in soft_dial]
    assert out.kd[0, 0].item() == pytest.approx(
        tau**2 * kl_to_uniform(soft_dial), rel=1e-5
    )
    # the gate is read from the untempered teacher
    assert out.gate[0].tolist() == pytest.approx([0.2, 0.8])


def test_mix_losses_is_a_convex_combination_per_token():
    loss = distill.mix_losses(
        torch.tensor(6.0), torch.tensor(2.0), num_tokens=4, kd_weight=0.25
    )
    assert loss.item() == pytest.approx((0.75 * 6.0 + 0.25 * 2.0) / 4)
    with pytest.raises(ValueError, match='kd weight'):
        distill.mix_losses(torch.tensor(1.0), torch.tensor(1.0), 1, kd_weight=1.5)


def test_bad_gate_and_temperature_are_rejected():
    with pytest.raises(ValueError, match='unknown gate'):
        terms('sometimes')
    with pytest.raises(ValueError, match='temperature'):
        terms('soft', temperature=0.0)


def test_topk_round_trip_is_exact_when_k_covers_vocab_and_renormalises_otherwise():
    log_p = P_DIAL.log()
    values, indices = topk_log_probs(log_p, k=4)
    assert torch.allclose(distill.from_topk(values, indices, 4), log_p, atol=1e-6)
    values, indices = topk_log_probs(log_p, k=2)
    approx = distill.from_topk(values, indices, 4).exp()
    assert approx[0, 0].tolist() == pytest.approx([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0])


@pytest.mark.parametrize('kind', ['soft', 'hard', 'static'])
def test_loss_equals_kl_to_the_materialised_target_on_random_inputs(kind):
    """conkd_terms never builds q; it must still equal KL(q || p) for q from target_log_probs."""
    g = torch.Generator().manual_seed(3)
    V, N, items = 9, 4, torch.tensor([1, 4, 6, 8])
    dial = torch.log_softmax(torch.randn(2, 3, V, generator=g) * 2, -1)
    dial[0, 0, 4] = float('-inf')  # an exact zero in the teacher
    dial = torch.log_softmax(dial, -1)
    rec = torch.log_softmax(torch.randn(2, N, generator=g), -1)
    rec[1, 2] = float('-inf')  # an excluded context item
    student = torch.randn(2, 3, V, generator=g)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    lam = distill.gate_values(kind, distill.item_mass(dial, items), 0.3) * mask
    q, _ = distill.target_log_probs(
        kind, dial, distill.items_on_vocab(rec, items, V), lam, 0.4
    )
    expected = distill.kl_divergence(q, torch.log_softmax(student, -1)) * mask
    out = distill.conkd_terms(
        student, dial, rec, items, mask, gate=kind, hard_threshold=0.4, static_gate=0.3
    )
    assert torch.allclose(out.kd, expected, atol=1e-5)


@pytest.mark.parametrize('kind', ['soft', 'hard'])
def test_topk_teacher_equals_its_dense_reconstruction(kind):
    g = torch.Generator().manual_seed(5)
    V, items = 10, torch.tensor([6, 7, 8, 9])
    dial = torch.log_softmax(torch.randn(2, 3, V, generator=g) * 3, -1)
    rec = torch.log_softmax(torch.randn(2, 4, generator=g), -1)
    student = torch.randn(2, 3, V, generator=g, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    lam = distill.item_mass(dial, items)
    values, indices = topk_log_probs(dial, 4)
    sparse = distill.conkd_terms(
        student,
        distill.TopK(values, indices),
        rec,
        items,
        mask,
        gate=kind,
        dial_item_mass=lam,
        temperature=2.0,
    )
    dense = distill.conkd_terms(
        student,
        distill.from_topk(values, indices, V),
        rec,
        items,
        mask,
        gate=kind,
        dial_item_mass=lam,
        temperature=2.0,
    )
    assert torch.allclose(sparse.kd, dense.kd, atol=1e-5)
    (grad_sparse,) = torch.autograd.grad(sparse.kd.sum(), student)
    (grad_dense,) = torch.autograd.grad(dense.kd.sum(), student)
    assert torch.allclose(grad_sparse, grad_dense, atol=1e-5)


def test_soft_gate_at_temperature_two_by_hand():
    """tau = 2: each teacher softened (p^(1/2), renormalised) before the mix, the gate untempered,
    the student softened too, and KD scaled by tau^2 = 4."""

    def soften(p):
        roots = [x**0.5 for x in p]
        return [x / sum(roots) for x in roots]

    dial, rec = soften([0.1, 0.1, 0.6, 0.2]), soften([0.75, 0.25])
    q = [
        0.2 * dial[0],
        0.2 * dial[1],
        0.8 * rec[0] + 0.2 * dial[2],
        0.8 * rec[1] + 0.2 * dial[3],
    ]
    out = terms('soft', temperature=2.0)
    assert out.kd[0, 1].item() == pytest.approx(4 * kl_to_uniform(q), rel=1e-5)
    assert out.gate[0].tolist() == pytest.approx([0.2, 0.8])


def test_reference_does_not_use_the_fast_path(monkeypatch):
    """conkd_terms is the independent definition the fast target and fused loss are tested against."""
    from parlai_conkd import fast_target

    def refuse(*args, **kwargs):
        raise AssertionError('the reference must not build the fast target')

    monkeypatch.setattr(fast_target, 'make_target', refuse)
    assert terms('soft').kd.sum() > 0


def test_item_conditional_kd_against_hand_computed_values():
    """Issue #24: KL(p_rec || softmax over the item logits) at every real step, tau^2-scaled."""
    from parlai_conkd.distill import item_conditional_kd

    # student over 2 items: p = (1/4, 3/4) at both steps; step 2 of row 0 is padding
    logits = torch.tensor([[[0.0, math.log(3.0)]] * 2] * 2)
    rec = torch.log(torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    mask = torch.tensor([[True, False], [True, True]])
    kd = item_conditional_kd(logits, rec, mask)
    half_half = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kd.flatten().tolist() == pytest.approx(
        [half_half, 0.0, math.log(4.0), math.log(4.0)]
    )
    # tau 2: the student's logits halved, the uniform teacher unchanged, times tau^2
    p = torch.softmax(torch.tensor([0.0, math.log(3.0) / 2]), dim=0).tolist()
    tau2 = 4 * (0.5 * math.log(0.5 / p[0]) + 0.5 * math.log(0.5 / p[1]))
    assert item_conditional_kd(logits, rec, mask, temperature=2.0)[0, 0].item() == (
        pytest.approx(tau2, rel=1e-5)
    )
    # a student that matches the teacher: zero, and the gradient flows to the logits
    matched = torch.log(torch.tensor([[[0.5, 0.5]]]).expand(1, 1, 2)).clone()
    matched.requires_grad_(True)
    zero = item_conditional_kd(matched, rec[:1], torch.ones(1, 1, dtype=torch.bool))
    assert zero.item() == pytest.approx(0.0, abs=1e-7)
    item_conditional_kd(logits.clone().requires_grad_(True), rec, mask).sum().backward()
