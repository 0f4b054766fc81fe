"""The dialogue teacher in-process: item-token block, flag prefix, teacher-forced log-probs, ReR slot."""

import pytest
import torch

from parlai_conkd.items import GEN_TOKEN, REC_TOKEN
from tests.support import loss_metrics_and_grads

pytest.importorskip('parlai')


def _undefined(metric):
    """Recorded as 0/0: present in reports, no weight in the average."""
    return (metric + metric).value() == 0.0 and (metric + _one()).value() == 1.0


def _one():
    from parlai.core.metrics import AverageMetric

    return AverageMetric(1)


def _batch(agent, examples):
    observations = []
    for example in examples:
        agent.reset()
        observations.append(agent.observe({'episode_done': True, **example}))
    return agent.batchify(observations)


EXAMPLES = [
    {
        'text': 'hi i liked __item_111__',
        'labels': ['you should see __item_222__ and __item_333__'],
        'is_rec': True,
        'new_items': [1, 2],
    },
    # longer than the first label, so the first row is padded (left, for GPT-2)
    {
        'text': 'hello',
        'labels': ['what kind of movies do you like these days?'],
        'is_rec': False,
        'new_items': [],
    },
]


def test_item_tokens_are_in_catalog_order(agent, tiny_catalog):
    ids = agent.item_token_ids
    assert ids.dtype == torch.long and ids.shape == (len(tiny_catalog),)
    assert [agent.dict.ind2tok[int(i)] for i in ids] == tiny_catalog.tokens()
    assert agent.item_index_of_token == {int(v): i for i, v in enumerate(ids)}
    assert agent.dict.ind2tok[agent.rec_token_id] == REC_TOKEN
    assert agent.dict.ind2tok[agent.gen_token_id] == GEN_TOKEN
    # items are single tokens of the vocabulary, inline in text
    vec = agent.dict.txt2vec('see __item_444__')
    assert int(ids[3]) in vec


def test_targets_start_with_the_flag_from_is_rec(agent):
    batch = _batch(agent, EXAMPLES)
    first = [row[row.ne(agent.NULL_IDX)][0].item() for row in batch.label_vec]
    assert first == [agent.rec_token_id, agent.gen_token_id]
    assert batch.gold_new_items == [[1, 2], []]


def test_flag_falls_back_to_items_in_label_and_gold_to_label_minus_history(agent):
    batch = _batch(
        agent,
        [{'text': 'i liked __item_111__', 'labels': ['__item_111__ or __item_444__']}],
    )
    assert (
        batch.label_vec[0][batch.label_vec[0].ne(agent.NULL_IDX)][0].item()
        == agent.rec_token_id
    )
    assert batch.gold_new_items == [[3]]


def test_teacher_forced_log_probs(agent):
    batch = _batch(agent, EXAMPLES)
    agent.model.train()
    out = agent.teacher_forced_log_probs(batch)
    assert agent.model.training  # mode restored
    B, T = batch.label_vec.shape
    assert out.log_probs.shape == (B, T, len(agent.dict))
    assert not out.log_probs.requires_grad
    assert torch.allclose(out.log_probs.exp().sum(-1), torch.ones(B, T), atol=1e-5)
    manual = out.log_probs.exp()[:, :, agent.item_token_ids].sum(-1)
    assert torch.allclose(out.item_mass, manual, atol=1e-6)
    assert torch.equal(out.mask, batch.label_vec.ne(agent.NULL_IDX))
    # same numbers as ParlAI's own loss path (eval mode): distillation sees what NLL trains on
    agent.model.eval()
    scores = agent.model(*agent._model_input(batch), ys=batch.label_vec)[0]
    assert torch.allclose(
        out.log_probs, torch.log_softmax(scores.float(), -1), atol=1e-5
    )


def test_teacher_forced_scores_of_some_steps_are_the_full_scores_there(agent):
    batch = _batch(agent, EXAMPLES)
    real = batch.label_vec.ne(agent.NULL_IDX)
    full = agent.teacher_forced_scores(batch)
    packed = agent.teacher_forced_scores(batch, only=real)
    assert (
        packed.shape == (int(real.sum()), len(agent.dict)) and real.sum() < real.numel()
    )
    assert torch.allclose(packed, full[real], atol=1e-5)


def test_rer_slot_scores_match_teacher_forcing_and_metrics_are_recorded(agent):
    """Pretend the model generated the gold replies: the slot scores must be the teacher-forced
    item logits at the first item position (for left-padded GPT-2 too)."""
    agent.model.eval()
    batch = _batch(agent, EXAMPLES)
    preds = []
    for row in batch.label_vec:
        tokens = row[row.ne(agent.NULL_IDX)]
        preds.append(torch.cat([torch.tensor([agent.START_IDX]), tokens]))
    # first item slot = position of __item_222__ in the target (after [REC] you should see)
    target = preds[0][1:].tolist()
    slots = [target.index(int(agent.item_token_ids[1])), None]
    if not agent.is_hf:
        assert slots[0] == 4  # word-level: [REC] you should see __item_222__
    slot_scores = agent._slot_item_scores(batch, preds, slots)
    scores = agent.model(*agent._model_input(batch), ys=batch.label_vec)[0]
    row = batch.label_vec[0]
    offset = int(row.eq(agent.NULL_IDX).sum()) if agent.is_hf else 0  # left padding
    assert offset > 0 or not agent.is_hf
    expected = scores[0, offset + slots[0]][agent.item_token_ids]
    assert torch.allclose(slot_scores[0], expected, atol=1e-4)
    assert torch.equal(slot_scores[1], torch.zeros(len(agent.item_token_ids)))

    agent._local_metrics.clear()
    agent.record_response_metrics(batch, preds)
    metrics = agent._local_metrics
    assert (
        metrics['item_ratio'][0].value() == 1.0
        and metrics['item_ratio'][1].value() == 0.0
    )
    assert metrics['item_precision'][0].value() == 1.0 and _undefined(
        metrics['item_precision'][1]
    )
    assert metrics['item_f1'][0].value() == 1.0 and _undefined(metrics['item_f1'][1])
    assert _undefined(metrics['rer@1'][1])  # chit-chat turn: no recall to speak of
    top = torch.topk(expected, 2).indices.tolist()
    assert metrics['rer@1'][0].value() == pytest.approx(len({top[0]} & {1, 2}) / 2)
    assert metrics['rer@50'][0].value() == pytest.approx(1.0)  # 5 items < 50
    # the gold replies' flags
    assert [m.value() for m in metrics['rec_flag_acc']] == [
        1.0,
        1.0,
    ]
    preds[0][1] = agent.gen_token_id  # now the first reply claims chit-chat
    agent._local_metrics.clear()
    agent.record_response_metrics(batch, preds)
    assert [m.value() for m in agent._local_metrics['rec_flag_acc']] == [0.0, 1.0]


def test_reply_text_drops_the_flag_and_renders_titles_on_request(agent):
    vec = [
        agent.rec_token_id,
        *agent.dict.txt2vec('see'),
        int(agent.item_token_ids[4]),
        agent.END_IDX,
    ]
    assert '__item_555__' in agent._v2t(vec)
    assert '[REC]' not in agent._v2t(vec)
    agent.set_interactive_mode(True, shared=False)
    assert 'Jaws' in agent._v2t(vec) and '__item_' not in agent._v2t(vec)


def test_teacher_forced_item_recall_reads_the_gold_first_item_slot(agent):
    """tf_rer@k ranks items at the gold reply's first item token (item 222 -> catalog index 1)."""
    agent.model.eval()
    batch = _batch(agent, EXAMPLES)
    scores = torch.zeros(*batch.label_vec.shape, len(agent.dict))
    row = batch.label_vec[0]
    slot = int((row == agent.item_token_ids[1]).nonzero()[0])
    scores[0, slot, agent.item_token_ids[2]] = (
        5.0  # the slot ranks item 333 first, 222 second
    )
    scores[0, slot, agent.item_token_ids[1]] = 4.0
    scores[0, slot - 1, agent.item_token_ids[0]] = (
        9.0  # a different step: must be ignored
    )
    agent._local_metrics.clear()
    agent.record_teacher_forced_item_recall(batch, scores)
    metrics = agent._local_metrics
    # 1 of the 2 gold new items on top
    assert metrics['tf_rer@1'][0].value() == pytest.approx(0.5)
    assert metrics['tf_rer@10'][0].value() == pytest.approx(1.0)
    assert metrics['tf_rer@1'][1] is None  # chit-chat turn: no slot, no signal


def test_force_rec_flag_prefixes_every_reply_with_rec(agent):
    batch = _batch(agent, EXAMPLES)
    assert agent.get_prefix_tokens(batch) is None  # default: the model decides
    agent.opt['force_rec_flag'] = True
    try:
        assert agent.get_prefix_tokens(batch).tolist() == [
            [agent.rec_token_id],
            [agent.rec_token_id],
        ]
    finally:
        agent.opt['force_rec_flag'] = False


def test_response_recall_under_both_protocols_and_item_recall(agent, monkeypatch):
    """The reply repeats the seeker's item 111 (index 0) and recommends 444 (index 3): ``rer@k``
    ranks the new item only, ``rer_all@k`` both, at the same first item slot (hand-set scores).
    """
    agent.model.eval()
    example = {
        'text': 'i liked __item_111__',
        'labels': ['__item_111__ is great, also __item_444__'],
        'is_rec': True,
        'label_items': [0, 3],
        'new_items': [3],
    }
    batch = _batch(agent, [example])
    assert batch.gold_label_items == [[0, 3]] and batch.gold_new_items == [[3]]
    row = batch.label_vec[0]
    preds = [torch.cat([torch.tensor([agent.START_IDX]), row[row.ne(agent.NULL_IDX)]])]
    # slot ranking: 0 > 3 > 4 > 1 > 2
    monkeypatch.setattr(
        agent, '_slot_item_scores', lambda *_: torch.tensor([[5.0, 1.0, 0.0, 4.0, 2.0]])
    )
    agent._local_metrics.clear()
    agent.record_response_metrics(batch, preds)
    metrics = agent._local_metrics
    assert metrics['rer@1'][0].value() == 0.0  # the new item is second
    # one of the two gold items is first
    assert metrics['rer_all@1'][0].value() == pytest.approx(0.5)
    assert (
        metrics['rer@10'][0].value() == 1.0 and metrics['rer_all@10'][0].value() == 1.0
    )
    assert (
        metrics['rer_responses'][0].value() == 1
        and metrics['rer_all_responses'][0].value() == 1
    )
    # names 111 and 444; 444 is new
    assert metrics['item_precision'][0].value() == pytest.approx(0.5)
    assert metrics['item_recall'][0].value() == 1.0
    # without task fields, all items = the items named in the label
    plain = _batch(agent, [{'text': 'hello', 'labels': ['see __item_222__']}])
    assert plain.gold_label_items == [[1]]


def test_loss_at_the_real_steps_equals_parlais_padded_loss(agent):
    """Issue #26: the generators score the real label steps only; loss, ParlAI's metrics and
    every gradient are those of ParlAI's compute_loss over the padded batch."""
    batch = _batch(agent, EXAMPLES)
    real = batch.label_vec.ne(agent.NULL_IDX)
    assert real.sum() < real.numel()  # there is padding to skip
    agent._local_metrics = {}
    loss_padded, metrics_padded, grads_padded = loss_metrics_and_grads(
        agent, batch, padded=True
    )
    agent._local_metrics = {}
    loss, metrics, grads = loss_metrics_and_grads(agent, batch, padded=False)
    assert torch.allclose(loss, loss_padded, atol=1e-6)
    for name in ('loss', 'ppl', 'token_acc', 'token_em'):
        assert metrics[name] == pytest.approx(metrics_padded[name], abs=1e-6), name
    assert grads.keys() == grads_padded.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_padded[name], atol=1e-6), name


def test_a_model_class_that_ignores_the_real_step_switch_still_gives_the_right_loss(
    agent, monkeypatch
):
    """A subclass whose build_model returns a model without the switch (ParlAI's own
    decode_forced, padded [B,T,V] scores) gets the same loss, metrics and packed teacher scores,
    only without the saving (review of issue #26)."""
    from parlai.core.torch_generator_agent import TorchGeneratorModel

    from parlai_conkd.agents.conkd_dialogue_teacher.real_steps import at_real_steps

    batch = _batch(agent, EXAMPLES)
    real = batch.label_vec.ne(agent.NULL_IDX)
    loss, metrics, _ = loss_metrics_and_grads(agent, batch, padded=True)
    packed = agent.teacher_forced_scores(batch, only=real)
    model = type(agent._unwrapped_model())
    if not agent.is_hf:
        # the transformer backbone: ParlAI's decode_forced, which knows no switch
        monkeypatch.setattr(model, 'decode_forced', TorchGeneratorModel.decode_forced)
    else:  # the HF backbone: its own decode_forced, the switch ignored
        original = model.decode_forced
        monkeypatch.setattr(
            model,
            'decode_forced',
            lambda self, enc, ys: (
                original(self, enc, ys)
                if self.real_steps is None
                else _without_switch(self, original, enc, ys)
            ),
        )
    agent._local_metrics = {}
    loss_ignored, metrics_ignored, _ = loss_metrics_and_grads(
        agent, batch, padded=False
    )
    assert torch.allclose(loss_ignored, loss, atol=1e-6)
    assert metrics_ignored['token_acc'] == pytest.approx(metrics['token_acc'])
    assert torch.allclose(
        agent.teacher_forced_scores(batch, only=real), packed, atol=1e-5
    )
    with pytest.raises(ValueError, match='neither the .* real label steps'):
        at_real_steps(packed[:-1], real)


def _without_switch(model, decode_forced, encoder_states, ys):
    mask, model.real_steps = model.real_steps, None
    try:
        return decode_forced(model, encoder_states, ys)
    finally:
        model.real_steps = mask


def test_weights_of_another_shape_are_refused_naming_the_weight_not_the_dictionary(
    agent,
):
    """A model built with other shape options than its --init-model (a student started from its
    teacher without the teacher's --truncate) is told which weight differs (a vocabulary-sized
    mismatch still blames the .dict: tests/foundation/test_corrupt_files.py)."""
    from parlai_conkd.errors import OptionError

    state = {k: v.clone() for k, v in agent.model.state_dict().items()}
    name = next(
        n for n, v in state.items() if v.dim() == 2 and v.size(0) != len(agent.dict)
    )
    other = dict(state)
    other[name] = torch.zeros(state[name].size(0) + 3, *state[name].shape[1:])
    with pytest.raises(OptionError, match=f'{name} is .* there and .* here'):
        agent.load_state_dict(other)
