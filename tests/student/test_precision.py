"""The fused ConKD loss under half precision (CPU): float32 accumulation whatever the scores' dtype.

The agent-level twin (a student's loss and gradients under bf16 autocast, against fp32) is in
tests/gpu/test_mixed_precision.py, next to its --fp16 GPU test.
"""

import pytest
import torch

from parlai_conkd.fast_target import make_target
from parlai_conkd.fused_loss import nll_and_kd
from tests.support import CONTIGUOUS, PAD, _inputs


def _fused(logits, labels, dial, rec, gate='soft', tau=1.0):
    target = make_target(
        gate, dial, rec, CONTIGUOUS, labels.ne(PAD), hard_threshold=0.3, temperature=tau
    )
    return nll_and_kd(logits, labels, target, CONTIGUOUS, ignore_index=PAD), target


@pytest.mark.parametrize('gate', ['soft', 'hard'])
@pytest.mark.parametrize('tau', [1.0, 2.0])
def test_autocast_does_not_lower_the_loss_precision(gate, tau):
    """Autocast runs bmm/baddbmm in bf16; inside the loss it is off (before the fix KD moved by 1e-2)."""
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    plain_logits, cast_logits = logits.clone().requires_grad_(
        True
    ), logits.clone().requires_grad_(True)
    (nll, kd), target = _fused(plain_logits, labels, dial, rec, gate, tau)
    (nll.sum() + kd.sum()).backward()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        (cast_nll, cast_kd), cast_target = _fused(
            cast_logits, labels, dial, rec, gate, tau
        )
        (cast_nll.sum() + cast_kd.sum()).backward()
    assert cast_kd.dtype == torch.float32 and cast_target.plogp.dtype == torch.float32
    assert torch.allclose(cast_target.plogp, target.plogp, atol=1e-6)
    assert torch.allclose(cast_kd, kd, atol=1e-6) and torch.allclose(
        cast_nll, nll, atol=1e-6
    )
    assert torch.allclose(cast_logits.grad, plain_logits.grad, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_half_precision_scores_are_summed_in_float32(dtype):
    """Student logits and teacher scores in half precision (as a --fp16 model gives them): the loss is
    float32 and equals the float32 loss of the same (rounded) numbers; the gradient comes back in the
    logits' dtype, finite, and equal to the float32 gradient rounded to that dtype."""
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    half_logits, half_dial = logits.to(dtype), dial.to(dtype)
    half = half_logits.clone().requires_grad_(True)
    (nll, kd), target = _fused(half, labels, half_dial, rec)
    (nll.sum() + 0.5 * kd.sum()).backward()
    wide = half_logits.float().requires_grad_(True)
    (ref_nll, ref_kd), _ = _fused(wide, labels, half_dial.float(), rec)
    (ref_nll.sum() + 0.5 * ref_kd.sum()).backward()
    assert nll.dtype == kd.dtype == torch.float32 and target.gate.dtype == torch.float32
    assert torch.allclose(kd, ref_kd, atol=1e-5) and torch.allclose(
        nll, ref_nll, atol=1e-5
    )
    assert half.grad.dtype == dtype and torch.isfinite(half.grad).all()
    assert torch.equal(half.grad, wide.grad.to(dtype))


def test_fp16_logits_at_the_top_of_the_range_and_a_scaled_loss_stay_finite():
    """A --fp16 student's logits can be large and ParlAI's loss scaler multiplies the loss by up to
    2**16 before the backward: values and gradients must stay finite (the sums never run in fp16).
    """
    dial, rec, labels, logits = _inputs(CONTIGUOUS)
    big = (logits * 2000).clamp(-60000, 60000).to(torch.float16).requires_grad_(True)
    (nll, kd), _ = _fused(big, labels, dial.to(torch.float16), rec, gate='hard')
    assert torch.isfinite(nll).all() and torch.isfinite(kd).all()
    tokens = labels.ne(PAD).sum()
    (2.0**16 * (nll.sum() + kd.sum()) / tokens).backward()
    assert torch.isfinite(big.grad).all() and big.grad.abs().max() > 0
