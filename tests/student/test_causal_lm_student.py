"""The student on the HF causal-LM backbone (issue #25, part 4), in-process, over the session's rec
teacher and a dialogue teacher on a tiny random causal LM saved here (tests/support.py): the
teacher cache gives the live KD loss, and a run interrupted at a ParlAI checkpoint and resumed
ends, bit for bit, where the uninterrupted run ends (full fine-tuning and LoRA).

The dialogue teacher is not trained: what is tested is the plumbing (the cache's alignment with
the HF backbone's left-padded labels, the optimizer and LoRA state in the checkpoint), which does
not depend on what the teacher knows.
"""

import pytest
import torch

from tests.support import (
    TRUNC,
    _fixed_batch,
    _student,
    make_tiny_causal_lm,
    redial_texts,
)

pytest.importorskip('parlai')

LORA = ['--lora-r', 4, '--lora-alpha', 8, '--lora-dropout', 0]


@pytest.fixture(scope='module')
def hf_dialogue_teachers(teachers, tmp_path_factory):
    """``model_type -> backbone args`` of an HF dialogue teacher for redial_crs saved under the
    session's data (made once per architecture)."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    root, env, common = teachers
    made = {}

    def get(model_type):
        if model_type not in made:
            directory = tmp_path_factory.mktemp(f'hf-student-{model_type}')
            hf = [
                *('--backbone', 'hf', '--hf-model-path'),
                make_tiny_causal_lm(directory / 'lm', model_type, redial_texts(100)),
            ]
            with pytest.MonkeyPatch.context() as patch:
                for key, value in env.items():
                    patch.setenv(key, value)
                args = [
                    *('-t', 'redial_crs', '-m', 'conkd_dialogue_teacher'),
                    *('-mf', directory / 'dial', *hf, *TRUNC, *common),
                ]
                opt = ParlaiParser(True, True).parse_args([str(a) for a in args])
                create_agent(opt).save()
            made[model_type] = [*hf, '--dialogue-teacher-file', directory / 'dial']
        return made[model_type]

    return get


def _loss(agent, batch):
    """One loss evaluation in train mode without gradients; local metrics off."""
    agent._control_local_metrics(disabled=True)
    try:
        with torch.no_grad():
            return agent.compute_loss(batch).item()
    finally:
        agent._control_local_metrics(enabled=True)


#: the default run: one architecture (Qwen2: tied head, spare rows, the modern recipe's family);
#: the others with -m slow
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    'model_type,gate',
    [
        ('qwen2', 'soft'),
        pytest.param('qwen2', 'hard', marks=SLOW),
        pytest.param('gpt2', 'soft', marks=SLOW),
        pytest.param('llama', 'hard', marks=SLOW),
        pytest.param('gpt_neox', 'soft', marks=SLOW),
    ],
)
def test_cached_and_live_teacher_targets_give_the_same_kd_loss(
    model_type, gate, teachers, hf_dialogue_teachers, tmp_path
):
    """As tests/student/test_agent.py on the transformer backbone: the cache keeps the whole
    vocabulary (k >= V, exact), so a cached step's KD loss is the live one (1e-4 relative).
    ``--kd-weight 1``: the loss is the KD term alone."""
    cache_file = tmp_path / 'teacher.cache'
    agent, teacher = _student(
        teachers,
        tmp_path,
        *hf_dialogue_teachers(model_type),
        *('--gate', gate, '--kd-weight', 1),
        *('--teacher-cache', cache_file, '--teacher-cache-topk', 1_000_000),
    )
    assert agent.is_hf and agent.dialogue_teacher.is_hf
    batch = _fixed_batch(agent, teacher)
    # the HF backbone left-pads the labels: rows of different lengths
    lengths = batch.label_vec.ne(agent.NULL_IDX).sum(-1)
    assert len(set(lengths.tolist())) > 1
    agent.model.train()
    cache, agent.teacher_cache = agent.teacher_cache, None
    live = _loss(agent, batch)
    agent.teacher_cache = cache
    first = _loss(agent, batch)  # misses: the teachers run, the entries are stored
    second = _loss(agent, batch)  # hits: no teacher runs
    assert (cache.misses, cache.hits) == (4, 4) and len(cache) == 4
    assert live > 0
    assert first == pytest.approx(live, rel=1e-4)
    assert second == pytest.approx(live, rel=1e-4)
    # the stored gate is the teacher's item mass at the real steps, in order
    dial = agent.dialogue_teacher.teacher_forced_log_probs(batch)
    mask = batch.label_vec.ne(agent.NULL_IDX)
    stored = torch.cat([cache.entries[key].gate for key in _keys(agent, batch)])
    torch.testing.assert_close(stored, dial.item_mass[mask].float())
    agent.save()
    assert cache_file.is_file()


def _keys(agent, batch):
    from parlai_conkd.teacher_cache import example_key

    null = agent.NULL_IDX
    return [
        example_key(t[t != null].tolist(), y[y != null].tolist())
        for t, y in zip(batch.text_vec, batch.label_vec)
    ]


def _train(agent, batch, steps):
    for step in steps:
        torch.manual_seed(step)  # GPT-2's own dropout: the same draws in both runs
        agent.train_step(batch)
        agent._local_metrics.clear()


@pytest.mark.parametrize(
    'model_type,lora',
    [
        ('qwen2', True),
        pytest.param('qwen2', False, marks=SLOW),
        pytest.param('gpt2', False, marks=SLOW),
        pytest.param('llama', True, marks=SLOW),
        pytest.param('gpt_neox', True, marks=SLOW),
    ],
)
def test_student_resumed_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(
    model_type, lora, teachers, hf_dialogue_teachers, tmp_path
):
    """ParlAI's resume (``train_model`` reruns with ``--init-model M.checkpoint`` and
    ``--load-from-checkpoint true``): weights, optimizer state and update count come back from
    the checkpoint, so the resumed steps give the uninterrupted run's weights exactly (LoRA: the
    file holds the adapters and token deltas, the base is re-read from --hf-model-path). That the
    check can fail (a start without the optimizer state ends elsewhere) is shown on the dialogue
    teacher, tests/dialogue/test_causal_lm.py.
    """
    from parlai.core.agents import create_agent

    extra = [*hf_dialogue_teachers(model_type), '--optimizer', 'adam', '-lr', 0.01]
    agent, teacher = _student(teachers, tmp_path, *extra, *(LORA if lora else ()))
    assert agent.is_hf
    batch = _fixed_batch(agent, teacher)
    mf = agent.opt['model_file']
    _train(agent, batch, range(3))
    agent.save(mf + '.checkpoint')  # what TrainLoop's --save-every-n-secs writes
    start = {k: v.clone() for k, v in agent.model.state_dict().items()}
    _train(agent, batch, range(3, 6))
    uninterrupted = {k: v.clone() for k, v in agent.model.state_dict().items()}
    trained = [n for n, p in agent.model.named_parameters() if p.requires_grad]
    assert any(not torch.equal(start[n], uninterrupted[n]) for n in trained)
    if lora:
        assert trained and all('lora_' in n or 'trainable_tokens' in n for n in trained)

    opt = agent.opt.copy()
    opt['init_model'] = mf + '.checkpoint'
    opt['load_from_checkpoint'] = True
    again = create_agent(opt)
    assert again._number_training_updates == 3
    _train(again, batch, range(3, 6))
    state = again.model.state_dict()
    assert state.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(state[name], value), name
