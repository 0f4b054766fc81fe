"""The student in half precision (issue #17): ``--fp16 true`` on a GPU, and its CPU twin under bf16 autocast.

What must hold: the KD loss, the gate and every gradient are finite; the fused loss sums in float32
(the criterion sees half-precision scores and hands back a float32 KD); and on a fixed batch the loss
equals the float32 loss within the stated tolerance (half precision rounds the network's activations:
bf16 keeps 8 bits of mantissa, fp16 11).
"""

import contextlib
import math

import pytest
import torch

from tests.support import (
    TINY_TRANSFORMER,
    TRUNC,
    _fixed_batch,
    _student,
    on_device,
    run_parlai,
    train_stats,
    train_student_args,
)

#: |loss_half - loss_fp32| / loss_fp32 on the fixed batch, and the cosine between the two gradients
# measured on CPU: bf16 4e-3, cosine 0.9998
LOSS_RTOL = {
    torch.bfloat16: 1e-2,
    torch.float16: 5e-3,
}
MIN_GRAD_COSINE = 0.99

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='needs a CUDA GPU (scripts/gpu_check.sh runs these on one)',
)


def _loss_kd_grads(agent, batch, context=contextlib.nullcontext):
    """One training-mode loss and backward on ``batch``: (loss, per-step KD, gate, flat gradient,
    dtype of the scores the criterion saw)."""
    seen = []
    hook = agent.criterion.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].dtype)
    )
    agent.model.train()
    agent.model.zero_grad(set_to_none=True)
    agent._control_local_metrics(disabled=True)
    try:
        with context():
            loss = agent.compute_loss(batch)
        loss.backward()
    finally:
        agent._control_local_metrics(enabled=True)
        hook.remove()
    target = agent.distillation_target(batch, batch.label_vec.ne(agent.NULL_IDX))
    grads = torch.cat(
        [
            p.grad.float().flatten()
            for p in agent.model.parameters()
            if p.grad is not None
        ]
    )
    return (
        loss.detach().float(),
        agent.criterion.last_kd.detach(),
        target.gate,
        grads,
        seen[0],
    )


def _check_against_fp32(half, full, dtype):
    loss, kd, gate, grads, scores_dtype = half
    ref_loss, ref_kd, _, ref_grads, _ = full
    assert (
        scores_dtype == dtype
    ), 'the student did not run in half precision: nothing was tested'
    assert kd.dtype == torch.float32  # the fused loss accumulates in float32
    assert (
        torch.isfinite(loss)
        and torch.isfinite(kd).all()
        and torch.isfinite(grads).all()
    )
    assert torch.isfinite(gate).all() and 0 < float(gate.max()) <= 1
    assert float(kd.sum()) > 0
    assert abs(float(loss) - float(ref_loss)) <= LOSS_RTOL[dtype] * float(ref_loss)
    cosine = torch.nn.functional.cosine_similarity(grads, ref_grads, dim=0)
    assert (
        cosine > MIN_GRAD_COSINE
    ), f'gradient direction moved: cosine {float(cosine):.4f}'


@pytest.mark.parametrize('gate', ['soft', 'hard'])
def test_cpu_twin_student_loss_under_bf16_autocast_matches_fp32(
    teachers, tmp_path, gate
):
    """CPU twin of the --fp16 GPU test: the student and both teachers run under bf16 autocast."""
    agent, teacher = _student(
        teachers, tmp_path, '--gate', gate, '--hard-gate-threshold', '0.05', '--no-cuda'
    )
    batch = _fixed_batch(agent, teacher, size=8)
    full = _loss_kd_grads(agent, batch)
    half = _loss_kd_grads(
        agent, batch, lambda: torch.autocast('cpu', dtype=torch.bfloat16)
    )
    _check_against_fp32(half, full, torch.bfloat16)


# ----------------------------------------------------------------------------------------- GPU
@pytest.fixture(scope='module')
def fp16_dialogue_teacher(teachers):
    """A tiny dialogue teacher trained with --fp16 true on the GPU (its vocabulary carries ParlAI's
    fp16 padding, as the student's will)."""
    root, env, common = teachers
    model_file = root / 'dial-fp16'
    if not model_file.is_file():
        run_parlai(
            [
                'train_model',
                '-t',
                'redial_crs',
                '-m',
                'conkd_dialogue_teacher',
                '-mf',
                model_file,
                '-bs',
                8,
                '--num-epochs',
                1,
                '--skip-generation',
                'true',
                '--validation-max-exs',
                20,
                '--fp16',
                'true',
                *TINY_TRANSFORMER,
                *TRUNC,
                *common,
            ],
            env=env,
        )
    return model_file


@pytest.mark.gpu
@requires_cuda
def test_gpu_student_trains_under_fp16_with_finite_kd_gate_and_weights(
    teachers, fp16_dialogue_teacher, tmp_path
):
    import parlai.utils.pickle

    root, env, common = teachers
    mf = tmp_path / 'student'
    run_parlai(
        train_student_args(
            teachers,
            mf,
            *('--fp16', 'true', '--log-every-n-steps', 4),
            steps=12,
            validation_max_exs=16,
            dialogue_teacher=fp16_dialogue_teacher,
        ),
        env=env,
    )
    stats = train_stats(mf)
    assert any(
        'fp16_loss_scalar' in r for r in stats['train_reports']
    ), 'ParlAI did not train in fp16'
    assert all(
        math.isfinite(r['kd_loss']) and r['kd_loss'] > 0 for r in stats['train_reports']
    )
    trained = stats['final_valid_report']
    for metric in ('loss', 'kd_loss', 'kd_gate', 'ppl'):
        assert torch.isfinite(torch.tensor(float(trained[metric]))), (
            metric,
            trained[metric],
        )
    assert trained['kd_loss'] > 0 and 0 < trained['kd_gate'] <= 1
    states = torch.load(
        mf, map_location='cpu', pickle_module=parlai.utils.pickle, weights_only=False
    )
    assert all(
        torch.isfinite(w.float()).all()
        for w in states['model'].values()
        if w.is_floating_point()
    )


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize('gate', ['soft', 'hard'])
def test_gpu_fused_loss_under_fp16_matches_fp32_on_a_fixed_batch(
    teachers, fp16_dialogue_teacher, tmp_path, gate
):
    root, env, common = teachers
    agent, teacher = _student(
        (root, env, common),
        tmp_path,
        '--gate',
        gate,
        '--fp16',
        'true',
        '--hard-gate-threshold',
        '0.05',
        '--dialogue-teacher-file',
        fp16_dialogue_teacher,
        '--dict-file',
        f'{fp16_dialogue_teacher}.dict',
    )
    assert agent.fp16 and next(agent.model.parameters()).dtype == torch.float16
    batch = on_device(agent, _fixed_batch(agent, teacher, size=8))
    half = _loss_kd_grads(agent, batch)
    agent.model.float()
    full = _loss_kd_grads(agent, batch)
    _check_against_fp32(half, full, torch.float16)


# ----------------------------------------------------------------------------------------- fp16 vocabularies
@pytest.mark.cli
def test_fp16_student_with_an_fp32_teacher_names_the_padding_or_trains(
    teachers, tmp_path
):
    """ParlAI pads the vocabulary to a multiple of 8 under --fp16 true (on any device): a teacher
    trained without it then differs from the student by those tokens alone; the error says so.
    """
    root, env, common = teachers
    with open(f'{root / "dial"}.dict', encoding='utf-8') as f:
        teacher_vocab = sum(1 for _ in f)
    proc = run_parlai(
        train_student_args(
            teachers,
            tmp_path / 'student',
            *('--fp16', 'true', '--no-cuda'),
            steps=1,
            validation_max_exs=4,
        ),
        env=env,
        check=False,
    )
    if teacher_vocab % 8 == 0:  # nothing to pad: the student trains
        assert proc.returncode == 0, proc.stderr[-3000:]
    else:
        assert proc.returncode != 0
        assert (
            'differ only by the padding tokens ParlAI adds under --fp16 true (here to the student\'s)'
            in proc.stderr
        )
