"""Batched item-aware decoding (issue #26, item 2) gives the tokens of the per-example path.

The item/word decision is taken once per step for every hypothesis of the batch
(``item_search.BatchedItemDecision``, through ParlAI's ``_generation_activation`` hook); the path
before it (each search deciding alone in ``select_paths``) stays behind the agent's private
``_batched_item_decoding`` switch. Both decode the same batches of the shared ReDial valid fold with
the smoke zoo's trained student, under one seed per decode, with every ParlAI search (greedy, beam,
delayed beam, top-k, nucleus, delayed nucleus beam), both ``--item-decoding`` modes, every
``--item-no-repeat`` policy, the [REC] threshold and gate, n-gram blocking, a forced prefix and the
pipeline's filler: the n-best lists (tokens and scores) must be equal, token for token and bit for
bit. Samplers draw from the same RNG stream in the same order on both paths, so they too are
compared exactly.

The default run decodes a covering subset (every search, mode and policy at least once); the whole
matrix runs with ``-m slow``.
"""

import itertools

import pytest
import torch

from parlai_conkd.agents.conkd_dialogue_teacher import item_search
from tests.support import SHARED_REDIAL, SHARED_REDIAL_META

MAX_TS = 20
BATCH = 8

#: name -> (opt overrides, beam size)
SEARCHES = {
    'greedy': ({'inference': 'greedy'}, 1),
    'beam': ({'inference': 'beam'}, 4),
    'delayedbeam': ({'inference': 'delayedbeam', 'topk': 10, 'beam_delay': 3}, 4),
    'topk': ({'inference': 'topk', 'topk': 10}, 1),
    'nucleus': ({'inference': 'nucleus', 'topp': 0.9}, 1),
    'delayednucleusbeam': (
        {'inference': 'delayednucleusbeam', 'topp': 0.9, 'beam_delay': 3},
        4,
    ),
}
MODES = ('class', 'token')
NO_REPEAT = ('none', 'reply', 'dialogue')
#: settings beyond search x mode x policy
EXTRAS = {
    'plain': {},
    # the flag at the first step from a threshold, and [GEN] replies naming no item
    'flag': {'rec_flag_threshold': 0.3, 'rec_flag_gates_items': True},
    # n-gram blocking (item tokens exempt) of the reply and of the context
    'ngram': {'beam_block_ngram': 2, 'beam_context_block_ngram': 3},
    # ParlAI's forced prefix ([REC] at the first step): that step per example, then batched
    'prefix': {'force_rec_flag': True},
    # the pipeline baseline: the rec teacher chooses which item fills a slot
    'filler': {'filler': True},
}

#: the default run: every search, mode, policy and extra at least once
DEFAULT_CASES = [
    ('greedy', 'class', 'dialogue', 'plain'),
    ('greedy', 'token', 'reply', 'filler'),
    ('beam', 'class', 'reply', 'ngram'),
    ('beam', 'token', 'dialogue', 'plain'),
    ('delayedbeam', 'class', 'dialogue', 'flag'),
    ('topk', 'class', 'dialogue', 'plain'),
    ('topk', 'token', 'reply', 'prefix'),
    ('nucleus', 'class', 'none', 'filler'),
    ('delayednucleusbeam', 'class', 'reply', 'plain'),
]
SLOW_CASES = [
    case
    for case in itertools.product(SEARCHES, MODES, NO_REPEAT, EXTRAS)
    if case not in DEFAULT_CASES
]


@pytest.fixture(scope='module')
def zoo_student(smoke_zoo):
    """The smoke zoo's soft student in-process, two batches of the valid fold (the first with its
    contexts' items), and the rec teacher as the pipeline's filler."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    datapath, _env = smoke_zoo
    data = [
        '-dp',
        str(datapath),
        '--redial-path',
        str(SHARED_REDIAL),
        '--redial-meta-path',
        str(SHARED_REDIAL_META),
    ]
    zoo = datapath / 'models' / 'conkd'
    torch.set_num_threads(1)
    opt = ParlaiParser(True, True).parse_args(
        [
            '-mf',
            str(zoo / 'soft'),
            '-t',
            'redial_crs',
            '-dt',
            'valid',
            '--no-cuda',
            *data,
        ]
    )
    agent = create_agent(opt)
    agent.model.eval()
    task_opt = ParlaiParser(True, True).parse_args(
        ['-t', 'redial_crs', '-m', 'repeat_label', '-dt', 'valid', *data]
    )
    teacher = create_task(task_opt, [agent.clone()]).get_agents()[0]
    batches = []
    for _ in range(2):
        observations = [agent.clone().observe(teacher.act()) for _ in range(BATCH)]
        batches.append(agent.batchify(observations))
    agent.opt['fill_items_from'] = str(zoo / 'rec_teacher')
    filler = agent._load_item_filler()
    agent.opt['fill_items_from'] = None
    # The smoke model's favourite films are seldom in these contexts, so that --item-no-repeat
    # dialogue (and which row's context is which) would change nothing: row r's context also
    # names the first r % 3 films its greedy class decoding names without that rule.
    for batch in batches:
        named = _decode(agent, batch, None, 'greedy', 'class', 'none', 'plain', True, 0)
        for row, nbest in enumerate(named):
            films = agent.item_vocab.index_of(torch.tensor(nbest[0][0]))
            films = list(dict.fromkeys(i for i in films.tolist() if i >= 0))
            batch.context_items[row] = [
                *batch.context_items[row],
                *films[: row % 3],
            ]
    return agent, batches, filler


def _decode(agent, batch, filler, search, mode, no_repeat, extra, batched, seed):
    opts, beam_size = SEARCHES[search]
    settings = {
        **opts,
        'beam_size': beam_size,
        'item_decoding': mode,
        'item_no_repeat': no_repeat,
        'rec_flag_threshold': None,
        'rec_flag_gates_items': False,
        'force_rec_flag': False,
        **{k: v for k, v in EXTRAS[extra].items() if k != 'filler'},
    }
    saved_opt = {k: agent.opt.get(k) for k in settings}
    saved = (agent.beam_block_ngram, agent.beam_context_block_ngram, agent.item_filler)
    agent.opt.update(settings)
    agent.beam_block_ngram = settings.pop('beam_block_ngram', -1)
    agent.beam_context_block_ngram = settings.pop('beam_context_block_ngram', -1)
    agent.item_filler = filler if 'filler' in EXTRAS[extra] else None
    agent._batched_item_decoding = batched
    batch['filler_log_probs'] = None
    try:
        torch.manual_seed(seed)
        with torch.no_grad():
            _preds, beams = agent._generate(
                batch, beam_size, MAX_TS, prefix_tokens=agent.get_prefix_tokens(batch)
            )
    finally:
        agent.opt.update(saved_opt)
        agent.beam_block_ngram, agent.beam_context_block_ngram, agent.item_filler = (
            saved
        )
        del agent._batched_item_decoding
    return [
        [
            (tokens.tolist(), float(score))
            for tokens, score, _ in b.get_rescored_finished()
        ]
        for b in beams
    ]


def _check_equal(zoo_student, monkeypatch, search, mode, no_repeat, extra):
    agent, batches, filler = zoo_student
    per_example_steps = []
    original = item_search.ItemAwareSearch._select_paths_per_example

    def spy(self, logprobs, prior_scores, current_length):
        per_example_steps.append(current_length)
        return original(self, logprobs, prior_scores, current_length)

    monkeypatch.setattr(item_search.ItemAwareSearch, '_select_paths_per_example', spy)
    outputs = []
    for seed, batch in enumerate(batches):
        args = (agent, batch, filler, search, mode, no_repeat, extra)
        old = _decode(*args, batched=False, seed=seed)
        # token decoding with nothing to exclude, fill or flag is ParlAI's own search
        active = mode == 'class' or no_repeat != 'none' or extra in ('flag', 'filler')
        assert bool(per_example_steps) == active, 'the old path decides per example'
        per_example_steps.clear()
        new = _decode(*args, batched=True, seed=seed)
        # the batch decided every step (a forced prefix: the prefix's step per example)
        assert set(per_example_steps) <= ({0} if extra == 'prefix' else set())
        per_example_steps.clear()
        assert new == old, (search, mode, no_repeat, extra, seed)
        outputs.append(new)
    return outputs


def test_the_batches_exercise_the_item_rules(zoo_student):
    # the equivalence below is only worth something if contexts and policies change the output
    agent, batches, _filler = zoo_student
    for batch in batches:
        outputs = {
            policy: _decode(agent, batch, None, 'greedy', 'class', policy, 'plain', *x)
            for policy in NO_REPEAT
            for x in [(True, 0)]
        }
        assert outputs['none'] != outputs['reply'] != outputs['dialogue']


@pytest.mark.parametrize('search, mode, no_repeat, extra', DEFAULT_CASES)
def test_batched_decoding_equals_per_example(
    zoo_student, monkeypatch, search, mode, no_repeat, extra
):
    outputs = _check_equal(zoo_student, monkeypatch, search, mode, no_repeat, extra)
    if mode == 'class' and extra != 'flag':
        # class decoding names films here: the item columns were really decided
        agent = zoo_student[0]
        items = set(agent.item_token_ids.tolist())
        named = [
            t for out in outputs for nbest in out for tokens, _ in nbest for t in tokens
        ]
        assert items & set(named), (search, mode, no_repeat, extra)


@pytest.mark.slow
@pytest.mark.parametrize('search, mode, no_repeat, extra', SLOW_CASES)
def test_batched_decoding_equals_per_example_everywhere(
    zoo_student, monkeypatch, search, mode, no_repeat, extra
):
    _check_equal(zoo_student, monkeypatch, search, mode, no_repeat, extra)
