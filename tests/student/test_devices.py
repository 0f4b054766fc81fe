"""Devices (issue #17): teachers follow the student, models move between GPU and CPU, --no-cuda stays off
the GPU, and multiprocessing_train on GPUs. GPU tests skip without CUDA; each has a CPU twin where one
exists (the CPU twin of a GPU-saved model: its storages re-tagged ``cuda:0``, loaded with CUDA hidden).
"""

import json
import os
import shutil
import subprocess
import sys
import uuid
from unittest import mock

import pytest
import torch

from tests.support import (
    TINY_TRANSFORMER,
    TRUNC,
    _fixed_batch,
    _student,
    eval_report,
    on_device,
    run_parlai,
    train_stats,
    train_student_args,
)

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason='needs a CUDA GPU (scripts/gpu_check.sh runs these on one)',
)
HIDE_CUDA = {'CUDA_VISIBLE_DEVICES': ''}
EVAL = ['--num-examples', 16, '-bs', 8, '--skip-generation', 'true', *TRUNC]


def _devices(agent):
    """The devices of the student's, the dialogue teacher's and the rec teacher's parameters."""
    return {
        name: {p.device for p in model.parameters()}
        for name, model in (
            ('student', agent.model),
            ('dialogue_teacher', agent.dialogue_teacher.model),
            ('rec_teacher', agent.rec_teacher.model),
        )
    }


def _train_student(teachers, model_file, *extra, env_extra=None):
    _, env, _ = teachers
    run_parlai(
        train_student_args(teachers, model_file, *extra),
        env={**env, **(env_extra or {})},
    )
    return train_stats(model_file)['final_valid_report']


def _eval_ppl(teachers, model_file, *extra, env_extra=None):
    root, env, common = teachers
    out = eval_report(
        ['-t', 'redial_crs', '-mf', model_file, *EVAL, *common, *extra],
        f'{model_file}.eval-{uuid.uuid4().hex[:8]}.json',
        env={**env, **(env_extra or {})},
    )
    return out['ppl'], out.get('kd_loss')


# --------------------------------------------------------------------------- teachers follow the student
def test_teachers_follow_the_student_onto_the_cpu(teachers, tmp_path):
    """Everywhere: with --no-cuda (on a GPU machine too) both teachers stay on the CPU with the student."""
    agent, _ = _student(teachers, tmp_path, '--gate', 'soft', '--no-cuda')
    assert _devices(agent) == {
        name: {torch.device('cpu')}
        for name in ('student', 'dialogue_teacher', 'rec_teacher')
    }
    assert agent.dialogue_teacher.opt['no_cuda'] and agent.rec_teacher.opt['no_cuda']
    assert (
        agent.item_token_ids.device.type
        == agent.dialogue_teacher.item_token_ids.device.type
        == 'cpu'
    )


@pytest.mark.gpu
@requires_cuda
def test_teachers_follow_the_student_onto_the_gpu(teachers, tmp_path):
    agent, teacher = _student(teachers, tmp_path, '--gate', 'soft')
    devices = _devices(agent)
    student_device = next(iter(devices['student']))
    assert student_device.type == 'cuda'
    assert devices['dialogue_teacher'] == devices['rec_teacher'] == {student_device}

    batch = on_device(agent, _fixed_batch(agent, teacher))
    dial, gate, rec = agent.live_teacher_targets(batch)
    assert dial.device == gate.device == rec.device == student_device


# --------------------------------------------------------------------------- a model moves between devices
def _resave_tagged_cuda(path):
    """Rewrite a torch file so its storages say ``cuda:0``, as a file saved from a GPU does."""
    import parlai.utils.pickle

    states = torch.load(
        path, map_location='cpu', pickle_module=parlai.utils.pickle, weights_only=False
    )
    with mock.patch.object(
        torch.serialization, 'location_tag', lambda storage: 'cuda:0'
    ):
        torch.save(states, path)


def _loads_without_map_location_under_hidden_cuda(path) -> subprocess.CompletedProcess:
    code = (
        'import sys, torch, parlai.utils.pickle; '
        'torch.load(sys.argv[1], pickle_module=parlai.utils.pickle, weights_only=False)'
    )
    return subprocess.run(
        [sys.executable, '-c', code, str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, **HIDE_CUDA},
        timeout=120,
    )


@pytest.mark.cli
def test_cpu_twin_a_gpu_saved_student_and_teachers_load_with_cuda_hidden(
    teachers, tmp_path
):
    root, env, common = teachers
    # own copies of the teachers: their files are rewritten below
    for name in os.listdir(root):
        if name.startswith(('dial', 'rec')) and os.path.isfile(root / name):
            shutil.copy(root / name, tmp_path / name)
    local = (tmp_path, env, common)
    mf = tmp_path / 'student'
    _train_student(local, mf, '--no-cuda')
    before = _eval_ppl(local, mf, env_extra=HIDE_CUDA)
    for path in (mf, tmp_path / 'dial', tmp_path / 'rec'):
        _resave_tagged_cuda(path)
    refused = _loads_without_map_location_under_hidden_cuda(mf)
    assert (
        refused.returncode != 0 and 'CUDA' in refused.stderr
    ), 'the rewrite did not tag the storages cuda:0'
    # all three loaded on CPU
    assert _eval_ppl(local, mf, env_extra=HIDE_CUDA) == pytest.approx(before, rel=1e-6)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.cli
def test_gpu_trained_student_evaluates_on_cpu_and_cpu_trained_on_gpu(
    teachers, tmp_path
):
    on_gpu, on_cpu = tmp_path / 'gpu-student', tmp_path / 'cpu-student'
    _train_student(teachers, on_gpu)
    _train_student(teachers, on_cpu, '--no-cuda')
    for mf in (on_gpu, on_cpu):
        gpu_ppl, gpu_kd = _eval_ppl(teachers, mf)
        cpu_ppl, cpu_kd = _eval_ppl(teachers, mf, env_extra=HIDE_CUDA)
        assert cpu_ppl == pytest.approx(gpu_ppl, rel=1e-3) and cpu_kd == pytest.approx(
            gpu_kd, rel=1e-3, abs=1e-4
        )


# --------------------------------------------------------------------------- --no-cuda on a GPU machine
NO_CUDA_RUN = '''
import json, sys, torch
from parlai.scripts.train_model import TrainModel
from parlai.scripts.eval_model import EvalModel
train, evaluate = json.loads(sys.argv[1])
TrainModel.main(*train)
EvalModel.main(*evaluate)
print('CUDA_STATE ' + json.dumps({'initialized': torch.cuda.is_initialized(),
                                  'reserved': torch.cuda.memory_reserved(),
                                  'peak_allocated': torch.cuda.max_memory_allocated()}))
'''


@pytest.mark.gpu
@requires_cuda
def test_no_cuda_training_and_evaluation_never_touch_the_gpu(teachers, tmp_path):
    root, env, common = teachers
    mf = str(tmp_path / 'student')
    train = [
        '-t',
        'redial_crs',
        '-m',
        'conkd_student',
        '--gate',
        'hard',
        '--no-cuda',
        '--dialogue-teacher-file',
        str(root / 'dial'),
        '--rec-teacher-file',
        str(root / 'rec'),
        '-mf',
        mf,
        '-bs',
        '8',
        '--max-train-steps',
        '3',
        '--skip-generation',
        'true',
        '--validation-max-exs',
        '8',
        *map(str, TINY_TRANSFORMER + TRUNC + common),
    ]
    evaluate = ['-t', 'redial_crs', '-mf', mf, '--no-cuda', *map(str, EVAL + common)]
    proc = subprocess.run(
        [sys.executable, '-c', NO_CUDA_RUN, json.dumps([train, evaluate])],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    state = json.loads(proc.stdout.split('CUDA_STATE ')[-1])
    assert state == {'initialized': False, 'reserved': 0, 'peak_allocated': 0}


# --------------------------------------------------------------------------- multiprocessing_train on GPUs
def _mp_train(teachers, tmp_path, workers, *extra, timeout=420):
    root, env, common = teachers
    return run_parlai(
        [
            'multiprocessing_train',
            '-t',
            'redial_crs',
            '-m',
            'conkd_student',
            '--gate',
            'soft',
            '--dialogue-teacher-file',
            root / 'dial',
            '--rec-teacher-file',
            root / 'rec',
            '--dict-file',
            f'{root / "dial"}.dict',
            '--distributed-world-size',
            workers,
            '-mf',
            tmp_path / 'student',
            '-bs',
            4,
            '--max-train-steps',
            4,
            '--skip-generation',
            'true',
            '--validation-max-exs',
            8,
            '--eval-dynamic-batching',
            'off',
            *TINY_TRANSFORMER,
            *TRUNC,
            *common,
            *extra,
        ],
        env=env,
        timeout=timeout,
        check=False,
    )


@pytest.mark.gpu
@requires_cuda
@pytest.mark.cli
def test_gpu_multiprocessing_train_runs_nccl_with_the_cpu_patches_inactive(
    teachers, tmp_path
):
    proc = _mp_train(teachers, tmp_path, torch.cuda.device_count())
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed group initialized' in log  # ParlAI's own (NCCL) message ...
    # ... not our CPU path's
    assert 'Distributed group initialized (gloo, CPU)' not in log
    assert train_stats(tmp_path / 'student')['final_valid_report']['kd_loss'] > 0


@pytest.mark.gpu
@requires_cuda
@pytest.mark.cli
def test_gpu_more_workers_than_gpus_fails_fast_with_the_fix(teachers, tmp_path):
    """Under a timeout: a hang fails the test through run_parlai's TimeoutExpired, never blocks the run."""
    gpus = torch.cuda.device_count()
    proc = _mp_train(teachers, tmp_path, gpus + 1, timeout=180)
    assert proc.returncode != 0
    assert (
        f'--distributed-world-size {gpus + 1}: only {gpus} GPU(s) visible'
        in proc.stderr
    )
    # refused before any worker
    assert 'Distributed group initialized' not in proc.stdout + proc.stderr


@pytest.mark.gpu
@requires_cuda
@pytest.mark.cli
def test_gpu_machine_runs_cpu_workers_with_no_cuda(teachers, tmp_path):
    proc = _mp_train(
        teachers, tmp_path, 2, '--no-cuda', '--port', 30000 + os.getpid() % 1000
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed group initialized (gloo, CPU)' in log
