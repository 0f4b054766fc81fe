"""The ConKD student through the real `parlai` CLI: tiny teachers, then each gate, on shared ReDial."""

import os

import pytest

from tests.support import (
    GEN,
    TINY_TRANSFORMER,
    TRUNC,
    make_tiny_gpt2,
    report,
    run_parlai,
    train_student_args,
)

pytestmark = pytest.mark.cli


# soft (the zoo's) and none (the baseline) in the default run; hard and static, whose math has unit
# tests, end to end with -m slow (the default run's 20-minute budget)
@pytest.mark.parametrize(
    'gate',
    [
        'soft',
        pytest.param('hard', marks=pytest.mark.slow),
        pytest.param('static', marks=pytest.mark.slow),
        'none',
    ],
)
def test_student_trains_saves_and_evaluates_with_each_gate(teachers, gate):
    root, env, common = teachers
    mf = root / f'student-{gate}'
    trained = run_parlai(
        train_student_args(
            teachers,
            mf,
            '--num-epochs',
            1,
            gate=gate,
            steps=None,
            validation_max_exs=16,
        ),
        env=env,
    )
    assert mf.is_file() and os.path.isfile(f'{mf}.catalog.json')
    train_report = report(trained)
    if gate == 'none':
        assert 'kd_loss' not in train_report
    else:
        assert train_report['kd_loss'] > 0 and 0 < train_report['kd_gate'] <= 1
        assert ('kd_rec_share' in train_report) == (gate == 'hard')
    if gate == 'static':
        assert train_report['kd_gate'] == pytest.approx(0.5)
    evaluated = report(
        run_parlai(
            [
                'eval_model',
                '-t',
                'redial_crs',
                '-mf',
                mf,
                '--num-examples',
                12,
                *GEN,
                *TRUNC,
                *common,
            ],
            env=env,
        )
    )
    for metric in (
        'ppl',
        'rer@1',
        'rer@10',
        'rer@50',
        'item_ratio',
        'dist-2',
        'dist_crs-2',
        'bleu-4',
    ):
        assert (
            metric in evaluated
        ), f'{metric} missing from eval_model report: {sorted(evaluated)}'
    assert ('kd_loss' in evaluated) == (gate != 'none')


# in the slow run for CI's 20 minutes: tests/interactive and the docs' commands chat with students too
@pytest.mark.slow
def test_interactive_student_answers_piped_input(teachers):
    root, env, common = teachers
    mf = root / 'student-chat'
    run_parlai(train_student_args(teachers, mf, steps=2, validation_max_exs=4), env=env)
    chat = run_parlai(
        ['interactive', '-mf', mf, *TRUNC, '-dp', root / 'data'],
        input='hi, I like scary movies like The Shining\n\n'
        + 'very long ' * 300
        + '\n',
        env=env,
    )
    replies = [line for line in chat.stdout.splitlines() if '[ConkdStudent]:' in line]
    assert len(replies) >= 2, chat.stdout[-2000:]
    assert '__item_' not in chat.stdout  # item tokens are shown as titles to people


def test_student_refuses_wrong_teacher_files(teachers, tmp_path):
    root, env, common = teachers
    base = [
        'train_model',
        '-t',
        'redial_crs',
        '-m',
        'conkd_student',
        '--gate',
        'soft',
        '-mf',
        tmp_path / 'x',
        '--max-train-steps',
        1,
        *TINY_TRANSFORMER,
        *TRUNC,
        *common,
    ]
    missing = run_parlai(
        base
        + [
            '--dialogue-teacher-file',
            root / 'dial',
            '--rec-teacher-file',
            tmp_path / 'nope',
        ],
        env=env,
        check=False,
    )
    assert (
        missing.returncode != 0
        and f'--rec-teacher-file {tmp_path / "nope"}: model file not found'
        in missing.stderr
    )
    swapped = run_parlai(
        base
        + [
            '--dialogue-teacher-file',
            root / 'dial',
            '--rec-teacher-file',
            root / 'dial',
        ],
        env=env,
        check=False,
    )
    assert swapped.returncode != 0
    assert (
        "is a 'conkd_dialogue_teacher' model; expected one of ['conkd_rec_teacher']"
        in swapped.stderr
    )


# in the slow run for CI's 20 minutes: tests/dialogue/test_causal_lm.py trains, decodes and reloads the HF backbones in-process
@pytest.mark.slow
def test_student_on_the_hugging_face_backbone(teachers, tmp_path):
    """A tiny random GPT-2 from a local directory: teacher and student share its tokenizer."""

    root, env, common = teachers
    hf = [
        '--backbone',
        'hf',
        '--hf-model-path',
        make_tiny_gpt2(str(tmp_path / 'gpt2')),
        '--truncate',
        64,
        '--text-truncate',
        48,
        '--label-truncate',
        12,
    ]
    run_parlai(
        [
            'train_model',
            '-t',
            'redial_crs',
            '-m',
            'conkd_dialogue_teacher',
            '-mf',
            tmp_path / 'dial',
            '-bs',
            4,
            '--max-train-steps',
            4,
            '--skip-generation',
            'true',
            '--validation-max-exs',
            8,
            *hf,
            *common,
        ],
        env=env,
    )
    trained = run_parlai(
        train_student_args(
            teachers,
            tmp_path / 'student',
            gate='hard',
            batch_size=4,
            steps=4,
            dialogue_teacher=tmp_path / 'dial',
            backbone=hf,
        ),
        env=env,
    )
    assert 'kd_rec_share' in report(trained)
    evaluated = report(
        run_parlai(
            [
                'eval_model',
                '-t',
                'redial_crs',
                '-mf',
                tmp_path / 'student',
                '--num-examples',
                6,
                *GEN,
                *hf,
                *common,
            ],
            env=env,
        )
    )
    assert {'rer@1', 'item_f1', 'kd_loss', 'ppl'} <= set(evaluated) or {
        'rer@1',
        'kd_loss',
        'ppl',
    } <= set(evaluated)
    chat = run_parlai(
        ['interactive', '-mf', tmp_path / 'student', '-dp', root / 'data'],
        input='any good thrillers?\n',
        env=env,
    )
    assert '[ConkdStudent]:' in chat.stdout


# in the slow run for CI's 20 minutes: torch.distributed startup dominates it
@pytest.mark.slow
def test_student_multiprocessing_train_with_two_cpu_workers(teachers, tmp_path):
    """torch.distributed with gloo on CPU; every worker loads both teachers and distils."""
    import os

    root, env, common = teachers
    out = run_parlai(
        train_student_args(
            teachers,
            tmp_path / 'student',
            *('--dict-file', f'{root / "dial"}.dict', '--eval-dynamic-batching', 'off'),
            *('--distributed-world-size', 2, '--port', 30000 + os.getpid() % 1000),
            batch_size=4,
            steps=4,
            command='multiprocessing_train',
        ),
        env=env,
        timeout=400,
    )
    log = out.stdout + out.stderr
    assert 'Distributed group initialized (gloo, CPU)' in log
    # the dialogue teacher, in each worker
    assert log.count('Loading existing model params from') >= 2
    assert report(out)['kd_loss'] > 0 and (tmp_path / 'student').is_file()
