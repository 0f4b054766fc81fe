"""The student agent in-process, on a fixed batch: cached teacher targets give the live loss."""

import pytest
import torch

from tests.support import _fixed_batch, _student


def _loss(agent, batch, compute=None):
    """One loss evaluation in train mode; local metrics off (ParlAI records them once per batch)."""
    agent._control_local_metrics(disabled=True)
    try:
        with torch.no_grad():
            return (compute or agent.compute_loss)(batch).item()
    finally:
        agent._control_local_metrics(enabled=True)


@pytest.mark.parametrize('gate', ['soft', 'hard'])
def test_cached_and_live_teacher_targets_give_the_same_loss(teachers, tmp_path, gate):
    """Tolerance: 1e-4 relative when the cache keeps the whole vocabulary (k >= V); with a smaller
    k the tail is dropped and renormalised (see tests/student/test_teacher_cache.py for that bound).
    """
    cache_file = tmp_path / 'teacher.cache'
    agent, teacher = _student(
        teachers,
        tmp_path,
        '--gate',
        gate,
        '--teacher-cache',
        cache_file,
        '--teacher-cache-topk',
        1_000_000,
    )
    batch = _fixed_batch(agent, teacher)
    agent.model.train()
    cache, agent.teacher_cache = agent.teacher_cache, None
    live = _loss(agent, batch)
    agent.teacher_cache = cache
    first = _loss(agent, batch)  # misses: teachers run, entries are stored
    second = _loss(agent, batch)  # hits: no teacher runs
    assert (cache.misses, cache.hits) == (4, 4) and len(cache) == 4
    assert first == pytest.approx(live, rel=1e-4) and second == pytest.approx(
        live, rel=1e-4
    )
    agent.save()
    assert cache_file.is_file()


def test_a_partly_cached_batch_runs_the_teachers_on_its_new_examples_alone(
    teachers, tmp_path
):
    """Issue #26: ParlAI samples training episodes with replacement, so most batches of the first
    epochs mix cached and new examples; only the new ones go through the teachers, and the loss is
    the one of a batch filled all at once."""
    cache_file = tmp_path / 'teacher.cache'
    agent, teacher = _student(
        teachers, tmp_path, '--teacher-cache', cache_file, '--teacher-cache-topk', 64
    )
    batch = _fixed_batch(agent, teacher)
    agent.model.train()
    whole = _loss(agent, batch)  # fills the cache for all 4 examples at once
    cache = agent.teacher_cache
    keys = list(cache.entries)
    assert len(keys) == 4
    for key in keys[1:3]:  # forget two of them
        del cache.entries[key]
    seen = []
    forward = agent.dialogue_teacher.teacher_forced_scores

    def counting(sub, only=None):
        seen.append(sub.text_vec.size(0))
        return forward(sub, only=only)

    agent.dialogue_teacher.teacher_forced_scores = counting
    try:
        partly = _loss(agent, batch)
    finally:
        agent.dialogue_teacher.teacher_forced_scores = forward
    assert seen == [2] and len(cache) == 4
    assert partly == pytest.approx(whole, rel=1e-5)


def test_kd_changes_the_loss_and_none_gate_is_plain_nll(teachers, tmp_path):
    agent, teacher = _student(teachers, tmp_path, '--gate', 'soft', '--kd-weight', 0.5)
    batch = _fixed_batch(agent, teacher)
    agent.model.train()
    nll = _loss(agent, batch, super(type(agent), agent).compute_loss)
    mixed = _loss(agent, batch)
    dial, gate, rec = agent.live_teacher_targets(batch)
    assert mixed != pytest.approx(nll)
    assert dial.shape[:2] == batch.label_vec.shape and rec.shape == (
        4,
        len(agent.catalog),
    )
    assert torch.allclose(rec.exp().sum(-1), torch.ones(4), atol=1e-4)


def test_rec_item_kd_adds_beta_times_the_item_conditional_kl(teachers, tmp_path):
    """--rec-item-kd-weight beta (issue #24): loss = ConKD loss + beta * mean item KD over real
    steps, where the item KD is KL(rec teacher || the student's softmax over the item logits).
    """
    agent, teacher = _student(
        teachers, tmp_path, '--gate', 'soft', '--rec-item-kd-weight', 0.5
    )
    batch = _fixed_batch(agent, teacher)
    agent.model.train()
    with_item = _loss(agent, batch)
    agent.opt['rec_item_kd_weight'] = 0.0
    without = _loss(agent, batch)
    mask = batch.label_vec.ne(agent.NULL_IDX)
    with torch.no_grad():
        scores = agent.model(*agent._model_input(batch), ys=batch.label_vec)[0]
        rec = agent.live_teacher_targets(batch)[2]
        items = scores[..., agent.item_token_ids]
        student = torch.log_softmax(items.float(), dim=-1)
        by_hand = (rec.exp().unsqueeze(1) * (rec.unsqueeze(1) - student)).nan_to_num()
        by_hand = (by_hand.sum(-1) * mask).sum() / mask.sum()
    assert by_hand > 0
    assert with_item == pytest.approx(without + 0.5 * by_hand.item(), rel=1e-4)
