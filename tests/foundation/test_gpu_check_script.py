"""scripts/gpu_check.sh (issue #17) on its CPU path: the dry run with a tiny random GPT-2 goes through
every step the GPU run takes (benchmark, training, the GPU tests, which skip here), and the set-up
refuses clearly on a machine with neither ParlAI nor the carried wheels."""

import json
import os
import subprocess
import sys

import pytest
import torch

from tests.support import REPO_ROOT, shared_meta_or_skip, shared_redial_or_skip

SCRIPT = str(REPO_ROOT / 'scripts' / 'gpu_check.sh')


@pytest.mark.cli
# 80 s on a quiet 2-core machine, and longer with each backbone scripts/gpu_check.sh learns: in the
# slow run (CI's 20 minutes); each step's own limit guards against a hang
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_cpu_dry_run_goes_through_every_step_and_writes_the_table_and_json(tmp_path):
    redial, meta = shared_redial_or_skip(), shared_meta_or_skip()
    out_dir = tmp_path / 'out'
    out_dir.mkdir()
    env = {
        **os.environ,
        'CONKD_PYTHON': sys.executable,
        'CONKD_REDIAL_PATH': str(redial),
        'CONKD_REDIAL_META_PATH': str(meta),
        'OMP_NUM_THREADS': '1',
        'OUT': str(out_dir),
        'CONKD_GPU_CARRY': str(tmp_path / 'no-carry'),
    }
    proc = subprocess.run(
        [
            'bash',
            SCRIPT,
            '--device',
            'cpu',
            '--quick',
            '--workdir',
            tmp_path / 'work',
            '--out',
            tmp_path / 'gpu_check.json',
            '--budget-s',
            '1500',
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=1700,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / 'gpu_check.json').read_text())
    steps = result['steps']
    assert (
        steps['environment']['status'] == 'ok'
        and steps['environment']['cpu_patches_active_for_a_default_worker']
    )
    bench = steps['benchmark']
    assert bench['status'] == 'ok' and bench['shape'] == 'tiny-gpt2'
    for name in (
        'live_soft_over_nll',
        'live_hard_over_nll',
        'cached_over_nll',
        'student_over_base_ms_per_token',
    ):
        assert bench['ratios'][name] > 0, name
    training = steps['fp16_training']
    assert (
        training['status'] == 'ok'
        and training['values_finite']
        and training['weights_finite']
    )
    tests = steps['gpu_tests']
    if torch.cuda.is_available():
        assert tests['status'] == 'ok'
    else:  # every GPU test collected, each skipped with the reason
        assert (
            tests['status'] == 'skipped'
            and tests['counts'] == {'skipped': len(tests['tests'])}
            and tests['tests']
        )
        assert any('needs a CUDA GPU' in reason for reason in tests['skip_reasons'])
    # targets are judged on a GPU only
    assert result['passed'] and result['targets_met'] is None
    assert (
        '| train step, live ConKD (soft) / NLL |' in proc.stdout
        and '| GPU tests (pytest -m gpu) |' in proc.stdout
    )
    brought_back = sorted(os.listdir(out_dir))
    assert {
        'gpu_check.json',
        'benchmark.log',
        'training.log',
        'tests.log',
        'setup.log',
    } <= set(brought_back)


def test_setup_without_parlai_or_wheels_stops_with_what_to_do(tmp_path):
    """A bare python (no ParlAI) and no carried wheels: the script says how to prepare them."""
    bare = tmp_path / 'bare-python'
    # every import check fails, as on a bare machine
    bare.write_text('#!/bin/sh\nexit 1\n')
    bare.chmod(0o755)
    env = {
        **os.environ,
        'CONKD_PYTHON': str(bare),
        'CONKD_GPU_CARRY': str(tmp_path / 'carry'),
        'OUT': str(tmp_path),
    }
    proc = subprocess.run(
        ['bash', SCRIPT], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode != 0
    # the set-up's output is also teed into $OUT/setup.log
    said = proc.stdout + proc.stderr
    assert (
        "no wheels in" in said and "run 'bash scripts/gpu_check.sh --prepare'" in said
    )
    assert (
        "run 'bash scripts/gpu_check.sh --prepare'"
        in (tmp_path / 'setup.log').read_text()
    )
