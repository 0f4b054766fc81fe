"""Item-aware decoding (parlai_conkd/decoding.py + the tree-search glue) on hand-made log-probs.

Vocabulary of the search tests: 0 pad, 1 start, 2 end, 3 [REC], 4 [GEN], 5 'hi', 6 'watch',
7..9 items 0..2 (a contiguous block, as both backbones lay them out).
"""

import pytest
import torch
from parlai.core.torch_generator_agent import (
    BeamSearch,
    GreedySearch,
    NucleusSampling,
    TopKSampling,
)

from parlai_conkd.agents.conkd_dialogue_teacher.item_search import (
    BatchedItemDecision,
    ItemDecodingSpec,
    item_aware,
)
from parlai_conkd.decoding import (
    context_item_index,
    exclude_,
    excluded_index,
    excluded_items,
    excluded_mask,
    flag_choice,
    item_class_log_probs,
    row_max,
    sample_within,
)
from parlai_conkd.item_vocab import ItemVocab

PAD, BOS, EOS, REC, GEN, HI, WATCH = range(7)
ITEMS = ItemVocab.of(torch.tensor([7, 8, 9]), 10)
NEG = float('-inf')


def log_probs(*rows):
    """Rows of probabilities (unnormalised ones are normalised) -> log-probabilities."""
    t = torch.tensor(rows, dtype=torch.float)
    return (t / t.sum(dim=-1, keepdim=True)).log()


def row(**probs):
    """A 10-way distribution from named probabilities; unnamed tokens get 0."""
    names = {
        'eos': EOS,
        'rec': REC,
        'gen': GEN,
        'hi': HI,
        'watch': WATCH,
        'i0': 7,
        'i1': 8,
        'i2': 9,
    }
    out = [0.0] * 10
    for name, p in probs.items():
        out[names[name]] = p
    return out


# ------------------------------------------------------------------ the pure math
def test_item_vocab_block_and_gather_agree():
    block = ItemVocab.of(torch.tensor([7, 8, 9]), 10)
    scattered = ItemVocab.of(torch.tensor([9, 5, 7]), 10)
    assert block.block == slice(7, 10) and scattered.block is None
    x = torch.arange(20.0).view(2, 10)
    assert block.take(x).tolist() == [[7, 8, 9], [17, 18, 19]]
    assert scattered.take(x).tolist() == [[9, 5, 7], [19, 15, 17]]
    assert block.index_of(torch.tensor([[7, 3, 9]])).tolist() == [[0, -1, 2]]
    assert scattered.index_of(torch.tensor([[7, 5, 3]])).tolist() == [[2, 1, -1]]


def test_class_wins_when_its_total_beats_the_best_word():
    # best word 0.3; items 0.2 + 0.2 + 0.1 = 0.5 > 0.3 although each item < 0.3
    lp = log_probs(row(hi=0.3, watch=0.1, eos=0.1, i0=0.2, i1=0.2, i2=0.1))
    out = item_class_log_probs(lp, ITEMS)
    # the best item (tie 0.2/0.2: the lower catalog index)
    assert out.argmax().item() == 7
    assert out[0, 7].exp().item() == pytest.approx(0.5)
    assert out[0, 8].item() == NEG and out[0, 9].item() == NEG
    # words keep their probabilities: p' is a distribution again
    assert out.exp().sum().item() == pytest.approx(1.0)
    # plain (token) greedy would have said 'hi'
    assert lp.argmax().item() == HI


def test_word_wins_when_it_beats_the_class_and_on_an_exact_tie():
    lp = log_probs(row(hi=0.6, i0=0.2, i1=0.2))
    assert item_class_log_probs(lp, ITEMS).argmax().item() == HI
    tie = log_probs(row(hi=0.5, i0=0.25, i1=0.25))
    assert tie[0, HI].item() == pytest.approx(torch.logsumexp(tie[0, 7:], 0).item())
    assert item_class_log_probs(tie, ITEMS).argmax().item() == HI


def test_excluded_items_are_skipped_but_their_mass_still_counts():
    lp = log_probs(row(hi=0.3, i0=0.4, i1=0.2, i2=0.1))
    out = item_class_log_probs(lp, ITEMS, excluded=torch.tensor([[True, False, False]]))
    assert out.argmax().item() == 8
    assert out[0, 8].exp().item() == pytest.approx(0.7)
    none_left = item_class_log_probs(
        lp, ITEMS, excluded=torch.tensor([[True, True, True]])
    )
    assert none_left.argmax().item() == HI
    assert torch.isinf(ITEMS.take(none_left)).all()


def test_allow_items_false_drops_the_class():
    lp = log_probs(row(hi=0.3, i0=0.7), row(hi=0.3, i0=0.7))
    out = item_class_log_probs(lp, ITEMS, allow_items=torch.tensor([True, False]))
    assert out.argmax(dim=-1).tolist() == [7, HI]


def test_an_external_ranking_chooses_which_item():
    lp = log_probs(row(hi=0.3, i0=0.5, i1=0.1, i2=0.1))
    out = item_class_log_probs(
        lp,
        ITEMS,
        ranking=torch.tensor([[0.0, 1.0, 5.0]]),
        excluded=torch.tensor([[False, False, True]]),
    )
    # i2 ranked best but excluded -> i1, carrying the class mass
    assert out.argmax().item() == 8
    assert out[0, 8].exp().item() == pytest.approx(0.7)


@pytest.mark.parametrize('layout', ['block', 'scattered'])
@pytest.mark.parametrize('ranked', [False, True])
def test_in_place_collapse_equals_the_copy(layout, ranked):
    # the batched search collapses its scores in place (issue #26): the same values, bit for bit
    items = ITEMS if layout == 'block' else ItemVocab.of(torch.tensor([9, 5, 7]), 10)
    torch.manual_seed(0)
    lp = torch.randn(6, 10).log_softmax(-1)
    lp[0, 7:] = NEG  # a row whose every item is impossible
    excluded = torch.rand(6, 3) < 0.4
    excluded[1] = True  # a row with nothing allowed
    allow = torch.tensor([True, True, False, True, True, True])
    ranking = torch.randn(6, 3) if ranked else None
    copy = item_class_log_probs(lp, items, excluded, allow, ranking)
    inplace = lp.clone()
    out = item_class_log_probs(inplace, items, excluded, allow, ranking, inplace=True)
    assert out is inplace
    assert torch.equal(out, copy)
    if layout == 'block' and not ranked:
        # the excluded items as a list per row (the batched search's form)
        index = torch.where(excluded, torch.arange(3), torch.tensor(-1))
        sparse = item_class_log_probs(
            lp.clone(), items, None, allow, inplace=True, excluded_index=index
        )
        assert torch.equal(sparse, copy)


def test_the_sparse_exclusions_are_the_dense_ones():
    # the batched search lists excluded items per row instead of an [H, N] mask (issue #26)
    contexts = [[2], [], [0, 1]]
    context = context_item_index(contexts, rows=4, repeat=2)
    assert context.tolist() == [[2, -1], [2, -1], [-1, -1], [-1, -1]] + [
        [0, 1],
        [0, 1],
        [-1, -1],  # a fourth dialogue without a list: nothing
        [-1, -1],
    ]
    hyps = torch.tensor([[BOS, 8], [BOS, HI]] * 4)
    for policy, ctx in (('reply', None), ('dialogue', context)):
        index = excluded_index(ITEMS, hyps, ctx)
        dense = torch.cat(
            [
                excluded_items(
                    ITEMS, hyps[r : r + 1], (contexts + [[]])[r // 2], policy
                )
                for r in range(8)
            ]
        )
        assert torch.equal(excluded_mask(index, 3), dense)
        lp = torch.randn(8, 10).log_softmax(-1)
        assert torch.equal(
            exclude_(ITEMS.take(lp.clone()), index),
            ITEMS.take(lp).masked_fill(dense, NEG),
        )


@pytest.mark.parametrize('width', [7, 2048 + 5, 6924])
def test_row_max_is_max_with_its_first_index_rule(width):
    torch.manual_seed(0)
    values = torch.randn(9, width).log_softmax(-1)
    values[1] = NEG  # nothing allowed
    values[2, width // 3] = values[2, width - 1] = 5.0  # a tie: the first wins
    values[3, :] = 0.0  # all tied
    values[4, -1] = 7.0  # the last entry (the padded chunk when width is not divided)
    view = torch.cat([torch.zeros(9, 3), values], dim=1)[
        :, 3:
    ]  # a strided view, as in a search
    for x in (values, view):
        expected = x.max(dim=-1)
        got = row_max(x)
        assert torch.equal(got[0], expected.values)
        assert torch.equal(got[1], expected.indices)


def test_excluded_items_policies():
    hyps = torch.tensor([[BOS, REC, 8, WATCH], [BOS, GEN, HI, HI]])
    assert excluded_items(ITEMS, hyps, [2], 'none') is None
    assert excluded_items(ITEMS, hyps, [2], 'reply').tolist() == [
        [False, True, False],
        [False] * 3,
    ]
    assert excluded_items(ITEMS, hyps, [2], 'dialogue').tolist() == [
        [False, True, True],
        [False, False, True],
    ]
    with pytest.raises(ValueError, match='no_repeat'):
        excluded_items(ITEMS, hyps, [], 'never')


def test_flag_choice_uses_the_threshold_not_the_argmax():
    lp = log_probs(row(rec=0.3, gen=0.6, hi=0.1), row(rec=0.1, gen=0.8, hi=0.1))
    chosen = flag_choice(lp, REC, GEN, threshold=0.25).argmax(dim=-1)
    # P(REC)/(P(REC)+P(GEN)) = 1/3 > 0.25 -> [REC]; 1/9 < 0.25 -> [GEN]
    assert chosen.tolist() == [REC, GEN]
    assert flag_choice(lp, REC, GEN, threshold=0.5).argmax(dim=-1).tolist() == [
        GEN,
        GEN,
    ]


def test_sample_within_keeps_to_the_top_k_allowed_items():
    torch.manual_seed(0)
    lp = log_probs(*[row(hi=0.1, i0=0.5, i1=0.3, i2=0.1)] * 200)
    drawn = sample_within(lp, ITEMS, torch.arange(200), None, top_k=2)
    assert set(drawn.tolist()) == {7, 8}
    excluded = torch.tensor([[True, False, False]]).expand(200, 3)
    drawn = sample_within(lp, ITEMS, torch.arange(200), excluded, top_k=1)
    assert set(drawn.tolist()) == {8}
    nucleus = sample_within(lp, ITEMS, torch.arange(200), None, top_p=0.5)
    # i0 alone holds 0.5/0.9 of the item mass >= 0.5
    assert set(nucleus.tolist()) == {7}


# ------------------------------------------------------------------ ParlAI searches
def make(
    search_class, mode='class', no_repeat='dialogue', context=(), beam_size=1, **kwargs
):
    search = search_class(
        *kwargs.pop('args', ()),
        beam_size,
        padding_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        min_length=0,
        device='cpu',
        **kwargs,
    )
    spec = ItemDecodingSpec(
        items=ITEMS,
        mode=mode,
        no_repeat=no_repeat,
        rec_id=REC,
        gen_id=GEN,
        context_items=[list(context)],
    )
    search = item_aware(search, spec)
    return search.set_batch_context(torch.zeros(1, 0, dtype=torch.long), 0, False)


def decode(search, steps):
    for t, lp in enumerate(steps):
        if search.is_done():
            break
        search.advance(lp.expand(search.beam_size, -1).clone(), t)
    return search


def best_tokens(search):
    return search.get_rescored_finished()[0][0].tolist()


STEPS = [
    log_probs(row(rec=0.9, gen=0.1)),
    log_probs(row(watch=0.9, hi=0.1)),
    # the class (0.6) beats 'hi'
    log_probs(row(hi=0.3, eos=0.1, i0=0.2, i1=0.2, i2=0.2)),
    log_probs(row(eos=0.9, hi=0.1)),
]


def test_greedy_token_vs_class():
    token = decode(make(GreedySearch, mode='token', no_repeat='none'), STEPS)
    assert best_tokens(token) == [BOS, REC, WATCH, HI, EOS]
    klass = decode(make(GreedySearch), STEPS)
    assert best_tokens(klass) == [BOS, REC, WATCH, 7, EOS]


def test_greedy_class_skips_a_context_item_and_ngram_blocking_spares_items():
    # context blocking of unigrams would block item 0 (it is in the context token ids); items are
    # exempt from n-gram blocking, so only --item-no-repeat decides
    search = make(GreedySearch, no_repeat='none', context_block_ngram=1)
    search.set_batch_context(torch.tensor([[7, HI]]), 0, False)
    assert best_tokens(decode(search, STEPS))[3] == 7
    search = make(
        GreedySearch, no_repeat='dialogue', context=[0], context_block_ngram=1
    )
    search.set_batch_context(torch.tensor([[7, HI]]), 0, False)
    assert best_tokens(decode(search, STEPS))[3] == 8


def test_beam_scores_an_item_step_by_the_class_mass():
    search = decode(make(BeamSearch, beam_size=2), STEPS)
    finished = search.get_rescored_finished()
    tokens = [hyp.tolist() for hyp, _score, _ in finished]
    assert tokens[0] == [BOS, REC, WATCH, 7, EOS]
    # an item is named at most once per hypothesis, and never twice across the class collapse
    assert all(sum(t in (7, 8, 9) for t in hyp) <= 1 for hyp in tokens)


def test_a_finished_beam_is_kept_while_others_continue():
    steps = [
        log_probs(row(rec=0.9, gen=0.1)),
        log_probs(row(eos=0.5, watch=0.4, hi=0.1)),  # one hypothesis ends here
        log_probs(row(hi=0.1, i0=0.5, i1=0.4)),
        log_probs(row(eos=0.9, hi=0.1)),
    ]
    search = decode(make(BeamSearch, beam_size=2), steps)
    tokens = [hyp.tolist() for hyp, _score, _ in search.get_rescored_finished()]
    assert [BOS, REC, EOS] in tokens
    assert any(7 in hyp for hyp in tokens)


@pytest.mark.parametrize(
    'search_class, arg', [(TopKSampling, 3), (NucleusSampling, 0.95)]
)
def test_sampling_draws_the_class_then_an_item_within_it(search_class, arg):
    torch.manual_seed(0)
    named = set()
    for _ in range(60):
        search = make(search_class, args=(arg,))
        tokens = best_tokens(
            decode(
                search,
                [
                    log_probs(row(rec=1.0)),
                    log_probs(row(hi=0.02, i0=0.6, i1=0.3, i2=0.08)),
                    log_probs(row(eos=1.0)),
                ],
            )
        )
        assert tokens[2] in (HI, 7, 8, 9)
        named.add(tokens[2])
    # the class (0.98) is drawn almost always; within it the item varies
    assert {7, 8} <= named


def test_inactive_spec_leaves_parlai_search_untouched():
    search = GreedySearch(
        1, padding_token=PAD, bos_token=BOS, eos_token=EOS, device='cpu'
    )
    spec = ItemDecodingSpec(
        items=ITEMS, mode='token', no_repeat='none', rec_id=REC, gen_id=GEN
    )
    assert type(item_aware(search, spec)) is GreedySearch


# ------------------------------------------------------------------ the batch's decision
def _decode_batch(search_class, args, beam_size, items, batched, **spec_args):
    """ParlAI's ``_generate`` loop over hand-made scores: 3 examples, a 12-token vocabulary with 5
    items; ``batched``: the item decision once per step (BatchedItemDecision), else per search.
    """
    torch.manual_seed(1)
    vocab, steps, rows = 12, 6, 3
    scores = [
        (torch.randn(rows, beam_size, vocab) * 2).log_softmax(-1) for _ in range(steps)
    ]
    spec = ItemDecodingSpec(
        items=items,
        rec_id=REC,
        gen_id=GEN,
        context_items=[[1], [], [0, 4]],
        **spec_args,
    )
    batch = BatchedItemDecision(spec, beam_size) if batched else None
    searches = []
    for row_index in range(rows):
        search = search_class(
            *args,
            beam_size,
            padding_token=PAD,
            bos_token=BOS,
            eos_token=EOS,
            min_length=0,
        )
        search = item_aware(search, spec, batch)
        searches.append(
            search.set_batch_context(
                torch.zeros(rows, 0, dtype=torch.long), row_index, False
            )
        )
    torch.manual_seed(2)
    for step, score in enumerate(scores):
        if all(s.is_done() for s in searches):
            break
        score = score.clone()
        if batch is not None:
            batch.apply(score)
        for row_index, search in enumerate(searches):
            if not search.is_done():
                search.advance(score[row_index], step)
    return [
        [(t.tolist(), float(s)) for t, s, _ in search.get_rescored_finished()]
        for search in searches
    ]


@pytest.mark.parametrize('layout', ['block', 'scattered'])
@pytest.mark.parametrize(
    'search_class, args, beam_size',
    [(GreedySearch, (), 1), (BeamSearch, (), 3), (TopKSampling, (3,), 2)],
)
@pytest.mark.parametrize(
    'spec_args',
    [
        {'mode': 'class', 'no_repeat': 'dialogue'},
        {
            'mode': 'class',
            'no_repeat': 'reply',
            'rec_threshold': 0.4,
            'flag_gate': True,
        },
        {'mode': 'token', 'no_repeat': 'dialogue'},
    ],
    ids=['class', 'class-flag', 'token'],
)
def test_the_batch_decides_as_each_search_alone(
    layout, search_class, args, beam_size, spec_args
):
    # a fast twin of tests/dialogue/test_batched_item_decoding.py (a trained model, every search),
    # covering the item layout without a contiguous block too
    ids = [7, 8, 9, 10, 11] if layout == 'block' else [11, 7, 10, 5, 8]
    items = ItemVocab.of(torch.tensor(ids), 12)
    old = _decode_batch(search_class, args, beam_size, items, False, **spec_args)
    new = _decode_batch(search_class, args, beam_size, items, True, **spec_args)
    assert new == old
    named = {t for nbest in new for tokens, _ in nbest for t in tokens}
    if 'flag_gate' not in spec_args:  # (random flags: [GEN] replies may name none)
        assert named & set(ids)  # items were named: the decision was exercised
