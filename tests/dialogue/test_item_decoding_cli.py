"""Item-aware decoding through the real `parlai` CLI on a tiny ReDial copy made for it.

In the copy, 70% of recommender replies are "you should watch @<movie> ." over 14 movies and 30%
are "you should watch it , like @<movie> .": after "watch" the item class holds ~0.7 of the
probability while each single movie holds at most ~0.13 and the word "it" ~0.3. A trained model's
plain (token) greedy decoding therefore says "watch it"; class decoding names a film right there.
(Every reply names a film, so the [REC] flag cannot make the decision for the decoder.)
"""

import json
import random
import re

import pytest

from tests.support import dialogue, run_parlai, write_redial

pytestmark = pytest.mark.cli

MOVIES = [(str(100 + i), f'Film Number {chr(65 + i)}', 1980 + i) for i in range(14)]
ENV = {'OMP_NUM_THREADS': '1'}
SHAPE = [
    '--n-layers',
    '1',
    '--embedding-size',
    '32',
    '--ffn-size',
    '64',
    '--n-heads',
    '2',
    '--text-truncate',
    '32',
    '--label-truncate',
    '12',
    '--truncate',
    '32',
]


def _copy(directory):
    rng = random.Random(0)
    # movie 0 is recommended most often: the popularity baseline's first choice
    weights = [3] + [1] * (len(MOVIES) - 1)

    def one(conversation_id):
        movie = rng.choices(MOVIES, weights)[0][0]
        if rng.random() < 0.7:
            reply = f'you should watch @{movie} .'
        else:
            reply = f'you should watch it , like @{movie} .'
        return dialogue(
            conversation_id,
            [(1, 'hi , any good movie ?'), (2, reply), (1, 'thanks !'), (2, 'enjoy !')],
        )

    movies = 'movieId,movieName,nbMentions\n' + ''.join(
        f'{m},{t} ({y}),1\n' for m, t, y in MOVIES
    )
    return write_redial(
        directory,
        train=[one(i) for i in range(300)],
        test=[one(1000 + i) for i in range(40)],
        movies=movies,
    )


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('item_decoding')
    redial = _copy(root / 'redial')
    data = ['--redial-path', str(redial), '-dp', str(root / 'data')]
    model = root / 'model'
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_dialogue_teacher',
            '-t',
            'redial_crs',
            *data,
            *SHAPE,
            '-mf',
            model,
            '-bs',
            '16',
            '-lr',
            '3e-3',
            '--optimizer',
            'adam',
            '--num-epochs',
            '12',
            '--skip-generation',
            'true',
            '-vtim',
            '1000000',
            '--item-decoding',
            'class',
        ],
        env=ENV,
        timeout=600,
    )
    popularity = root / 'popularity'
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_popularity',
            '-t',
            'redial_crs:rec',
            *data,
            '-mf',
            popularity,
            '-eps',
            '1',
            '-bs',
            '16',
            '--truncate',
            '32',
        ],
        env=ENV,
    )
    return {'root': root, 'data': data, 'model': model, 'popularity': popularity}


def _eval(trained, *extra):
    report = trained['root'] / f'report{abs(hash(extra))}.json'
    run_parlai(
        [
            'eval_model',
            '-mf',
            trained['model'],
            '-t',
            'redial_crs',
            '-dt',
            'test',
            *trained['data'],
            '--skip-generation',
            'false',
            '-bs',
            '8',
            '--report-filename',
            report,
            *extra,
        ],
        env=ENV,
    )
    return json.loads(report.read_text())['report']


def _first_reply(trained, *extra):
    # the model file carries its item catalog: no ReDial path needed to chat
    proc = run_parlai(
        ['interactive', '-mf', trained['model'], '-dp', trained['data'][-1], *extra],
        input='hi , any good movie ?\n[DONE]\n',
        env=ENV,
        timeout=300,
    )
    replies = [
        line for line in proc.stdout.splitlines() if '[ConkdDialogueTeacher]:' in line
    ]
    assert replies, proc.stdout[-2000:]
    return replies[0]


def test_the_option_is_saved_with_the_model_and_class_decoding_names_films(trained):
    opt = json.loads((trained['root'] / 'model.opt').read_text())
    assert opt['item_decoding'] == 'class'
    saved = _eval(trained)  # the model file's own setting
    token = _eval(trained, '--item-decoding', 'token')
    # half the test turns are the recommending first turn ("enjoy !" is the other half)
    assert 0.4 <= saved['item_ratio'] <= 0.6, saved
    assert token['exs'] == saved['exs']


def test_interactive_reply_names_a_titled_film_where_token_decoding_says_it(trained):
    titles = [f'{t} ({y})' for _, t, y in MOVIES]
    reply = _first_reply(trained)  # class decoding, as saved with the model
    assert re.search(
        r'watch (' + '|'.join(re.escape(t) for t in titles) + ')', reply
    ), reply
    assert '__item_' not in reply and '[REC]' not in reply
    assert 'watch it' in _first_reply(trained, '--item-decoding', 'token')


def test_pipeline_fills_the_slot_with_the_recommenders_best_item(trained):
    # the popularity baseline's first choice is movie 0 (recommended 3x as often as any other)
    assert 'watch Film Number A (1980)' in _first_reply(
        trained, '--fill-items-from', trained['popularity']
    )
    report = _eval(trained, '--fill-items-from', trained['popularity'])
    assert 0.4 <= report['item_ratio'] <= 0.6
