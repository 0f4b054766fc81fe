"""Any HF causal LM as the generator (issue #25), in-process on tiny random models of four
architectures with byte-level BPE tokenizers trained here (tests/support.py): padding does not
change the scores, greedy replies do not depend on the batch, beam search's cache reordering is
right, a few steps lower the loss, class decoding names an item after them, and a saved model
reloads to the same weights and replies. The errors name the option."""

import json
import os

import pytest
import torch

from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import (
    first_added_id,
    label_positions,
)
from tests.support import TINY_CAUSAL_LMS, loss_metrics_and_grads, make_tiny_causal_lm

pytest.importorskip('parlai')

ARCHITECTURES = sorted(TINY_CAUSAL_LMS)
#: the architectures of TINY_CAUSAL_LMS with an output head of their own (not tied to the input)
UNTIED = {'llama', 'gpt_neox'}


@pytest.fixture(scope='session')
def tiny_lm_dir(tmp_path_factory):
    made = {}

    def get(model_type):
        if model_type not in made:
            made[model_type] = make_tiny_causal_lm(
                tmp_path_factory.mktemp(model_type), model_type
            )
        return made[model_type]

    return get


EXAMPLES = [
    {
        'text': 'hi i liked __item_111__',
        'labels': ['you should see __item_222__'],
        'is_rec': True,
    },
    {
        'text': 'hello there, what do you recommend for tonight?',
        'labels': ['what kind of movies do you like?'],
        'is_rec': False,
    },
    {'text': 'i love horror', 'labels': ['try __item_333__'], 'is_rec': True},
]
TRAIN = [
    *('--optimizer', 'adam', '--learningrate', '0.02', '--dropout', '0'),
    *('--text-truncate', '64', '--label-truncate', '24', '--truncate', '64'),
]


def _batch(agent, examples):
    observations = []
    for example in examples:
        agent.reset()
        observations.append(agent.observe({'episode_done': True, **example}))
    return agent.batchify(observations)


def _greedy(agent, batch):
    agent.model.eval()
    with torch.no_grad():
        preds, _ = agent._generate(batch, 1, 30)
    return [[int(t) for t in tokens] for tokens, _score, *_ in preds]


def _nll(agent, batch):
    agent.model.eval()
    with torch.no_grad():
        scores, *_ = agent.model(*agent._model_input(batch), ys=batch.label_vec)
        loss = torch.nn.functional.cross_entropy(
            scores.flatten(0, 1), batch.label_vec.flatten(), ignore_index=agent.NULL_IDX
        )
    return float(loss)


@pytest.mark.parametrize('model_type', ARCHITECTURES)
def test_causal_lm_scores_generates_trains_and_reloads(
    model_type, tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    hf_dir = tiny_lm_dir(model_type)
    model_file = str(tmp_path / 'model')
    agent = make_dialogue_agent(
        tiny_catalog_file, tmp_path, 'hf', hf_dir, [*TRAIN, '-mf', model_file]
    )
    assert agent.NULL_IDX != agent.END_IDX
    # the table fits the dictionary; Qwen's spare rows past its tokenizer are kept
    spare = 16 if model_type == 'qwen2' else 0
    table = agent.model.lm.get_input_embeddings().weight.size(0)
    native = first_added_id(agent.dict) + spare
    assert table == max(len(agent.dict), native)
    assert type(agent.model.lm).__name__.lower().startswith(model_type.split('_')[0])
    batch = _batch(agent, EXAMPLES)

    # padding between context and reply changes nothing: each row scored alone is the same
    agent.model.eval()
    with torch.no_grad():
        together, *_ = agent.model(*agent._model_input(batch), ys=batch.label_vec)
        for row, example in enumerate(EXAMPLES):
            alone = _batch(agent, [example])
            scores, *_ = agent.model(*agent._model_input(alone), ys=alone.label_vec)
            length = alone.label_vec.size(1)
            torch.testing.assert_close(
                together[row, -length:], scores[0], atol=1e-5, rtol=1e-4
            )

    # greedy replies do not depend on the batch (cache, masks, positions)
    batched = _greedy(agent, batch)
    assert batched == [_greedy(agent, _batch(agent, [ex]))[0] for ex in EXAMPLES]

    # a few steps lower the loss; then class decoding names an item where the label does
    before = _nll(agent, batch)
    for _ in range(40):
        agent.train_step(batch)
        agent._local_metrics.clear()
    assert _nll(agent, batch) < before
    agent.opt['item_decoding'] = 'class'
    reply = _greedy(agent, _batch(agent, EXAMPLES[:1]))[0]
    assert set(reply) & set(agent.item_token_ids.tolist())
    agent.opt['item_decoding'] = 'token'

    # beam search (trained: replies end): the best hypothesis's score is its teacher-forced
    # log-probability (the cache was reordered with the beams)
    agent.opt['beam_length_penalty'] = 0.0
    agent.beam_length_penalty = 0.0
    agent.opt['item_no_repeat'] = 'none'  # plain ParlAI beam search
    agent.opt['inference'], agent.opt['beam_size'] = 'beam', 3
    one = _batch(agent, EXAMPLES[:1])
    with torch.no_grad():
        preds, _ = agent._generate(one, 3, 30)
        tokens, score = preds[0][0], preds[0][1]
        reply = tokens[1:] if int(tokens[0]) == agent.START_IDX else tokens
        logits, _ = agent.model.decode_forced(one.text_vec, reply.unsqueeze(0))
        forced = logits.log_softmax(-1)[0].gather(-1, reply.unsqueeze(-1)).sum()
    assert float(score) == pytest.approx(float(forced), abs=1e-4)
    agent.opt['inference'], agent.opt['beam_size'] = 'greedy', 1

    # saved and reloaded exactly (-mf alone), the same replies
    replies = _greedy(agent, batch)
    agent.save(model_file)
    from parlai.core.agents import create_agent_from_model_file

    reloaded = create_agent_from_model_file(model_file, {'inference': 'greedy'})
    for (name, mine), (_, theirs) in zip(
        agent.model.state_dict().items(), reloaded.model.state_dict().items()
    ):
        assert torch.equal(mine, theirs), name
    assert _greedy(reloaded, _batch(reloaded, EXAMPLES)) == replies


def _train(agent, batch, steps):
    for step in steps:
        torch.manual_seed(step)  # GPT-2's own dropout: the same draws in every run
        agent.train_step(batch)
        agent._local_metrics.clear()


LORA = ['--lora-r', '4', '--lora-alpha', '8', '--lora-dropout', '0']


def test_label_positions_are_the_hidden_states_that_predict_the_real_steps():
    """Hand-computed (issue #26): context width 3, labels left-padded to 4 steps. Row 0's three
    real steps start at step 1: the last context position (2) predicts it, positions 2 + 2 and
    2 + 3 the next two. Row 1's four real steps: positions 2, 3, 4, 5. Row 2 has none.
    """
    real = torch.tensor(
        [[False, True, True, True], [True, True, True, True], [False] * 4]
    )
    first = torch.tensor([1, 0, 3])
    keep = label_positions(real, first, context=3)
    assert keep.tolist() == [
        [False, False, True, False, True, True],
        [False, False, True, True, True, True],
        [False] * 6,
    ]


def test_without_mask_slicing_the_padded_head_gives_the_same_loss(
    tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent, monkeypatch
):
    """A transformers without bool ``logits_to_keep`` (older 5.x): the head runs at every label
    position and the real steps' rows are taken from it, the same loss."""
    from parlai_conkd.agents.conkd_dialogue_teacher import causal_lm

    torch.set_num_threads(1)
    agent = make_dialogue_agent(
        tiny_catalog_file, tmp_path, 'hf', tiny_lm_dir('llama'), TRAIN
    )
    batch = _batch(agent, EXAMPLES)
    packed = loss_metrics_and_grads(agent, batch, padded=False)
    monkeypatch.setattr(causal_lm, 'slices_bool_masks', lambda: False)
    agent.model._packed_head = None
    loss, metrics, grads = loss_metrics_and_grads(agent, batch, padded=False)
    assert agent.model._packed_head is None  # never tried
    torch.testing.assert_close(loss, packed[0], atol=1e-6, rtol=1e-5)
    assert metrics['token_acc'] == pytest.approx(packed[1]['token_acc'])
    for name, grad in grads.items():
        torch.testing.assert_close(grad, packed[2][name], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize('lora', [False, True], ids=['full', 'lora'])
@pytest.mark.parametrize('model_type', ARCHITECTURES)
def test_the_head_at_the_real_steps_gives_parlais_padded_loss_and_gradients(
    model_type, lora, tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    """Issue #26 on every architecture: the LM's head runs at the real label steps' positions
    only (``logits_to_keep`` as a bool mask), and the loss, ParlAI's metrics and every gradient
    are those of ParlAI's compute_loss over the padded [B, T, V] logits."""
    if lora:
        pytest.importorskip('peft')
    torch.set_num_threads(1)
    agent = make_dialogue_agent(
        tiny_catalog_file,
        tmp_path,
        'hf',
        tiny_lm_dir(model_type),
        [*TRAIN, *(LORA if lora else ())],
    )
    batch = _batch(agent, EXAMPLES)
    real = batch.label_vec.ne(agent.NULL_IDX)
    assert real.sum() < real.numel()  # there is padding to skip
    padded = loss_metrics_and_grads(agent, batch, padded=True)
    loss, metrics, grads = loss_metrics_and_grads(agent, batch, padded=False)
    assert agent.model._packed_head is True  # the head really ran packed
    torch.testing.assert_close(loss, padded[0], atol=1e-6, rtol=1e-5)
    for name in ('loss', 'ppl', 'token_acc', 'token_em'):
        assert metrics[name] == pytest.approx(padded[1][name], abs=1e-6), name
    assert grads.keys() == padded[2].keys() and grads
    for name, grad in grads.items():
        torch.testing.assert_close(grad, padded[2][name], atol=1e-6, rtol=1e-4)
    # a frozen teacher's scores at the real steps: the padded logits' rows
    with torch.no_grad():
        packed = agent.teacher_forced_scores(batch, only=real)
        agent.model.eval()
        full, *_ = agent.model(*agent._model_input(batch), ys=batch.label_vec)
    torch.testing.assert_close(packed, full[real], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('lora', [False, True], ids=['full', 'lora'])
@pytest.mark.parametrize('model_type', ARCHITECTURES)
def test_resumed_from_a_checkpoint_ends_where_the_uninterrupted_run_ends(
    model_type, lora, tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    """ParlAI's resume of an interrupted ``train_model`` (``--init-model M.checkpoint``,
    ``--load-from-checkpoint true``, as its TrainLoop sets them when M.checkpoint exists):
    weights, optimizer state and update count come back, so the resumed steps end bit for bit
    where the uninterrupted run ends. LoRA: the checkpoint holds the adapters and token deltas
    only, the base is re-read from --hf-model-path. Starting from the same file without its
    optimizer state (a fine-tune) ends elsewhere: what the check would catch."""
    if lora:
        pytest.importorskip('peft')
    from parlai.core.agents import create_agent

    torch.set_num_threads(1)
    model_file = str(tmp_path / 'model')
    agent = make_dialogue_agent(
        tiny_catalog_file,
        tmp_path,
        'hf',
        tiny_lm_dir(model_type),
        [*TRAIN, *(LORA if lora else ()), '-mf', model_file],
    )
    batch = _batch(agent, EXAMPLES)
    _train(agent, batch, range(3))
    agent.save(model_file + '.checkpoint')  # what TrainLoop's checkpoint save writes
    _train(agent, batch, range(3, 6))
    uninterrupted = agent.model.state_dict()

    def resumed(load_from_checkpoint):
        opt = agent.opt.copy()
        opt['init_model'] = model_file + '.checkpoint'
        opt['load_from_checkpoint'] = load_from_checkpoint
        again = create_agent(opt)
        assert again._number_training_updates == (3 if load_from_checkpoint else 0)
        _train(again, _batch(again, EXAMPLES), range(3, 6))
        return again.model.state_dict()

    state = resumed(True)
    assert state.keys() == uninterrupted.keys()
    for name, value in uninterrupted.items():
        assert torch.equal(state[name], value), name
    trained = [n for n, p in agent.model.named_parameters() if p.requires_grad]
    assert not lora or all('lora_' in n or 'trainable_tokens' in n for n in trained)
    fine_tuned = resumed(False)
    assert any(not torch.equal(fine_tuned[n], uninterrupted[n]) for n in trained)


#: name -> (options, beam size) of each ParlAI search
SEARCHES = {
    'greedy': ({'inference': 'greedy'}, 1),
    'beam': ({'inference': 'beam'}, 3),
    'delayedbeam': ({'inference': 'delayedbeam', 'topk': 5, 'beam_delay': 2}, 3),
    'topk': ({'inference': 'topk', 'topk': 5}, 1),
    'nucleus': ({'inference': 'nucleus', 'topp': 0.9}, 1),
    'delayednucleusbeam': (
        {'inference': 'delayednucleusbeam', 'topp': 0.9, 'beam_delay': 2},
        3,
    ),
}
DETERMINISTIC = ('greedy', 'beam')


def _decode(agent, batch, search):
    """The best reply of each row under ``search`` (seeded)."""
    options, beam_size = SEARCHES[search]
    agent.opt.update(options, beam_size=beam_size)
    agent.model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        preds, _ = agent._generate(batch, beam_size, 30)
    return [[int(t) for t in tokens] for tokens, _score, *_ in preds]


@pytest.mark.parametrize('model_type', ARCHITECTURES)
def test_class_item_decoding_names_an_item_under_every_search(
    model_type, tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    """--item-decoding class under greedy, beam, delayed beam, top-k and nucleus sampling and
    delayed nucleus beam, after a few steps on the examples: every search names an item in each
    recommendation (a film not in its context: --item-no-repeat dialogue), and the deterministic
    ones give each row the reply it gets alone."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    agent = make_dialogue_agent(
        tiny_catalog_file, tmp_path, 'hf', tiny_lm_dir(model_type), TRAIN
    )
    batch = _batch(agent, EXAMPLES)
    _train(agent, batch, range(40))
    agent.opt['item_decoding'] = 'class'
    assert agent.opt['item_no_repeat'] == 'dialogue'
    items = set(agent.item_token_ids.tolist())
    alone = [_batch(agent, [example]) for example in EXAMPLES]
    for search in SEARCHES:
        replies = _decode(agent, batch, search)
        for row, example in enumerate(EXAMPLES):
            named = set(replies[row]) & items
            if example['is_rec']:
                assert named, (search, row, agent._v2t(replies[row]))
                context = agent.catalog.items_in_text(example['text'])
                assert not {int(agent.item_token_ids[i]) for i in context} & named
        if search in DETERMINISTIC:
            assert replies == [_decode(agent, one, search)[0] for one in alone]


def test_not_a_causal_lm_is_refused_naming_the_option(tmp_path):
    from transformers import AutoConfig

    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import (
        CausalLMError,
        load_causal_lm,
    )

    AutoConfig.for_model('t5', d_model=8, num_layers=1).save_pretrained(tmp_path)
    with pytest.raises(CausalLMError, match='--hf-model-path .*not a causal'):
        load_causal_lm(str(tmp_path))


def test_a_tokenizer_without_eos_is_refused_naming_the_option(
    tiny_lm_dir, tmp_path, tiny_catalog_file
):
    from parlai_conkd.agents.conkd_dialogue_teacher.dictionary import (
        conkd_hf_tokenizer,
    )
    from parlai_conkd.agents.conkd_dialogue_teacher.hf_model import HFModelPathError

    source = tiny_lm_dir('gpt_neox')
    for name in ('tokenizer.json', 'tokenizer_config.json'):
        with open(os.path.join(source, name), encoding='utf-8') as f:
            text = f.read()
        if name == 'tokenizer_config.json':
            config = json.loads(text)
            config.pop('eos_token', None)
            text = json.dumps(config)
        (tmp_path / name).write_text(text, encoding='utf-8')
    with pytest.raises(HFModelPathError, match='--hf-model-path .*end-of-sequence'):
        conkd_hf_tokenizer(
            {'hf_model_path': str(tmp_path), 'item_catalog': tiny_catalog_file}
        )


@pytest.mark.parametrize('model_type', ARCHITECTURES)
def test_lora_trains_only_adapters_and_new_rows_and_reloads_from_the_model_file(
    model_type, tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    """GPT-2: tied head, Conv1D layers; Llama: untied head, Linear layers; Qwen2: tied head with
    spare rows past the tokenizer; GPT-NeoX: untied head (``embed_out``), fused
    ``query_key_value``."""
    pytest.importorskip('peft')
    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import (
        NEW_ROWS_IN,
        base_embeddings,
    )

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model_file = str(tmp_path / 'model')
    lora = ['--lora-r', '4', '--lora-alpha', '8', '--lora-dropout', '0']
    agent = make_dialogue_agent(
        tiny_catalog_file,
        tmp_path,
        'hf',
        tiny_lm_dir(model_type),
        [*TRAIN, *lora, '-mf', model_file],
    )
    trainable = [n for n, p in agent.model.named_parameters() if p.requires_grad]
    assert trainable and all(
        'lora_' in n or 'trainable_tokens_delta' in n for n in trainable
    )
    assert any('lora_A' in n for n in trainable)
    # the untied output head's new rows are trainable too
    deltas = [n for n in trainable if 'trainable_tokens_delta' in n]
    assert len(deltas) == (2 if model_type in UNTIED else 1)
    before = {n: p.detach().clone() for n, p in agent.model.named_parameters()}
    batch = _batch(agent, EXAMPLES)
    loss = _nll(agent, batch)
    for _ in range(10):
        agent.train_step(batch)
        agent._local_metrics.clear()
    assert _nll(agent, batch) < loss
    changed = {
        n for n, p in agent.model.named_parameters() if not torch.equal(p, before[n])
    }
    assert changed and changed <= set(trainable)
    assert any('lora_B' in n for n in changed) and any('delta' in n for n in changed)

    replies = _greedy(agent, batch)
    agent.save(model_file)
    saved = torch.load(model_file, map_location='cpu', weights_only=False)['model']
    assert set(saved) == set(trainable) | {NEW_ROWS_IN, 'new_rows_output'} & set(
        agent.model.state_dict()
    )
    from parlai.core.agents import create_agent_from_model_file

    reloaded = create_agent_from_model_file(model_file, {'inference': 'greedy'})
    mine, theirs = agent.model.state_dict(), reloaded.model.state_dict()
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    emb, _ = base_embeddings(reloaded.model)
    assert torch.equal(emb[-5:], getattr(reloaded.model, NEW_ROWS_IN)[-5:])
    assert _greedy(reloaded, _batch(reloaded, EXAMPLES)) == replies

    # merged into a plain HF directory: the same logits outside ParlAI
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import (
        export_hf_directory,
        merge_frozen,
    )

    # a student's frozen LoRA teacher is merged in place: the same scores
    merge_frozen(reloaded.model)
    assert not any(p.requires_grad for p in reloaded.model.parameters())
    with torch.no_grad():
        reloaded.model.eval(), agent.model.eval()
        torch.testing.assert_close(
            reloaded.model(*reloaded._model_input(batch), ys=batch.label_vec)[0],
            agent.model(*agent._model_input(batch), ys=batch.label_vec)[0],
        )

    out = export_hf_directory(agent.model, agent.dict.hf_tokenizer, tmp_path / 'hf')
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert AutoTokenizer.from_pretrained(out).get_vocab() == agent.dict.tok2ind
    ids = batch.text_vec[-1:]
    agent.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            merged(input_ids=ids).logits, agent.model.lm(input_ids=ids).logits
        )


def test_lora_targets_that_match_no_module_are_refused_naming_the_option(
    tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    pytest.importorskip('peft')
    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import CausalLMError

    with pytest.raises(CausalLMError, match='--lora-target-modules: nope match'):
        make_dialogue_agent(
            tiny_catalog_file,
            tmp_path,
            'hf',
            tiny_lm_dir('qwen2'),
            ['--lora-r', '2', '--lora-target-modules', 'q_proj,nope'],
        )


def test_init_model_of_the_other_lora_kind_is_refused_naming_the_option(
    tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    """A LoRA model file holds adapters over --hf-model-path's weights, a full one the whole
    model: --init-model of the other kind is refused, naming --lora-r (it used to end in a list
    of missing and unexpected state keys)."""
    pytest.importorskip('peft')
    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import CausalLMError

    hf_dir = tiny_lm_dir('qwen2')
    for kind in ('full', 'lora'):
        make_dialogue_agent(
            tiny_catalog_file,
            tmp_path,
            'hf',
            hf_dir,
            [*(LORA if kind == 'lora' else ()), '-mf', str(tmp_path / kind)],
        ).save()
    full, lora = str(tmp_path / 'full'), str(tmp_path / 'lora')
    with pytest.raises(CausalLMError, match=f'{full} holds a fully .* --lora-r 4'):
        make_dialogue_agent(
            tiny_catalog_file, tmp_path, 'hf', hf_dir, [*LORA, '--init-model', full]
        )
    with pytest.raises(CausalLMError, match=f'{lora} holds LoRA .* --lora-r 0'):
        make_dialogue_agent(
            tiny_catalog_file, tmp_path, 'hf', hf_dir, ['--init-model', lora]
        )
    # the same kind loads
    make_dialogue_agent(
        tiny_catalog_file, tmp_path, 'hf', hf_dir, [*LORA, '--init-model', lora]
    )


def test_gradient_checkpointing_gives_the_same_gradients(
    tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    grads = []
    for checkpointing in ('false', 'true'):
        torch.manual_seed(0)
        agent = make_dialogue_agent(
            tiny_catalog_file,
            tmp_path,
            'hf',
            tiny_lm_dir('llama'),
            [*TRAIN, '--gradient-checkpointing', checkpointing],
        )
        assert agent.model.lm.is_activation_checkpointing == (checkpointing == 'true')
        agent.model.train()
        batch = _batch(agent, EXAMPLES)
        scores, *_ = agent.model(*agent._model_input(batch), ys=batch.label_vec)
        torch.nn.functional.cross_entropy(
            scores.flatten(0, 1), batch.label_vec.flatten(), ignore_index=agent.NULL_IDX
        ).backward()
        grads.append({n: p.grad for n, p in agent.model.named_parameters()})
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)


def test_fp16_on_cpu_pads_the_vocabulary_and_runs_in_float32(
    tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    """ParlAI pads the dictionary to a multiple of 8 under --fp16 true on any device; the
    embeddings follow it; on CPU the model stays float32. --hf-bf16 with --fp16 is refused.
    """
    agent = make_dialogue_agent(
        tiny_catalog_file, tmp_path, 'hf', tiny_lm_dir('llama'), ['--fp16', 'true']
    )
    assert len(agent.dict) % 8 == 0
    assert agent.model.lm.get_input_embeddings().weight.size(0) == len(agent.dict)
    assert agent.model.lm.dtype == torch.float32
    assert len(_greedy(agent, _batch(agent, EXAMPLES))) == len(EXAMPLES)
    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import CausalLMError

    with pytest.raises(CausalLMError, match='--hf-bf16 true and --fp16 true'):
        make_dialogue_agent(
            tiny_catalog_file,
            tmp_path,
            'hf',
            tiny_lm_dir('qwen2'),
            ['--fp16', 'true', '--hf-bf16', 'true'],
        )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')
@pytest.mark.parametrize('precision', [['--fp16', 'true'], ['--hf-bf16', 'true']])
def test_half_precision_lora_steps_on_gpu(
    precision, tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    pytest.importorskip('peft')
    torch.manual_seed(0)
    agent = make_dialogue_agent(
        tiny_catalog_file,
        tmp_path,
        'hf',
        tiny_lm_dir('llama'),
        [*TRAIN, *precision, '--lora-r', '4', '--gpu', '0'],
    )
    assert next(agent.model.parameters()).is_cuda
    batch = _batch(agent, EXAMPLES).to('cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16, enabled=False):
        before = _nll(agent, batch)
    for _ in range(10):
        agent.train_step(batch)
        agent._local_metrics.clear()
    after = _nll(agent, batch)
    assert after == after and after < before  # finite, lower
    assert len(_greedy(agent, batch)) == len(EXAMPLES)


def test_new_rows_start_at_the_mean_or_at_the_fitted_item_vectors():
    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import (
        NEW_ROW_JITTER,
        init_new_rows,
    )

    torch.manual_seed(0)
    weight = torch.randn(10, 4) * 3 + 1
    base = weight[:6].clone()
    vectors = {7: torch.tensor([1.0, -1.0, 0.0, 2.0]), 9: torch.zeros(4)}
    init_new_rows(weight, 6, seed=0, item_rows=vectors)
    assert torch.equal(weight[:6], base)  # the model's own rows untouched
    mean, std = base.mean(0), base.std(0)
    for row in (6, 8):  # mean + seeded jitter, within a few jitter std of the mean
        assert ((weight[row] - mean).abs() <= 5 * NEW_ROW_JITTER * std).all()
    scale = (base - mean).std()
    torch.testing.assert_close(weight[7], mean + scale * vectors[7])
    torch.testing.assert_close(weight[9], mean)
    again = torch.randn(10, 4) * 3 + 1
    again[:6] = base
    init_new_rows(again, 6, seed=0, item_rows=vectors)
    assert torch.equal(again, weight)  # deterministic


EXPORT_HF = os.path.join(
    os.path.dirname(__file__), '..', '..', 'projects', 'conkd', 'export_hf.py'
)


@pytest.mark.parametrize(
    'model_type,lora', [('llama', False), ('qwen2', True)], ids=['llama', 'qwen2-lora']
)
def test_an_exported_directory_loads_back_as_the_base_with_its_trained_rows(
    model_type, lora, tiny_lm_dir, tiny_catalog_file, tmp_path, make_dialogue_agent
):
    """``export_hf.py``'s directory given back as ``--hf-model-path`` (to fine-tune further, or
    as a new dialogue teacher's base): its tokenizer already holds the pad, [REC]/[GEN] and item
    tokens, so their trained rows are the model's own and are kept (they were re-initialised
    as new rows). Llama: untied head, the project's pad; Qwen2 with LoRA: tied head, spare rows
    past the tokenizer, adapters merged by the export; it reloads as a full model, and as the
    base of a new LoRA run."""
    import importlib.util

    if lora:
        pytest.importorskip('peft')
    from transformers import AutoModelForCausalLM

    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import base_embeddings

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model_file = str(tmp_path / 'model')
    agent = make_dialogue_agent(
        tiny_catalog_file,
        tmp_path,
        'hf',
        tiny_lm_dir(model_type),
        [*TRAIN, *(LORA if lora else ()), '-mf', model_file],
    )
    batch = _batch(agent, EXAMPLES)
    _train(agent, batch, range(5))
    replies = _greedy(agent, batch)
    agent.save(model_file)

    spec = importlib.util.spec_from_file_location('export_hf', EXPORT_HF)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = script.export(model_file, str(tmp_path / 'hf'))
    exported = AutoModelForCausalLM.from_pretrained(out)
    old = first_added_id(agent.dict)
    tables = (exported.get_input_embeddings(), exported.get_output_embeddings())
    tables = [table.weight for table in tables]
    if model_type == 'qwen2':  # tied; its spare rows past the dictionary are kept too
        assert tables[0].size(0) > len(agent.dict)
        tables = tables[:1]

    for kind, extra in (('full', ()), ('lora', LORA if lora else None)):
        if extra is None:
            continue
        (tmp_path / kind).mkdir()
        again = make_dialogue_agent(
            tiny_catalog_file, tmp_path / kind, 'hf', out, [*TRAIN, *extra]
        )
        assert len(again.dict) == len(agent.dict)
        assert first_added_id(again.dict) == old
        # pad (Llama), [REC]/[GEN], the items: the exported rows, not new ones (with LoRA:
        # under peft's trainable-token deltas, which start at zero)
        mine = [t for t in base_embeddings(again.model) if t is not None]
        assert len(mine) == len(tables)
        for name, weight, theirs in zip(('input', 'output'), mine, tables):
            assert torch.equal(weight[old:], theirs[old:]), (kind, name)
            assert torch.equal(weight, theirs), (kind, name)
        assert _greedy(again, _batch(again, EXAMPLES)) == replies, kind


def test_new_rows_limited_to_a_slice_get_their_values_and_keep_the_rest():
    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import init_new_rows

    torch.manual_seed(0)
    before = torch.randn(12, 4)
    full, part = before.clone(), before.clone()
    vectors = {7: torch.ones(4), 10: -torch.ones(4)}
    init_new_rows(full, 6, seed=3, item_rows=vectors)
    init_new_rows(part, 6, seed=3, item_rows=vectors, rows=slice(8, 11))
    assert torch.equal(part[8:11], full[8:11])  # item row 10 and jittered rows 8, 9
    assert torch.equal(part[:8], before[:8]) and torch.equal(part[11:], before[11:])


def test_the_transformer_backbone_does_not_import_transformers():
    """Importing the agents leaves transformers (about 1.5-2 s of a process's start) for the HF
    backbone: every `parlai` command on the transformer backbone starts that much sooner.
    """
    import subprocess
    import sys

    code = (
        'import sys\n'
        'import parlai_conkd.agents.conkd_dialogue_teacher.conkd_dialogue_teacher\n'
        'import parlai_conkd.agents.conkd_student.conkd_student\n'
        'print(sorted(m for m in ("transformers", "peft") if m in sys.modules))\n'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == '[]', out.stdout + out.stderr
