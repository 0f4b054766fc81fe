"""Interrupt a student run with SIGINT, rerun the identical command, rerun it again (ParlAI #2939).

The resumed run must continue the step count from the checkpoint, reuse the teacher cache, score
the *final* weights in its final valid/test report and record the user's paths in the model's
.opt; an identical rerun of the finished run must leave the model alone; a raised
--max-train-steps continues from the final model.
"""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
import torch

from tests.support import (
    PARLAI,
    checkpoint_train_steps,
    final_report_updates,
    run_parlai,
    train_student_args,
)

pytestmark = pytest.mark.cli

STEPS = 120
INTERRUPT_AFTER = (
    20  # updates in the checkpoint before SIGINT (two epochs of the slice)
)
RUN_TIMEOUT = (
    900  # each checkpoint save rewrites the 3 MB catalog: slow on a busy machine
)


def _sha(path):
    return hashlib.sha256(open(path, 'rb').read()).hexdigest()


@pytest.mark.timeout(2400)
def test_sigint_resume_final_report_and_finished_rerun(teachers, tmp_path):
    root, env, common = teachers
    mf = tmp_path / 'student'
    cache = tmp_path / 'teacher.cache'
    args = train_student_args(
        teachers,
        mf,
        *('--save-every-n-secs', 0.5, '--teacher-cache', cache),
        steps=STEPS,
        validation_max_exs=16,
    )

    # 1. interrupted run: SIGINT once the checkpoint holds INTERRUPT_AFTER updates
    # not among the run's files
    log_path = tmp_path.parent / f'{tmp_path.name}-interrupted.log'
    with open(log_path, 'w') as log:
        proc = subprocess.Popen(
            [PARLAI, *map(str, args)],
            env={**os.environ, **env, 'PYTHONUNBUFFERED': '1'},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while (
            proc.poll() is None
            and (checkpoint_train_steps(f'{mf}.checkpoint.trainstats') or 0)
            < INTERRUPT_AFTER
        ):
            time.sleep(0.2)
        assert proc.poll() is None, 'the run ended before it could be interrupted'
        # ParlAI swallows a Ctrl-C that lands while it saves: repeat it
        while proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0 and 'KeyboardInterrupt' in log_path.read_text()
    interrupted_at = checkpoint_train_steps(f'{mf}.checkpoint.trainstats')
    assert INTERRUPT_AFTER <= interrupted_at < STEPS
    cached_before = len(torch.load(cache, weights_only=False)['entries'])
    assert cached_before > 0

    # 2. identical rerun: resumes from the checkpoint, finishes, reports the final weights
    resumed = run_parlai(args, env=env, timeout=RUN_TIMEOUT)
    log = resumed.stdout + resumed.stderr
    assert f'Loading existing model params from {mf}.checkpoint' in log
    # the resumed run opens the cache the interrupted one wrote, with every entry in it
    assert f'teacher cache {cache} ({cached_before} examples)' in log
    checkpoint_steps = checkpoint_train_steps(f'{mf}.checkpoint.trainstats')
    assert checkpoint_steps < STEPS  # the checkpoint is older than the final model...
    # ...which the final report scores
    assert final_report_updates(log) == {
        'valid': STEPS,
        'test': STEPS,
    }
    saved_opt = json.loads((tmp_path / 'student.opt').read_text())
    assert saved_opt['init_model'] is None
    # the teacher's dictionary, as given
    assert saved_opt['dict_file'] == f'{root / "dial"}.dict'
    stats = json.loads((tmp_path / 'student.trainstats').read_text())
    assert (
        stats['train_steps'] == STEPS
        and stats['finished']['reason']
        == f'train_steps {STEPS} reached --max-train-steps {STEPS}'
    )

    # 3. identical rerun of the finished run: says so, leaves every file alone
    files = {p.name: _sha(p) for p in tmp_path.iterdir() if p.is_file()}
    again = run_parlai(args, env=env, timeout=RUN_TIMEOUT)
    log = again.stdout + again.stderr
    assert (
        f'{mf}: training already finished (train_steps {STEPS} reached --max-train-steps {STEPS})'
        in log
    )
    assert 'Loading existing model params' not in log
    assert {p.name: _sha(p) for p in tmp_path.iterdir() if p.is_file()} == files
    # the recorded final report
    assert final_report_updates(log) == {
        'valid': STEPS,
        'test': STEPS,
    }

    # 4. a raised limit continues from the final model, not from the older checkpoint
    raised = list(args)
    raised[raised.index('--max-train-steps') + 1] = STEPS + 10
    more = run_parlai(raised, env=env, timeout=RUN_TIMEOUT)
    log = more.stdout + more.stderr
    assert f'continuing the finished run from {mf} (train_steps {STEPS})' in log
    assert f'Loading existing model params from {mf}.checkpoint' not in log
    assert final_report_updates(log) == {'valid': STEPS + 10, 'test': STEPS + 10}
