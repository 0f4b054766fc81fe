"""Guard: no gold reply text and no gold (new) item of the turn reaches any model input.

UniCRS issue #1 was such a leak: the response being predicted was part of the model's context.
Here every agent runs on real data (a slice of the shared ReDial copy) in ParlAI worlds, and its
inputs are checked where the model receives them: the batch (``text_vec``, ``context_ids``), the
tensors handed to the model's encoder / scorer, and what the student hands its two teachers.
What is checked, per example:

* the gold *new* items (the ones to recommend) are not in the context items / context ids /
  encoder tokens / rec-teacher contexts, and their item tokens are not in the dialogue text;
* the gold reply's token sequence is not inside the encoder input (replies of 5+ tokens, so a
  short "thanks!" said earlier in the dialogue is not mistaken for a leak).

Items the recommender repeats from the context are legitimately in the input (they were
mentioned before); the teacher-forced target of the loss (``label_vec``) is not an input.
A last test plants a leak and requires the guard to catch it.
"""

import pytest
import torch

from tests.support import run_parlai, shared_meta_or_skip, shared_redial_or_skip

pytestmark = pytest.mark.cli

SLICE = 12
TRUNC = {'truncate': 64, 'text_truncate': 64, 'label_truncate': 20}
TINY = {'n_layers': 1, 'embedding_size': 16, 'ffn_size': 32, 'n_heads': 2}
MIN_REPLY_TOKENS = 5


@pytest.fixture(scope='module')
def teachers(tmp_path_factory):
    redial, meta = shared_redial_or_skip(), shared_meta_or_skip()
    root = tmp_path_factory.mktemp('guard')
    env = {'OMP_NUM_THREADS': '1'}
    data = [
        '-dp',
        root / 'data',
        '--redial-path',
        redial,
        '--redial-meta-path',
        meta,
        '--redial-max-dialogues',
        SLICE,
    ]
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_rec_teacher',
            '-t',
            'redial_crs:rec',
            '-mf',
            root / 'rec',
            '-bs',
            16,
            '--num-epochs',
            1,
            '--rec-dim',
            16,
            '--validation-max-exs',
            20,
            *data,
        ],
        env=env,
    )
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_dialogue_teacher',
            '-t',
            'redial_crs',
            '-mf',
            root / 'dial',
            '-bs',
            8,
            '--num-epochs',
            1,
            '--skip-generation',
            'true',
            '--validation-max-exs',
            20,
            '--n-layers',
            1,
            '--embedding-size',
            16,
            '--ffn-size',
            32,
            '--n-heads',
            2,
            '--truncate',
            64,
            '--text-truncate',
            64,
            '--label-truncate',
            20,
            *data,
        ],
        env=env,
    )
    base = {
        'datapath': str(root / 'data'),
        'redial_path': str(redial),
        'redial_meta_path': str(meta),
        'redial_max_dialogues': SLICE,
    }
    return root, base


def contains(sequence, sub) -> bool:
    n = len(sub)
    return any(sequence[i : i + n] == sub for i in range(len(sequence) - n + 1))


class Guard:
    """Wraps an agent's batchify and model entry points; raises AssertionError on a leak."""

    def __init__(self, agent):
        self.agent = agent
        # per row of the current batch: {'reply', 'new', 'reply_vec', 'new_tokens'}
        self.gold = []
        self.rows_checked = 0
        self.replies_checked = 0
        original = agent.batchify

        def batchify(obs_batch, sort=False):
            batch = original(obs_batch, sort=sort)
            valid = (
                batch.valid_indices.tolist() if batch.valid_indices is not None else []
            )
            self.gold = [self._gold(obs_batch[i]) for i in valid]
            for row, i in enumerate(valid):
                self.check_observation(obs_batch[i], self.gold[row])
            return batch

        agent.batchify = batchify

    def _gold(self, obs):
        labels = obs.get('labels', obs.get('eval_labels'))
        reply = labels[0] if labels else ''
        new = [int(i) for i in obs.get('new_items') or []]
        gold = {
            'reply': reply,
            'new': new,
            'new_tokens': [self.agent.catalog[i].token for i in new],
        }
        if hasattr(self.agent, 'item_token_ids'):
            gold['reply_vec'] = list(self.agent.dict.txt2vec(reply))
            gold['new_ids'] = [int(self.agent.item_token_ids[i]) for i in new]
        return gold

    def check_observation(self, obs, gold):
        history = obs.get('full_text') or obs.get('text') or ''
        for token in gold['new_tokens']:
            assert (
                token not in history
            ), f'gold new item {token} is in the dialogue text: {history[-300:]!r}'
        for field in ('context_items', 'context_ids'):
            leaked = set(gold['new']) & set(obs.get(field) or [])
            assert not leaked, f'gold new items {sorted(leaked)} are in {field}'
        if len(gold.get('reply_vec', [])) >= MIN_REPLY_TOKENS:
            assert (
                gold['reply'] not in history
            ), f'the gold reply is in the dialogue text: {gold["reply"]!r}'

    def check_item_contexts(self, contexts):
        """Rows of item/entity ids (rankers' model input, the rec teacher's context items)."""
        assert len(contexts) == len(self.gold), (len(contexts), len(self.gold))
        for row, gold in zip(contexts, self.gold):
            ids = set(int(i) for i in row)
            assert not ids & set(
                gold['new']
            ), f'gold new items {sorted(ids & set(gold["new"]))} reach the model'
            self.rows_checked += 1

    def check_token_rows(self, tokens: torch.Tensor):
        """Rows of vocabulary ids (a generator's encoder input)."""
        assert tokens.size(0) == len(self.gold), (tokens.shape, len(self.gold))
        for row, gold in zip(tokens.tolist(), self.gold):
            leaked = set(row) & set(gold['new_ids'])
            assert (
                not leaked
            ), f'gold new item tokens {sorted(leaked)} reach the encoder'
            if len(gold['reply_vec']) >= MIN_REPLY_TOKENS:
                assert not contains(
                    row, gold['reply_vec']
                ), f'the gold reply reaches the encoder: {gold["reply"]!r}'
                self.replies_checked += 1
            self.rows_checked += 1

    def watch_ranker_model(self, model):
        forward = model.forward

        def checked(context, *args, **kwargs):
            self.check_item_contexts(
                [[i for i in row if i >= 0] for row in context.tolist()]
            )
            return forward(context, *args, **kwargs)

        model.forward = checked

    def watch_encoder(self, generator):
        encoder = generator._unwrapped_model().encoder
        forward = encoder.forward

        def checked(xs, *args, **kwargs):
            self.check_token_rows(xs)
            return forward(xs, *args, **kwargs)

        encoder.forward = checked


def _opt(base, **kwargs):
    from parlai.core.params import ParlaiParser

    return ParlaiParser(True, True).parse_kwargs(**base, **kwargs)


def _run_world(agent, opt, parleys=None):
    from parlai.core.worlds import create_task

    world = create_task(opt, agent)
    count = 0
    while not world.epoch_done() and (parleys is None or count < parleys):
        world.parley()
        count += 1


def _from_file(model_file, base, **overrides):
    """A trained agent with these options changed; returns (agent, the opt its world needs)."""
    from parlai.core.agents import create_agent_from_model_file

    agent = create_agent_from_model_file(model_file, {**base, **overrides})
    return agent, agent.opt


def _ranker(base, model, task):
    from parlai.core.agents import create_agent

    if model.startswith('/'):
        return _from_file(model, base, task=task, datatype='test', batchsize=8)
    opt = _opt(base, task=task, datatype='test', model=model, batchsize=8)
    return create_agent(opt), opt


@pytest.mark.parametrize(
    'model, task',
    [
        ('conkd_popularity', 'redial_crs:rec_all'),
        ('conkd_repeat', 'redial_crs:rec_all'),
        ('rec_teacher', 'redial_crs:rec_all'),
        # one example per recommender turn, episode histories
        (
            'rec_teacher',
            'redial_crs',
        ),
    ],
)
def test_rankers_never_see_the_gold_items(teachers, model, task):
    root, base = teachers
    agent, opt = _ranker(
        base, str(root / 'rec') if model == 'rec_teacher' else model, task
    )
    guard = Guard(agent)
    guard.watch_ranker_model(agent.model)
    _run_world(agent, opt)
    assert guard.rows_checked > 50


def test_generator_never_sees_the_gold_reply_or_items(teachers):
    root, base = teachers
    agent, opt = _from_file(
        str(root / 'dial'),
        base,
        task='redial_crs',
        datatype='test',
        batchsize=4,
        skip_generation=False,
        inference='greedy',
        **TRUNC,
    )
    guard = Guard(agent)
    guard.watch_encoder(agent)
    _run_world(agent, opt)
    assert guard.rows_checked > 50 and guard.replies_checked > 20


@pytest.mark.parametrize('datatype', ['train', 'test'])
def test_student_and_its_teachers_never_see_the_gold(teachers, datatype):
    """In training (distillation) and in evaluation (KD metrics + generation)."""
    from parlai.core.agents import create_agent

    root, base = teachers
    opt = _opt(
        base,
        task='redial_crs',
        datatype=datatype,
        model='conkd_student',
        gate='soft',
        dialogue_teacher_file=str(root / 'dial'),
        rec_teacher_file=str(root / 'rec'),
        init_model=str(root / 'dial'),
        dict_file=str(root / 'dial.dict'),
        batchsize=4,
        skip_generation=False,
        inference='greedy',
        **TINY,
        **TRUNC,
    )
    student = create_agent(opt)
    assert student.rec_teacher is not None and student.dialogue_teacher is not None
    guard = Guard(student)
    guard.watch_encoder(student)
    guard.watch_encoder(student.dialogue_teacher)  # runs on the student's batch
    item_log_probs = student.rec_teacher.item_log_probs
    seen = {'rec_teacher_rows': 0}

    def rec_teacher(context_items, texts=None, exclude_context=None, **kwargs):
        guard.check_item_contexts(context_items)
        for text, gold in zip(texts or [], guard.gold):
            for token in gold['new_tokens']:
                assert (
                    token not in text
                ), f'gold new item {token} is in the rec teacher\'s text'
        seen['rec_teacher_rows'] += len(context_items)
        return item_log_probs(context_items, texts, exclude_context, **kwargs)

    student.rec_teacher.item_log_probs = rec_teacher
    _run_world(student, opt, parleys=12 if datatype == 'train' else None)
    assert seen['rec_teacher_rows'] > 20 and guard.replies_checked > 5


def test_the_guard_catches_a_planted_leak(teachers):
    """A history that ends with the reply to predict (the UniCRS #1 shape) must fail the guard."""
    root, base = teachers
    # batch size 1: the world then hands observations to this very agent (not to shared copies)
    agent, opt = _from_file(
        str(root / 'dial'),
        base,
        task='redial_crs',
        datatype='test',
        batchsize=1,
        skip_generation=False,
        inference='greedy',
        **TRUNC,
    )
    observe = agent.observe

    def leaky_observe(observation):
        observation = observation.copy()
        labels = observation.get('eval_labels')
        if labels:
            observation.force_set('text', observation['text'] + '\n' + labels[0])
        return observe(observation)

    agent.observe = leaky_observe
    guard = Guard(agent)
    guard.watch_encoder(agent)
    with pytest.raises(AssertionError, match='gold'):
        _run_world(agent, opt)
