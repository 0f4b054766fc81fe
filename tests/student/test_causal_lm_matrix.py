"""The HF-backbone matrix (issue #25), slow: for each tiny architecture of tests/support.py (GPT-2,
Llama, Qwen2, GPT-NeoX; tokenizers trained on a ReDial slice), a dialogue teacher trained through
the CLI on shared ReDial, then a ConKD student (soft gate) distilled from it and the session's rec
teacher: a few student steps lower the loss (in-process, fixed batch); through the CLI, greedy
replies are the same at -bs 1 and -bs 8 and after the student is reloaded from its file, and the
checkpoint loads in `parlai interactive` and answers with a titled film. One architecture also
trains with LoRA and with a 2-worker `multiprocessing_train` (gloo on CPU). A LoRA dialogue
teacher and a student with a teacher cache are interrupted (SIGINT) and resumed as
tests/student/test_resume.py does on the transformer backbone.
"""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from tests.support import (
    PARLAI,
    TINY_CAUSAL_LMS,
    checkpoint_train_steps,
    final_report_updates,
    make_tiny_causal_lm,
    redial_texts,
    run_parlai,
)

pytestmark = [pytest.mark.slow, pytest.mark.cli]

ARCHITECTURES = sorted(TINY_CAUSAL_LMS)
SHORT = ['--text-truncate', 96, '--label-truncate', 32, '--truncate', 96]


def _hf(tmp_path_factory, model_type):
    texts = redial_texts()
    directory = tmp_path_factory.mktemp(f'hf-{model_type}')
    return [
        '--backbone',
        'hf',
        '--hf-model-path',
        make_tiny_causal_lm(directory, model_type, texts),
    ]


@pytest.fixture(scope='session')
def hf_teachers(teachers, tmp_path_factory):
    """Per architecture: (backbone args, its dialogue teacher's model file), trained once."""
    root, env, common = teachers
    made = {}

    def get(model_type):
        if model_type not in made:
            backbone = _hf(tmp_path_factory, model_type)
            dial = tmp_path_factory.mktemp(f'dial-{model_type}') / 'dial'
            run_parlai(
                [
                    *(
                        'train_model',
                        '-t',
                        'redial_crs',
                        '-m',
                        'conkd_dialogue_teacher',
                    ),
                    *('-mf', dial, '-bs', 8, '--num-epochs', 8, '-lr', '0.01'),
                    *('--optimizer', 'adam', '--skip-generation', 'true'),
                    *('--validation-max-exs', 16),
                    *backbone,
                    *SHORT,
                    *common,
                ],
                env=env,
                timeout=600,
            )
            made[model_type] = (backbone, dial)
        return made[model_type]

    return get


def _student_args(teachers, backbone, dial, model_file, *extra):
    root, _, common = teachers
    return [
        *('-t', 'redial_crs', '-m', 'conkd_student', '--gate', 'soft'),
        *('--dialogue-teacher-file', dial, '--rec-teacher-file', root / 'rec'),
        *('--init-model', dial, '-mf', model_file),
        *('--optimizer', 'adam', '-lr', '0.003', '--dropout', '0'),
        *backbone,
        *SHORT,
        *common,
        *extra,
    ]


@pytest.mark.parametrize('model_type', ARCHITECTURES)
def test_soft_gate_student_steps_lower_the_loss(
    model_type, teachers, hf_teachers, tmp_path, monkeypatch
):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    backbone, dial = hf_teachers(model_type)
    for key, value in teachers[1].items():
        monkeypatch.setenv(key, value)
    args = _student_args(
        teachers, backbone, dial, tmp_path / 'student', '-dt', 'train:ordered'
    )
    opt = ParlaiParser(True, True).parse_args([str(a) for a in args])
    agent = create_agent(opt)
    task = create_task(opt, agent).get_agents()[0]
    observations = []
    for _ in range(6):
        observations.append(agent.clone().observe(task.act()))
    batch = agent.batchify(observations)

    def loss():
        agent.model.eval()
        with torch.no_grad():
            value = float(agent.compute_loss(batch))
        agent._local_metrics.clear()
        return value

    before = loss()
    for _ in range(8):
        agent.train_step(batch)
        agent._local_metrics.clear()
    assert loss() < before


def _replies(world_log):
    """{(conversation, context, gold): reply text} of a ``--world-logs`` file (batches of another
    size visit the examples in another order)."""
    replies = {}
    with open(world_log, encoding='utf-8') as f:
        for line in f:
            for example, *turns in json.loads(line)['dialog'] if line.strip() else ():
                key = (
                    example.get('conversation_id'),
                    example['text'],
                    tuple(example.get('eval_labels', ())),
                )
                replies[key] = [turn['text'] for turn in turns]
    return replies


@pytest.mark.parametrize('model_type', ARCHITECTURES)
def test_cli_student_batch_invariant_reloadable_and_chats_with_a_titled_film(
    model_type, teachers, hf_teachers, tmp_path
):
    backbone, dial = hf_teachers(model_type)
    _, env, common = teachers
    student = tmp_path / 'student'
    run_parlai(
        [
            'train_model',
            *_student_args(teachers, backbone, dial, student),
            *('-bs', 8, '--max-train-steps', 10, '--skip-generation', 'true'),
            *('--validation-max-exs', 8),
        ],
        env=env,
        timeout=600,
    )
    logs = []
    for batch_size in (1, 8):
        log = tmp_path / f'bs{batch_size}.jsonl'
        run_parlai(
            [
                *('eval_model', '-t', 'redial_crs', '-mf', student, '-dt', 'valid'),
                *('--inference', 'greedy', '--skip-generation', 'false'),
                *('-bs', batch_size, '--world-logs', log),
                *common,
            ],
            env=env,
            timeout=600,
        )
        logs.append(_replies(log))
    assert logs[0] and logs[0] == logs[1]

    # a person's chat: the reply names a film by its title (class decoding, [REC] forced)
    proc = run_parlai(
        [
            *('interactive', '-mf', student, '--inference', 'greedy'),
            *('--item-decoding', 'class', '--force-rec-flag', 'true'),
            *('--item-no-repeat', 'none', '--label-truncate', 16),
            *('--beam-min-length', 4),  # a reply, not an immediate end
            # tiny models repeat the space before an item token; unigram blocking (item tokens
            # are exempt from it) moves them on
            *('--beam-block-ngram', 1),
            *common[:2],  # -dp (interactive has no task options)
        ],
        env=env,
        input='I loved @202190, what else should I watch?\n[EXIT]\n',
        timeout=600,
    )
    reply = proc.stdout.split('[ConkdStudent]:', 1)[1].split('\n', 1)[0]
    assert '__item_' not in reply
    assert any(f'({year})' in reply for year in range(1900, 2030)), proc.stdout[-2000:]


def test_lora_student_and_two_worker_multiprocessing_train(
    teachers, hf_teachers, tmp_path
):
    """Llama (untied head): a LoRA dialogue teacher (item rows from the rec teacher) and its
    student through the CLI, the student with two gloo workers on CPU; the student's file holds
    no base weights."""
    pytest.importorskip('peft')
    backbone, _ = hf_teachers('llama')
    root, env, common = teachers
    lora = ['--lora-r', 4, '--lora-alpha', 8]
    dial = tmp_path / 'dial'
    run_parlai(
        [
            *('train_model', '-t', 'redial_crs', '-m', 'conkd_dialogue_teacher'),
            *('-mf', dial, '-bs', 8, '--max-train-steps', 4, '-lr', '0.003'),
            *('--optimizer', 'adam', '--skip-generation', 'true'),
            *('--validation-max-exs', 8),
            *backbone,
            *lora,
            *('--item-embeddings-from', root / 'rec'),
            *SHORT,
            *common,
        ],
        env=env,
        timeout=600,
    )
    student = tmp_path / 'student'
    out = run_parlai(
        [
            'multiprocessing_train',
            *_student_args(teachers, backbone, dial, student, *lora),
            *('--distributed-world-size', 2, '--eval-dynamic-batching', 'off'),
            *('-bs', 4, '--max-train-steps', 3, '--skip-generation', 'true'),
            *('--validation-max-exs', 8),
        ],
        env=env,
        timeout=600,
    )
    log = out.stdout + out.stderr
    assert 'Distributed group initialized (gloo, CPU)' in log
    states = torch.load(student, map_location='cpu', weights_only=False)['model']
    assert states and all(
        'lora_' in k or 'trainable_tokens' in k or k.startswith('new_rows')
        for k in states
    )
    stats = json.loads((tmp_path / 'student.trainstats').read_text())
    assert stats['train_steps'] >= 3


def _interrupt(args, env, mf, after, log_path):
    """Run ``parlai <args>`` and SIGINT it once its checkpoint holds ``after`` updates; returns
    the checkpoint's update count."""
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
            and (checkpoint_train_steps(f'{mf}.checkpoint.trainstats') or 0) < after
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
    return checkpoint_train_steps(f'{mf}.checkpoint.trainstats')


RESUME_STEPS = 60
RESUME_AFTER = 10


@pytest.mark.timeout(1800)
@pytest.mark.parametrize('who', ['lora_dialogue_teacher', 'student_with_cache'])
def test_cli_interrupted_and_resumed_run_ends_at_its_limit(
    who, teachers, hf_teachers, tmp_path
):
    """SIGINT once the checkpoint holds RESUME_AFTER updates, then the identical command: it
    resumes from M.checkpoint (LoRA: adapters and token deltas over --hf-model-path), ends at
    --max-train-steps and its final report scores the final weights; the student reopens the
    teacher cache the interrupted run wrote. Then an identical rerun is told the run finished.
    """
    _, env, common = teachers
    mf = tmp_path / 'model'
    limits = [*('--max-train-steps', RESUME_STEPS, '--save-every-n-secs', 0.5)]
    if who == 'lora_dialogue_teacher':
        pytest.importorskip('peft')
        backbone, _ = hf_teachers('llama')
        args = [
            *('train_model', '-t', 'redial_crs', '-m', 'conkd_dialogue_teacher'),
            *('-mf', mf, '-bs', 4, '-lr', '0.003', '--optimizer', 'adam'),
            *('--skip-generation', 'true', '--validation-max-exs', 8),
            *('--lora-r', 4, '--lora-alpha', 8),
            *backbone,
            *SHORT,
            *common,
            *limits,
        ]
    else:
        backbone, dial = hf_teachers('qwen2')
        cache = tmp_path / 'teacher.cache'
        args = [
            'train_model',
            *_student_args(teachers, backbone, dial, mf, '--teacher-cache', cache),
            *('-bs', 4, '--skip-generation', 'true', '--validation-max-exs', 8),
            *limits,
        ]
    log_path = tmp_path.parent / f'{tmp_path.name}-interrupted.log'
    interrupted_at = _interrupt(args, env, mf, RESUME_AFTER, log_path)
    assert RESUME_AFTER <= interrupted_at < RESUME_STEPS
    if who == 'student_with_cache':
        cached = len(torch.load(cache, weights_only=False)['entries'])
        assert cached > 0

    resumed = run_parlai(args, env=env, timeout=900)
    log = resumed.stdout + resumed.stderr
    assert f'Loading existing model params from {mf}.checkpoint' in log
    if who == 'student_with_cache':
        assert f'teacher cache {cache} ({cached} examples)' in log
    assert final_report_updates(log) == {'valid': RESUME_STEPS, 'test': RESUME_STEPS}
    stats = json.loads((tmp_path / 'model.trainstats').read_text())
    assert stats['train_steps'] == RESUME_STEPS
    states = torch.load(mf, map_location='cpu', weights_only=False)['model']
    if who == 'lora_dialogue_teacher':
        assert states and all(
            'lora_' in k or 'trainable_tokens' in k or k.startswith('new_rows')
            for k in states
        )

    again = run_parlai(args, env=env, timeout=900)
    assert f'{mf}: training already finished' in again.stdout + again.stderr
