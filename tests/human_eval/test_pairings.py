"""ACUTE-Eval pairings: the fields ParlAI's runner reads, a write/read round trip, the checks."""

import json

import pytest

from parlai_conkd.human_eval.conversations import SEEKER_ID, readable, to_acute_dialogue
from parlai_conkd.human_eval.pairings import (
    BROKEN_REPLY,
    ONBOARDING_BAD,
    ONBOARDING_GOOD,
    PairingError,
    build_pairings,
    onboarding_from_gold,
    read_pairings,
    validate,
    write_pairings,
)
from tests.support import CONTEXTS, conversations_log


def test_round_trip_keeps_every_acute_field(pairs, tmp_path):
    path = tmp_path / 'out' / 'pairings.jsonl'
    write_pairings(pairs, str(path))
    lines = path.read_text().splitlines()
    # one onboarding pair + one per shared context
    assert len(lines) == 1 + len(CONTEXTS)
    assert read_pairings(str(path)) == pairs
    for raw in lines:
        pair = json.loads(raw)
        assert set(pair) >= {
            'is_onboarding',
            'speakers_to_eval',
            'correct_answer',
            'tags',
            'dialogue_dicts',
        }
        for d in pair['dialogue_dicts']:
            assert set(d) >= {
                'speakers',
                'id',
                'evaluator_id_hashed',
                'oz_id_hashed',
                'dialogue',
            }
            assert all(set(turn) >= {'id', 'text'} for turn in d['dialogue'])
        # ACUTE's runner: the evaluated speakers appear one per dialogue, in speakers_to_eval order
        assert [
            s
            for d in pair['dialogue_dicts']
            for s in d['speakers']
            if s in pair['speakers_to_eval']
        ] == pair['speakers_to_eval']


def test_model_pairs_compare_the_same_context(pairs):
    model_pairs = [p for p in pairs if not p['is_onboarding']]
    assert [p['speakers_to_eval'] for p in model_pairs] == [
        ['model_a', 'model_b']
    ] * len(CONTEXTS)
    assert [p['tags'] for p in model_pairs][1] == [
        'redial_crs:test',
        'context:1',
        'model_a__vs__model_b',
    ]
    first = model_pairs[0]
    a, b = first['dialogue_dicts']
    assert (a['id'], b['id']) == ('model_a:0', 'model_b:0')
    assert (
        a['evaluator_id_hashed'] == b['evaluator_id_hashed']
        and a['oz_id_hashed'] is None
    )

    def seeker(d):
        return [t['text'] for t in d['dialogue'] if t['id'] == SEEKER_ID]

    assert seeker(a) == seeker(b) == ['Hi! I want a sci-fi movie', 'Yes, loved it']
    # flag tokens dropped, normalize_reply applied, item tokens shown as titles
    assert [t['text'] for t in a['dialogue'] if t['id'] == 'model_a'] == [
        'You would like The Matrix (1999) (0.0)',
        'You would like The Matrix (1999) (0.1)',
    ]
    assert len(set(first['dialogue_ids'])) == 2


def test_onboarding_pair_has_gold_against_broken_replies(pairs, catalog):
    (onboarding,) = [p for p in pairs if p['is_onboarding']]
    assert onboarding['correct_answer'] == ONBOARDING_GOOD
    assert set(onboarding['speakers_to_eval']) == {ONBOARDING_GOOD, ONBOARDING_BAD}
    by_speaker = {d['speakers'][0]: d for d in onboarding['dialogue_dicts']}
    bad = [
        t['text']
        for t in by_speaker[ONBOARDING_BAD]['dialogue']
        if t['id'] == ONBOARDING_BAD
    ]
    good = [
        t['text']
        for t in by_speaker[ONBOARDING_GOOD]['dialogue']
        if t['id'] == ONBOARDING_GOOD
    ]
    assert set(bad) == {readable(BROKEN_REPLY, None)}
    # the good side is the ReDial recommender's own replies (eval_labels) of one context
    gold_replies = {
        tuple(readable(gold, catalog) for _, gold in turns) for turns in CONTEXTS
    }
    assert tuple(good) in gold_replies


def test_reads_parlai_onboarding_json_shape(tmp_path):
    # the shape of ParlAI's acute_eval/task_config/onboarding.json: one indented JSON object
    onboarding = {
        'is_onboarding': True,
        'speakers_to_eval': ['model_1', 'model_2'],
        'correct_answer': 'model_2',
        'tags': ['onboarding0000'],
        'dialogue_dicts': [
            {
                'speakers': ['model_1', 'human_evaluator'],
                'dialogue': [{'id': 'model_1', 'text': 'x'}],
            },
            {
                'speakers': ['model_2', 'human_evaluator'],
                'dialogue': [{'id': 'model_2', 'text': 'y'}],
            },
        ],
    }
    path = tmp_path / 'onboarding.json'
    path.write_text(json.dumps(onboarding, indent=4))
    assert read_pairings(str(path)) == [onboarding]


@pytest.mark.parametrize(
    'mutate, message',
    [
        (lambda p: p.pop('dialogue_dicts'), 'missing "dialogue_dicts"'),
        (
            lambda p: p.update(speakers_to_eval=['model_a', 'model_a']),
            'two different names',
        ),
        (
            lambda p: p.update(speakers_to_eval=['model_b', 'model_a']),
            "expected ['model_b', 'model_a']",
        ),
        (
            lambda p: p['dialogue_dicts'][1].update(dialogue=[]),
            'dialogue_dicts[1] has no dialogue turns',
        ),
        (
            lambda p: p['dialogue_dicts'][0]['dialogue'][0].pop('text'),
            'dialogue[0] needs "id" and "text"',
        ),
        (
            lambda p: p.update(is_onboarding=True),
            'onboarding pair needs correct_answer',
        ),
    ],
)
def test_invalid_pairings_are_rejected_with_file_and_line(
    pairs, tmp_path, mutate, message
):
    broken = json.loads(json.dumps(pairs[1]))
    mutate(broken)
    path = tmp_path / 'bad.jsonl'
    path.write_text(json.dumps(pairs[0]) + '\n' + json.dumps(broken) + '\n')
    with pytest.raises(
        PairingError, match=rf'bad\.jsonl:2: .*{__import__("re").escape(message)}'
    ):
        read_pairings(str(path))


def test_logs_of_different_contexts_cannot_be_paired(tmp_path, catalog):
    a = conversations_log(tmp_path / 'a.jsonl', 'A', lambda c, t: 'ok')
    b = conversations_log(tmp_path / 'b.jsonl', 'B', lambda c, t: 'ok')
    lines = b.read_text().splitlines()
    b.write_text('\n'.join([lines[1], lines[0], *lines[2:]]) + '\n')
    with pytest.raises(PairingError, match='episode 0 replays other seeker turns'):
        build_pairings({'a': str(a), 'b': str(b)}, catalog)


def test_log_without_generated_text_is_explained(tmp_path):
    path = conversations_log(tmp_path / 'a.jsonl', 'A', lambda c, t: 'ok')
    episode = json.loads(path.read_text().splitlines()[0])
    del episode['dialog'][0][1]['text']
    with pytest.raises(ValueError, match='skip-generation'):
        to_acute_dialogue(episode, 'a', source='a.jsonl')


def test_pairs_per_matchup_samples_contexts(logs, catalog):
    pairs = build_pairings(logs, catalog, pairs_per_matchup=2, seed=5)
    assert len(pairs) == 2 and len({p['tags'][1] for p in pairs}) == 2
    assert pairs == build_pairings(logs, catalog, pairs_per_matchup=2, seed=5)


def test_three_models_give_every_matchup(logs, catalog, tmp_path):
    logs = dict(
        logs,
        model_c=str(conversations_log(tmp_path / 'c.jsonl', 'C', lambda c, t: 'hm')),
    )
    matchups = {tuple(p['speakers_to_eval']) for p in build_pairings(logs, catalog)}
    assert matchups == {
        ('model_a', 'model_b'),
        ('model_a', 'model_c'),
        ('model_b', 'model_c'),
    }


def test_onboarding_needs_gold_replies(tmp_path):
    path = conversations_log(tmp_path / 'a.jsonl', 'A', lambda c, t: 'ok')
    stripped = [json.loads(line) for line in path.read_text().splitlines()]
    for episode in stripped:
        episode['dialog'][0][0].pop('eval_labels')
    path.write_text('\n'.join(json.dumps(e) for e in stripped) + '\n')
    with pytest.raises(PairingError, match='0 episodes with gold replies'):
        onboarding_from_gold(str(path), 1)


def test_validate_accepts_what_build_makes(pairs):
    for pair in pairs:
        assert validate(pair) is pair


def _episode(seeker_model_turns):
    return {
        'dialog': [
            [{'id': 'redial_crs', 'text': s}, {'id': 'M', 'text': m}]
            for s, m in seeker_model_turns
        ]
    }


def test_internal_tokens_never_reach_raters(catalog):
    """ParlAI PR #3344: `seeker: __silence__` opened every dialogue the recommender starts."""
    episode = _episode(
        [
            ('__SILENCE__', '[GEN] hi ! what kind of movies do you like ?'),
            (
                'i liked __item_999__ and __item_111__',
                '[REC] try __item_222__ , or __unk__ __item_unk__',
            ),
            ('__silence__\nok thanks __null__', '[GEN] __start__ bye __end__'),
        ]
    )
    dialogue = to_acute_dialogue(
        episode, 'model_a', catalog, source='log.jsonl episode 0'
    )['dialogue']
    assert dialogue == [
        {'id': 'model_a', 'text': 'Hi! What kind of movies do you like?'},
        {'id': SEEKER_ID, 'text': 'I liked an unknown movie and The Matrix (1999)'},
        {'id': 'model_a', 'text': 'Try Frozen (2013), or an unknown movie'},
        {'id': SEEKER_ID, 'text': 'Ok thanks'},
        {'id': 'model_a', 'text': 'Bye'},
    ]
    assert (
        readable('__SILENCE__', catalog) == '' and readable('[REC] __unk__', None) == ''
    )


def test_item_tokens_without_a_catalog_are_refused_not_shown(tmp_path):
    episode = _episode([('any thriller?', '[REC] try __item_111__')])
    with pytest.raises(
        ValueError,
        match=r'log\.jsonl episode 0: turn 0 holds the item token __item_111__ '
        r'and no item catalog .* pass --catalog',
    ):
        to_acute_dialogue(episode, 'a', None, source='log.jsonl episode 0')


@pytest.mark.parametrize(
    'text', ['__silence__', 'seen __item_111__', '[REC] try it', 'x __SILENCE__ y']
)
def test_pairings_showing_internal_tokens_are_rejected(pairs, tmp_path, text):
    broken = json.loads(json.dumps(pairs[1]))
    broken['dialogue_dicts'][0]['dialogue'][0]['text'] = text
    path = tmp_path / 'old.jsonl'
    path.write_text(json.dumps(pairs[0]) + '\n' + json.dumps(broken) + '\n')
    with pytest.raises(
        PairingError,
        match=r'old\.jsonl:2: dialogue_dicts\[0\]\.dialogue\[0\] would show raters '
        r'the internal token .*; rebuild the pairings',
    ):
        read_pairings(str(path))


def test_one_log_under_two_model_names_is_refused(logs, catalog, tmp_path):
    """The same log given twice would pair a model with itself (every comparison a coin flip)."""
    with pytest.raises(
        PairingError,
        match=r'model_a\.jsonl \(model_a\) and .*model_a\.jsonl \(copy\) are the same file',
    ):
        build_pairings({'model_a': logs['model_a'], 'copy': logs['model_a']}, catalog)
    copy = tmp_path / 'copy.jsonl'
    copy.write_text(open(logs['model_a']).read())
    with pytest.raises(
        PairingError,
        match=r'\(copy\) hold the same replies in all 4 episodes: one model under two names',
    ):
        build_pairings(
            {'model_a': logs['model_a'], 'model_b': logs['model_b'], 'copy': str(copy)},
            catalog,
        )
    # logs that differ in one reply are different models
    lines = copy.read_text().splitlines()
    episode = json.loads(lines[3])
    episode['dialog'][1][1]['text'] = 'something else'
    copy.write_text('\n'.join(lines[:3] + [json.dumps(episode)]) + '\n')
    assert (
        len(build_pairings({'model_a': logs['model_a'], 'copy': str(copy)}, catalog))
        == 4
    )


def test_a_torn_line_names_file_line_and_column(pairs, tmp_path):
    path = tmp_path / 'torn.jsonl'
    # '{"is_onboarding": false': cut after a value
    torn = json.dumps(pairs[1]).split(', "speakers_to_eval"')[0]
    path.write_text(json.dumps(pairs[0]) + '\n' + torn + '\n')
    with pytest.raises(
        PairingError,
        match=r"torn\.jsonl:2: invalid JSON \(Expecting ',' delimiter at column 24\)$",
    ):
        read_pairings(str(path))
