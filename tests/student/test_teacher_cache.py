"""The teacher-output cache: exact when k covers the distributions, atomic, refuses stale files."""

import os

import pytest
import torch

from parlai_conkd import distill
from parlai_conkd.teacher_cache import (
    StaleCacheError,
    TeacherCache,
    cache_key,
    example_key,
    make_entry,
    stack_targets,
)

V, N = 12, 4
ITEMS = torch.tensor([8, 9, 10, 11])


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    dial = torch.log_softmax(torch.randn(2, 5, V, generator=g), -1)
    gate = distill.item_mass(dial, ITEMS)
    rec = torch.log_softmax(torch.randn(2, N, generator=g), -1)
    # a left-padded row
    mask = torch.tensor([[True] * 5, [False, False, True, True, True]])
    return dial, gate, rec, mask


def _loss(student, dial, gate, rec, mask, kind):
    terms = distill.conkd_terms(
        student, dial, rec, ITEMS, mask, gate=kind, dial_item_mass=gate
    )
    return terms.kd_sum() / mask.sum()


@pytest.mark.parametrize('kind', ['hard', 'soft', 'static'])
def test_cached_targets_give_the_live_loss_when_k_covers_vocab(kind):
    dial, gate, rec, mask = _batch()
    student = torch.randn(2, 5, V)
    entries = [
        make_entry(dial[b], gate[b], rec[b], mask[b], k=V, k_rec=N) for b in range(2)
    ]
    c_dial, c_gate, c_rec = stack_targets(entries, mask)
    live, cached = _loss(student, dial, gate, rec, mask, kind), _loss(
        student, c_dial, c_gate, c_rec, mask, kind
    )
    assert cached.item() == pytest.approx(live.item(), rel=1e-5)


@pytest.mark.parametrize('kind', ['hard', 'soft', 'static'])
def test_a_whole_catalog_rec_entry_gives_the_live_loss_up_to_float16(kind):
    """``k_rec = 0`` (the default, issue #26): the rec teacher's whole distribution, stored as
    float16 log-probabilities without indices, comes back dense [B, N] and renormalised; a
    context item's -inf (probability 0) survives."""
    dial, gate, rec, mask = _batch()
    rec[1, 2] = float('-inf')
    rec = rec.log_softmax(-1)
    student = torch.randn(2, 5, V)
    entries = [
        make_entry(dial[b], gate[b], rec[b], mask[b], k=V, k_rec=0) for b in range(2)
    ]
    assert entries[0].rec_values.dtype == torch.float16
    assert entries[0].rec_values.shape == (N,) and entries[0].rec_indices.numel() == 0
    c_dial, c_gate, c_rec = stack_targets(entries, mask)
    assert not isinstance(c_rec, distill.TopK) and c_rec.shape == (2, N)
    assert c_rec[1, 2] == float('-inf')
    torch.testing.assert_close(c_rec.exp().sum(-1), torch.ones(2))
    torch.testing.assert_close(c_rec.exp(), rec.exp(), atol=2e-3, rtol=1e-2)
    live, cached = _loss(student, dial, gate, rec, mask, kind), _loss(
        student, c_dial, c_gate, c_rec, mask, kind
    )
    assert cached.item() == pytest.approx(live.item(), rel=1e-3)


def test_a_top_k_rec_entry_sharpens_a_flat_teacher():
    """Why the whole catalog is the default: a flat teacher cut to its top k is renormalised onto
    those k items (here N/2 of them get twice their probability)."""
    dial, gate, _, mask = _batch()
    flat = torch.full((2, N), -torch.log(torch.tensor(float(N))))
    entries = [
        make_entry(dial[b], gate[b], flat[b], mask[b], k=V, k_rec=N // 2)
        for b in range(2)
    ]
    _, _, c_rec = stack_targets(entries, mask)
    kept = distill.from_topk(c_rec.values, c_rec.indices, N).exp()
    assert sorted(kept[0].tolist()) == pytest.approx([0.0, 0.0, 0.5, 0.5])


def test_topk_cache_is_an_approximation_within_stated_tolerance():
    """k = V/2 keeps most mass of a peaked teacher: the loss moves by well under 5%."""
    dial, gate, rec, mask = _batch()
    dial = torch.log_softmax(dial * 4, -1)  # peaked, like a trained teacher
    student = torch.randn(2, 5, V)
    entries = [
        make_entry(dial[b], gate[b], rec[b], mask[b], k=V // 2, k_rec=N)
        for b in range(2)
    ]
    c_dial, c_gate, c_rec = stack_targets(entries, mask)
    live, cached = _loss(student, dial, gate, rec, mask, 'soft'), _loss(
        student, c_dial, c_gate, c_rec, mask, 'soft'
    )
    assert cached.item() == pytest.approx(live.item(), rel=0.05)
    assert torch.equal(c_gate, gate * mask)  # the gate itself is stored exactly


def test_cache_round_trips_through_disk_atomically(tmp_path):
    dial, gate, rec, mask = _batch()
    key = cache_key(dialogue_teacher='a' * 64, rec_teacher='b' * 64, data='v1')
    path = tmp_path / 'teacher.cache'
    cache = TeacherCache.open(str(path), key)
    cache.put(
        example_key([1, 2], [3]), make_entry(dial[0], gate[0], rec[0], mask[0], 4, 2)
    )
    cache.save()
    assert path.is_file() and not [
        p for p in os.listdir(tmp_path) if p.startswith('.teacher-cache-')
    ]
    reopened = TeacherCache.open(str(path), key)
    entry = reopened.get(example_key([1, 2], [3]))
    assert entry is not None and torch.equal(
        entry.dial_indices, cache.entries[example_key([1, 2], [3])].dial_indices
    )
    assert reopened.get(example_key([1, 2], [4])) is None and (
        reopened.hits,
        reopened.misses,
    ) == (1, 1)


def test_stale_cache_is_refused_with_the_differing_parts(tmp_path):
    path = str(tmp_path / 'teacher.cache')
    dial, gate, rec, mask = _batch()
    cache = TeacherCache.open(path, cache_key(dialogue_teacher='old', data='v1'))
    cache.put('x', make_entry(dial[0], gate[0], rec[0], mask[0], 4, 2))
    cache.save()
    with pytest.raises(StaleCacheError, match="dialogue_teacher.*'old', 'new'"):
        TeacherCache.open(path, cache_key(dialogue_teacher='new', data='v1'))


def test_example_key_depends_on_context_and_target():
    assert example_key([1, 2], [3]) != example_key([1], [2, 3])
    assert example_key([1, 2], [3]) == example_key([1, 2], [3])


@pytest.mark.parametrize(
    'topk, rec_topk, named',
    [(0, 0, '--teacher-cache-topk 0'), (64, -1, '--teacher-cache-rec-topk -1')],
)
def test_cache_sizes_that_keep_nothing_are_refused_naming_the_option(
    topk, rec_topk, named
):
    from parlai_conkd.agents.conkd_student.conkd_student import check_cache_sizes
    from parlai_conkd.errors import OptionError

    with pytest.raises(OptionError, match=named):
        check_cache_sizes(
            {'teacher_cache_topk': topk, 'teacher_cache_rec_topk': rec_topk}
        )
    check_cache_sizes({'teacher_cache_topk': 64, 'teacher_cache_rec_topk': 0})
