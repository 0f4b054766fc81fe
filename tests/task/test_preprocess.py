"""Preprocessing rules, each written as the input it guards against (no ParlAI needed)."""

import json

import pytest

from parlai_conkd.items import UNKNOWN_ITEM_TOKEN, ItemCatalog
from parlai_conkd.redial.preprocess import (
    RECOMMENDER,
    SEEKER,
    PreprocessStats,
    RedialDataError,
    is_valid_fold,
    process_dialogue,
    process_file,
    split_train_valid,
    stats_warnings,
)
from parlai_conkd.tasks.redial_crs.examples import (
    SILENCE,
    dialogue_examples,
    rec_examples,
)
from tests.support import (
    ALIEN,
    GODFATHER,
    HEAT,
    MOVIES_CSV,
    UP,
    default_dialogues,
    dialogue,
)


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / 'movies_with_mentions.csv'
    path.write_text(MOVIES_CSV)
    return ItemCatalog.from_redial(str(path))


def process(raw, catalog):
    stats = PreprocessStats()
    return process_dialogue(raw, catalog, stats, 'test:1'), stats


def test_roles_come_from_worker_ids_not_from_who_speaks_first(catalog):
    # The respondent (recommender, worker 9) opens; alternation would call them the seeker.
    raw = dialogue(
        1,
        [(9, 'hello!'), (4, 'hi, a horror film?'), (9, 'sure, @111')],
        seeker=4,
        recommender=9,
    )
    episode, _ = process(raw, catalog)
    assert [t['role'] for t in episode['turns']] == [RECOMMENDER, SEEKER, RECOMMENDER]


def test_worker_ids_match_across_int_and_string_spellings(catalog):
    raw = dialogue(1, [('4', 'hi'), (9, 'hello')], seeker=4, recommender='9')
    episode, stats = process(raw, catalog)
    assert [t['role'] for t in episode['turns']] == [SEEKER, RECOMMENDER]
    assert stats.foreign_messages == 0


def test_consecutive_messages_of_one_speaker_are_merged(catalog):
    raw = dialogue(
        1,
        [(1, 'hi'), (1, 'any  thriller?'), (2, 'try @222'), (2, 'or @111'), (1, 'ok')],
    )
    episode, stats = process(raw, catalog)
    assert [(t['role'], t['text']) for t in episode['turns']] == [
        (SEEKER, 'hi any thriller?'),
        (RECOMMENDER, 'try __item_222__ or __item_111__'),
        (SEEKER, 'ok'),
    ]
    assert episode['turns'][1]['items'] == [HEAT, ALIEN]
    assert (stats.messages, stats.turns, stats.mentions) == (5, 3, 2)


def test_unknown_movie_id_becomes_the_unknown_token_and_is_counted(catalog):
    raw = dialogue(1, [(1, 'like @999 and @999'), (2, 'then @111')])
    episode, stats = process(raw, catalog)
    assert (
        episode['turns'][0]['text']
        == f'like {UNKNOWN_ITEM_TOKEN} and {UNKNOWN_ITEM_TOKEN}'
    )
    # unknown items never enter the index lists
    assert episode['turns'][0]['items'] == []
    assert stats.unknown_mentions == 2 and stats.unknown_movie_ids == {'999': 2}
    [warning] = stats_warnings(stats, 'train_data.jsonl')
    assert (
        warning.startswith('train_data.jsonl: 2 of 3 movie mentions (1 distinct ids)')
        and '@999 x2' in warning
    )


def test_empty_initiator_questions_list_and_missing_message_ids_are_accepted(catalog):
    raw = dialogue(1, [(1, 'hi'), (2, '@111')])
    raw['initiatorQuestions'] = []
    assert all('messageId' not in m and 'timeOffset' not in m for m in raw['messages'])
    episode, _ = process(raw, catalog)
    assert len(episode['turns']) == 2


def test_sender_outside_the_pair_is_dropped_and_counted(catalog):
    raw = dialogue(1, [(1, 'hi'), (7, 'spam'), (2, 'hello')])
    episode, stats = process(raw, catalog)
    assert [t['text'] for t in episode['turns']] == ['hi', 'hello']
    assert stats.foreign_messages == 1
    assert stats_warnings(stats, 'f.jsonl') == [
        'f.jsonl: dropped 1 messages whose sender is neither initiatorWorkerId nor respondentWorkerId'
    ]


def test_malformed_json_line_names_file_and_line(catalog):
    good = json.dumps(default_dialogues(1)[0])
    lines = [good + '\n', '{"conversationId": "2", "messages": [\n', good + '\n']
    with pytest.raises(RedialDataError, match=r'train_data\.jsonl:2: malformed JSON'):
        process_file(lines, 'train_data.jsonl', catalog)


@pytest.mark.parametrize(
    'bad,column,message',
    [
        # cut at the end: the column is one past the line's last character, not "column 1" of the next
        ('{"conversationId": "2", "messages": [', 38, 'Expecting value'),
        # hand-counted
        (
            '{"conversationId": "2" "messages": []}',
            24,
            "Expecting ',' delimiter",
        ),
        (
            '   {"conversationId": 2,}',
            25,
            'Expecting property name enclosed in double quotes',
        ),
    ],
)
def test_malformed_json_column_counts_from_the_start_of_its_line(
    catalog, bad, column, message
):
    good = json.dumps(default_dialogues(1)[0])
    lines = [good + '\n', good + '\n', bad + '\n', good + '\n']
    with pytest.raises(RedialDataError) as info:
        process_file(lines, 'train_data.jsonl', catalog)
    assert (
        str(info.value)
        == f'train_data.jsonl:3: malformed JSON ({message} at column {column})'
    )


def test_dialogue_without_required_key_names_file_line_and_key(catalog):
    raw = default_dialogues(1)[0]
    del raw['respondentWorkerId']
    with pytest.raises(
        RedialDataError, match=r"x\.jsonl:1: dialogue lacks \['respondentWorkerId'\]"
    ):
        process_file([json.dumps(raw)], 'x.jsonl', catalog)


def test_message_without_sender_names_dialogue_line(catalog):
    raw = default_dialogues(1)[0]
    del raw['messages'][1]['senderWorkerId']
    with pytest.raises(
        RedialDataError, match=r'x\.jsonl:1: message 1 lacks "senderWorkerId"'
    ):
        process_file([json.dumps(raw)], 'x.jsonl', catalog)


def test_validation_fold_is_deterministic_about_ten_percent_and_disjoint():
    ids = [str(i) for i in range(20000)]
    chosen = [i for i in ids if is_valid_fold(i)]
    assert 0.09 < len(chosen) / len(ids) < 0.11
    assert chosen == [i for i in ids if is_valid_fold(i)]
    episodes = [{'conversation_id': i, 'turns': []} for i in ids[:500]]
    train, valid = split_train_valid(episodes)
    assert {e['conversation_id'] for e in valid} == {
        i for i in ids[:500] if is_valid_fold(i)
    }
    assert len(train) + len(valid) == 500
    assert not {e['conversation_id'] for e in train} & {
        e['conversation_id'] for e in valid
    }


def test_dialogue_examples_fields_hand_computed(catalog):
    episode, _ = process(default_dialogues(1)[0], catalog)
    first, second = dialogue_examples(episode)
    assert first == {
        'text': 'hi, I liked __item_111__',
        'labels': ['try __item_222__ or __item_333__?'],
        'context_items': [ALIEN],
        'label_items': [HEAT, GODFATHER],
        'new_items': [HEAT, GODFATHER],
        'is_rec': True,
        'conversation_id': '100',
        'episode_done': False,
    }
    assert second['text'] == 'seen __item_222__, thanks'
    assert second['context_items'] == [ALIEN, HEAT, GODFATHER]
    assert (second['label_items'], second['new_items'], second['episode_done']) == (
        [UP],
        [UP],
        True,
    )


def test_repeated_item_is_not_new_and_chitchat_is_not_rec(catalog):
    raw = dialogue(
        1, [(1, 'I loved @111'), (2, '@111 is great, also @222'), (1, 'ok'), (2, 'bye')]
    )
    episode, _ = process(raw, catalog)
    first, second = dialogue_examples(episode)
    assert (first['label_items'], first['new_items'], first['is_rec']) == (
        [ALIEN, HEAT],
        [HEAT],
        True,
    )
    assert (second['label_items'], second['new_items'], second['is_rec']) == (
        [],
        [],
        False,
    )


def test_recommender_speaking_first_gets_silence_and_trailing_seeker_turn_is_dropped(
    catalog,
):
    raw = dialogue(1, [(2, 'hello, @444?'), (1, 'no'), (2, 'ok'), (1, 'bye')])
    episode, _ = process(raw, catalog)
    examples = dialogue_examples(episode)
    assert [e['text'] for e in examples] == [SILENCE, 'no']
    assert examples[0]['context_items'] == [] and examples[0]['new_items'] == [UP]


def test_rec_examples_one_per_new_item_with_whole_history(catalog):
    episode, _ = process(default_dialogues(1)[0], catalog)
    examples = rec_examples(episode, catalog.tokens())
    assert [(e['labels'], e['label_items'], e['new_items']) for e in examples] == [
        (['__item_222__'], [HEAT], [HEAT]),
        (['__item_333__'], [GODFATHER], [GODFATHER]),
        (['__item_444__'], [UP], [UP]),
    ]
    assert examples[0]['text'] == examples[1]['text'] == 'hi, I liked __item_111__'
    assert examples[2]['text'] == (
        'hi, I liked __item_111__\ntry __item_222__ or __item_333__?\nseen __item_222__, thanks'
    )
    assert examples[2]['context_items'] == [ALIEN, HEAT, GODFATHER]
    assert all(e['episode_done'] and e['is_rec'] for e in examples)


def test_dialogue_with_no_recommender_turn_gives_no_examples(catalog):
    episode, stats = process(dialogue(1, [(1, 'hello?'), (1, 'anyone?')]), catalog)
    assert (
        dialogue_examples(episode) == []
        and rec_examples(episode, catalog.tokens()) == []
    )
    assert stats.dialogues_without_recommender == 1


def test_optional_top_level_fields_may_be_absent(catalog):
    raw = dialogue(1, [(1, 'hi @111'), (2, 'try @222')])
    for key in ('movieMentions', 'respondentQuestions', 'initiatorQuestions'):
        del raw[key]
    episode, _ = process(raw, catalog)
    assert [t['items'] for t in episode['turns']] == [[ALIEN], [HEAT]]
