"""Malformed conversation logs (issue #22): every one is refused naming its file, line and
conversation id, or normalised by the rules in ``conversations``' module doc; none crashes the
pairing tool, and no pairing shows a speaker twice in a row (ACUTE-Eval assumes alternating turns).
"""

import json
import os
import re
import subprocess
import sys

import pytest

from parlai_conkd.human_eval.conversations import (
    SEEKER_ID,
    LogError,
    read_episodes,
    to_acute_dialogue,
)
from parlai_conkd.human_eval.pairings import (
    PairingError,
    build_pairings,
    onboarding_from_gold,
    read_pairings,
    write_pairings,
)
from tests.support import (
    CONTEXTS,
    conversation_id,
    conversations_log,
    shared_redial_or_skip,
)

MODEL = 'TransformerGenerator'


def seeker(text, cid, **extra):
    return dict(
        {
            'id': 'redial_crs',
            'text': text,
            'eval_labels': ['gold'],
            'conversation_id': cid,
        },
        **extra,
    )


def reply(text, model=MODEL):
    return {'id': model, 'text': text, 'episode_done': False}


def episode(cid, turns=(('hi', 'hello'), ('a comedy?', 'sure'))):
    return {
        'dialog': [[seeker(s, cid), reply(m)] for s, m in turns],
        'context': [],
        'metadata_path': None,
    }


def write_log(path, lines):
    """A log whose lines are ``lines`` (dicts are JSON-encoded, str/bytes written as they are)."""
    with open(path, 'wb') as f:
        for line in lines:
            if isinstance(line, dict) or isinstance(line, list):
                line = json.dumps(line)
            f.write(line if isinstance(line, bytes) else line.encode('utf-8'))
            f.write(b'\n')
    return str(path)


def broken(mutate, cid='20002'):
    def make():
        e = episode(cid)
        mutate(e)
        return e

    return make


def _set(path, value):
    """A mutation that sets ``episode[path[0]][path[1]]... = value``."""

    def mutate(e):
        target = e
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _del(path):
    def mutate(e):
        target = e
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def _both(*mutations):
    def mutate(e):
        for m in mutations:
            m(e)

    return mutate


def _line2(make):
    """Line 1 a good episode (conversation 20001), line 2 what ``make`` returns."""
    return lambda: [episode('20001'), make()]


#: (case id, log lines, the line and conversation id the error names, what it says)
REFUSED = [
    (
        'model-turn-plain-string',
        _line2(broken(_set(['dialog', 1, 1], 'sure'))),
        2,
        'conversation 20002',
        'turn 1: the model act is a plain string ("sure"), not a ParlAI act',
    ),
    (
        'seeker-turn-plain-string',
        _line2(broken(_set(['dialog', 1, 0], 'a comedy?'))),
        2,
        'conversation 20002',
        'turn 1: the seeker act is a plain string ("a comedy?"), not a ParlAI act',
    ),
    (
        'consecutive-model-turns-model-in-seeker-slot',
        _line2(broken(_set(['dialog', 1, 0], reply('and also')))),
        2,
        'conversation 20002',
        "turn 1: the seeker act is by the model 'TransformerGenerator' (as the reply of turn "
        '0): two consecutive model turns',
    ),
    (
        'consecutive-model-turns-both-acts-by-the-model',
        _line2(
            broken(_set(['dialog', 0, 0], dict(reply('hi'), conversation_id='20002')))
        ),
        2,
        'conversation 20002',
        "turn 0: the seeker act is by the model 'TransformerGenerator' (as its own reply): "
        'two consecutive model turns',
    ),
    (
        'model-reply-without-seeker-act',
        _line2(broken(lambda e: e['dialog'].append([reply('anything else?')]))),
        2,
        'conversation 20002',
        'turn 2 has 1 acts, expected 2 ([seeker act, model act])',
    ),
    (
        'three-acts-in-a-turn',
        _line2(broken(lambda e: e['dialog'][0].append(reply('again')))),
        2,
        'conversation 20002',
        'turn 0 has 3 acts, expected 2',
    ),
    (
        'turn-not-a-pair',
        _line2(broken(lambda e: e['dialog'].append(seeker('bye', '20002')))),
        2,
        'conversation 20002',
        'turn 2 is an object (',
    ),
    (
        'model-act-without-text',
        _line2(broken(_del(['dialog', 1, 1, 'text']))),
        2,
        'conversation 20002',
        'turn 1: the model act has no "text" (was the log made with --skip-generation true?)',
    ),
    (
        'model-text-null',
        _line2(broken(_set(['dialog', 1, 1, 'text'], None))),
        2,
        'conversation 20002',
        'turn 1: the model act\'s "text" is null, not a string',
    ),
    (
        'seeker-text-a-number',
        _line2(broken(_set(['dialog', 0, 0, 'text'], 42))),
        2,
        'conversation 20002',
        'turn 0: the seeker act\'s "text" is a number (42), not a string',
    ),
    (
        'eval-labels-a-string',
        _line2(broken(_set(['dialog', 1, 0, 'eval_labels'], 'gold'))),
        2,
        'conversation 20002',
        'turn 1: the seeker act\'s "eval_labels" is "gold", not a list of strings',
    ),
    (
        'replies-of-two-models',
        _line2(broken(_set(['dialog', 1, 1], reply('sure', model='Other')))),
        2,
        'conversation 20002',
        "turn 1: the reply is by 'Other', turn 0's by 'TransformerGenerator'",
    ),
    (
        'no-dialog',
        _line2(lambda: {'conversation_id': '20002', 'context': []}),
        2,
        'conversation 20002',
        'not a Conversations episode (no "dialog" list)',
    ),
    (
        'empty-dialog',
        _line2(lambda: {'dialog': [], 'conversation_id': '20002'}),
        2,
        'conversation 20002',
        '"dialog" is empty: no turns to show raters',
    ),
    (
        'dialog-not-a-list',
        _line2(lambda: {'dialog': 'hi / hello', 'conversation_id': '20002'}),
        2,
        'conversation 20002',
        '"dialog" is a string, not a list of [seeker act, model act] turns',
    ),
    (
        'context-not-a-list',
        _line2(broken(_set(['context'], 'some persona'))),
        2,
        'conversation 20002',
        '"context" is a string, not a list',
    ),
    (
        'episode-not-an-object',
        _line2(lambda: [[seeker('hi', '20002'), reply('hello')]]),
        2,
        'no conversation id',
        'not a Conversations episode (a list, not an object with a "dialog" list)',
    ),
    (
        'torn-json-line',
        lambda: [episode('20001'), json.dumps(episode('20002'))[:-30]],
        2,
        'conversation 20002',
        'invalid JSON (',
    ),
    (
        'not-utf8',
        lambda: [
            episode('20001'),
            json.dumps(episode('20002')).replace('hello', 'h\\u00e9llo').encode()
            # a Latin-1 byte where UTF-8 needs two
            .replace(b'h\\u00e9llo', b'h\xe9llo'),
        ],
        2,
        'conversation 20002',
        'not UTF-8 (byte ',
    ),
    (
        'two-conversations-in-one-line',
        _line2(broken(_set(['dialog', 1, 0, 'conversation_id'], '20003'))),
        2,
        'conversations 20002, 20003',
        'one line holds acts of 2 conversations',
    ),
    (
        'conversation-logged-twice',
        lambda: [episode('20001'), episode('20002'), episode('20001')],
        3,
        'conversation 20001',
        'conversation 20001 is also line 1: one conversation logged twice',
    ),
    (
        'missing-conversation-id',
        _line2(
            broken(lambda e: [pair[0].pop('conversation_id') for pair in e['dialog']])
        ),
        2,
        'no conversation id',
        'the episode has no conversation id, while line 1 has conversation 20001',
    ),
]


def _error_pattern(path, line, named, says):
    return rf'^{re.escape(path)}:{line} \({re.escape(named)}\): .*{re.escape(says)}'


@pytest.mark.parametrize(
    'make, line, named, says', [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_malformed_log_is_refused_naming_file_line_and_conversation(
    tmp_path, make, line, named, says
):
    bad = write_log(tmp_path / 'bad.jsonl', make())
    good = write_log(
        tmp_path / 'good.jsonl',
        [json.loads(json.dumps(episode(cid))) for cid in ('20001', '20002', '20003')],
    )
    pattern = _error_pattern(bad, line, named, says)
    # the pairing tool, either order of the logs, and the onboarding pairs from the bad log
    for call in (
        lambda: build_pairings({'bad': bad, 'good': good}),
        lambda: build_pairings({'good': good, 'bad': bad}),
        lambda: onboarding_from_gold(bad, 1),
        lambda: read_episodes(bad),
    ):
        with pytest.raises(LogError, match=pattern) as caught:
            call()
        assert '\n' not in str(caught.value)  # one line for the CLI


def test_an_empty_log_is_refused_by_name(tmp_path):
    empty = write_log(tmp_path / 'empty.jsonl', ['', '  '])
    good = write_log(tmp_path / 'good.jsonl', [episode('20001')])
    with pytest.raises(
        LogError,
        match=rf'^{re.escape(empty)}: no episodes \(an empty conversation log\)$',
    ):
        build_pairings({'good': good, 'empty': empty})


def test_a_task_without_conversation_ids_is_named_as_such(tmp_path):
    """Logs of other tasks (integration_tests, ...) record no conversation id: still usable, and an
    error says so rather than inventing one."""
    plain = [episode(None), episode(None)]
    for e in plain:
        for pair in e['dialog']:
            del pair[0]['conversation_id']
    a = write_log(tmp_path / 'a.jsonl', plain)
    b_episodes = json.loads(json.dumps(plain))
    b_episodes[1]['dialog'][1][1] = 'sure'
    b = write_log(tmp_path / 'b.jsonl', b_episodes)
    assert [e.conversation_id for e in read_episodes(a)] == [None, None]
    with pytest.raises(
        LogError,
        match=_error_pattern(
            b, 2, 'no conversation id', 'the model act is a plain string'
        ),
    ):
        build_pairings({'a': a, 'b': b})


def test_logs_of_other_conversations_are_not_paired(tmp_path):
    a = write_log(tmp_path / 'a.jsonl', [episode('20001'), episode('20002')])
    b = write_log(tmp_path / 'b.jsonl', [episode('20001'), episode('20009')])
    with pytest.raises(
        PairingError,
        match=rf'^{re.escape(b)}:2 \(conversation 20009\): episode 1 replays other seeker turns '
        rf'than episode 1 of {re.escape(a)}:2 \(conversation 20002\)',
    ):
        build_pairings({'a': a, 'b': b})


def _texts(dialogue):
    return [(t['id'], t['text']) for t in dialogue['dialogue']]


def _alternates(dialogue):
    ids = [t['id'] for t in dialogue['dialogue']]
    return all(x != y for x, y in zip(ids, ids[1:]))


@pytest.mark.parametrize(
    'silent',
    [
        {'text': '__SILENCE__'},
        {'text': ''},
        {},  # no "text" at all
        {'text': '[GEN] __null__ __unk__'},  # only internal tokens
    ],
    ids=['silence-token', 'empty', 'no-text', 'internal-tokens-only'],
)
def test_consecutive_model_turns_are_merged_into_one(silent):
    """A seeker act that shows nothing mid-episode would put two model turns in a row: the
    model's replies become one turn, joined by a space."""
    quiet = dict({'id': 'redial_crs', 'conversation_id': '7'}, **silent)
    e = {
        'dialog': [
            [seeker('hi', '7'), reply('hello')],
            [quiet, reply('what do you like?')],
            [seeker('comedies', '7'), reply('try this one')],
            [quiet, reply('or that one')],
        ]
    }
    dialogue = to_acute_dialogue(e, 'model_a', source='log.jsonl:1 (conversation 7)')
    assert _texts(dialogue) == [
        (SEEKER_ID, 'Hi'),
        ('model_a', 'Hello What do you like?'),
        (SEEKER_ID, 'Comedies'),
        ('model_a', 'Try this one Or that one'),
    ]


def test_several_seeker_messages_are_one_turn():
    e = {
        'dialog': [
            [seeker('hi there\n__null__\nany comedy?', '7'), reply('sure')],
            [seeker('thanks\nbye', '7'), reply('bye')],
        ]
    }
    assert _texts(to_acute_dialogue(e, 'm', source='log.jsonl:1')) == [
        (SEEKER_ID, 'Hi there Any comedy?'),
        ('m', 'Sure'),
        (SEEKER_ID, 'Thanks Bye'),
        ('m', 'Bye'),
    ]


def test_empty_replies_show_dots_alone_and_nothing_when_merged():
    e = {
        'dialog': [
            [seeker('hi', '7'), reply('__unk__')],
            [seeker('hello?', '7'), reply('hm')],
            [seeker('', '7'), reply('[GEN]')],
        ]
    }
    assert _texts(to_acute_dialogue(e, 'm', source='log.jsonl:1')) == [
        (SEEKER_ID, 'Hi'),
        ('m', '...'),
        (SEEKER_ID, 'Hello?'),
        ('m', 'Hm'),
    ]


def test_pairings_from_logs_with_silent_seeker_turns_alternate(tmp_path, catalog):
    """The issue's case end to end: two model turns in a row reach no pairing file."""

    def silent_middle(path, model_id, text):
        conversations_log(path, model_id, text)
        episodes = [json.loads(x) for x in path.read_text().splitlines()]
        for e in episodes:
            e['dialog'][1][0]['text'] = '__SILENCE__'
        path.write_text(''.join(json.dumps(e) + '\n' for e in episodes))
        return str(path)

    logs = {
        'a': silent_middle(tmp_path / 'a.jsonl', 'A', lambda c, t: f'reply a{c}{t}'),
        'b': silent_middle(tmp_path / 'b.jsonl', 'B', lambda c, t: f'reply b{c}{t}'),
    }
    pairs = build_pairings(logs, catalog)
    out = tmp_path / 'pairings.jsonl'
    write_pairings(pairs, str(out))
    written = read_pairings(str(out))
    assert len(written) == len(CONTEXTS)
    for pair in written:
        assert all(_alternates(d) for d in pair['dialogue_dicts'])
    first = written[0]['dialogue_dicts'][0]
    assert _texts(first) == [
        (SEEKER_ID, 'Hi! I want a sci-fi movie'),
        ('a', 'Reply a00 Reply a01'),
    ]


def test_a_pairings_file_with_two_turns_in_a_row_is_refused(pairs, tmp_path):
    bad = json.loads(json.dumps(pairs[1]))
    dialogue = bad['dialogue_dicts'][1]['dialogue']
    model_turn = next(i for i, t in enumerate(dialogue) if t['id'] != SEEKER_ID)
    dialogue.insert(model_turn + 1, dict(dialogue[model_turn], text='and again'))
    path = tmp_path / 'old.jsonl'
    path.write_text(json.dumps(pairs[0]) + '\n' + json.dumps(bad) + '\n')
    with pytest.raises(
        PairingError,
        match=rf'old\.jsonl:2: dialogue_dicts\[1\]\.dialogue\[{model_turn + 1}\] is a second '
        r"turn in a row by 'model_b': ACUTE-Eval shows strictly alternating turns",
    ):
        read_pairings(str(path))
    with pytest.raises(PairingError, match='second turn in a row'):
        write_pairings([bad], str(tmp_path / 'new.jsonl'))
    assert not (tmp_path / 'new.jsonl').exists()


def test_fixture_logs_name_their_conversations(logs):
    assert [e.conversation_id for e in read_episodes(logs['model_a'])] == [
        conversation_id(c) for c in range(len(CONTEXTS))
    ]


def test_cli_refuses_a_plain_string_model_turn_in_one_line(tmp_path):
    """Through the real command: one `error:` line naming file, line and conversation id, exit 2,
    no traceback, no pairings file."""
    bad = write_log(
        tmp_path / 'bad.jsonl',
        [episode('20001'), broken(_set(['dialog', 1, 1], 'sure'))()],
    )
    good = write_log(tmp_path / 'good.jsonl', [episode('20001'), episode('20002')])
    out = tmp_path / 'pairings.jsonl'
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'parlai_conkd.human_eval',
            'pairings',
            '--log',
            f'good={good}',
            '--log',
            f'bad={bad}',
            '--out',
            str(out),
            '--onboarding',
            '0',
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS='1'),
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert errors == [
        f'error: {bad}:2 (conversation 20002): turn 1: the model act is a plain string '
        '("sure"), not a ParlAI act (an object with "id" and "text")'
    ], proc.stderr
    assert 'Traceback' not in proc.stderr
    assert not out.exists()


def test_logs_shaped_like_redial_crs_on_the_real_data_are_read_as_they_are(tmp_path):
    """Every dialogue of the shared ReDial copy, logged as `eval_model --world-logs` logs
    redial_crs (teacher acts = the task's examples, with their conversation id), passes the
    checks, and its pairings alternate strictly: the rules refuse nothing the real task writes.
    """
    from parlai_conkd.items import ItemCatalog
    from parlai_conkd.redial.preprocess import process_file
    from parlai_conkd.tasks.redial_crs.examples import dialogue_examples

    redial = shared_redial_or_skip()
    catalog = ItemCatalog.from_redial(str(redial / 'movies_with_mentions.csv'))
    with open(redial / 'test_data.jsonl', encoding='utf-8') as f:
        processed, _ = process_file(f, 'test_data.jsonl', catalog)
    logs = {}
    for name, model_id in (('gold', 'Gold'), ('echo', 'Echo')):
        episodes = []
        for p in processed:
            dialog = []
            for example in dialogue_examples(p):
                teacher = dict(example, id='redial_crs', eval_labels=example['labels'])
                del teacher['labels']
                text = (
                    example['labels'][0]
                    if name == 'gold'
                    else 'you said: ' + (example['text'])
                )
                dialog.append([teacher, {'id': model_id, 'text': text}])
            if dialog:  # a dialogue without recommender turns gives ParlAI no episode
                episodes.append(
                    {'dialog': dialog, 'context': [], 'metadata_path': None}
                )
        logs[name] = write_log(tmp_path / f'{name}.jsonl', episodes)
    entries = read_episodes(logs['gold'])
    assert len(entries) > 200
    assert [e.conversation_id for e in entries] == [
        p['conversation_id'] for p in processed if dialogue_examples(p)
    ]
    pairs = build_pairings(logs, catalog)
    assert len(pairs) == len(entries)
    opened_by_the_model = 0
    for pair, entry in zip(pairs, entries):
        for d in pair['dialogue_dicts']:
            assert _alternates(d), d['id']
            # redial_crs alternates already: one model turn per logged reply, nothing merged
            model_turns = [t for t in d['dialogue'] if t['id'] != SEEKER_ID]
            assert len(model_turns) == len(entry.episode['dialog']), d['id']
        opened_by_the_model += (
            pair['dialogue_dicts'][0]['dialogue'][0]['id'] != SEEKER_ID
        )
    # the recommender opens many ReDial dialogues: those start with the model
    assert 0 < opened_by_the_model < len(pairs)
    write_pairings(pairs, str(tmp_path / 'pairings.jsonl'))
