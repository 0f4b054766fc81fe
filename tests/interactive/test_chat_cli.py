"""A person's chat through the real CLI (`printf ... | parlai interactive`, `parlai interactive_web`)
with the tiny zoo:conkd/soft, no ReDial path set, and a small real recommendation teacher.
"""

import json
import re
import socket
import subprocess
import time
import urllib.request

import pytest

from parlai_conkd.items import ItemCatalog
from tests.support import PARLAI, TINY_CHAT, run_parlai

pytestmark = pytest.mark.cli


def chat(datapath, env, messages, *extra, outfile=None):
    args = ['interactive', '-mf', 'zoo:conkd/soft', '-dp', datapath, *TINY_CHAT, *extra]
    if outfile is not None:
        args += ['--outfile', outfile]
    return run_parlai(
        args, env=env, input=''.join(m + '\n' for m in messages), timeout=400
    )


def model_turns(outfile):
    """The model's messages of each logged conversation (ParlAI's Conversations jsonl)."""
    with open(outfile, encoding='utf-8') as f:
        return [
            [pair[1] for pair in json.loads(line)['dialog']]
            for line in f
            if line.strip()
        ]


def genre_count(ranking, catalog, genre):
    return sum(
        genre in (catalog[entry['index']].metadata.get('genre') or [])
        for entry in ranking
    )


def test_the_panel_follows_the_conversation(
    tiny_zoo, small_rec_teacher, fresh_datapath, tmp_path
):
    """Issue #14: two conversations ([DONE] between) move the recommendation teacher's ranking
    towards what was named: a horror film and genre, then a comedy and an actor."""
    _, env = tiny_zoo
    log = tmp_path / 'chat.jsonl'
    proc = chat(
        fresh_datapath,
        env,
        [
            'hi! i loved the shining and i want another scary horror movie',
            '[DONE]',
            'i am in the mood for a comedy with tom hanks, like Big (1988)',
        ],
        '--show-recs',
        '10',
        '--rec-teacher-file',
        small_rec_teacher,
        outfile=log,
    )
    out = proc.stdout
    assert 'understood: The Shining (1980)' in out and 'understood: Big (1988)' in out
    assert (
        out.count('top items (recommendation teacher, for the conversation so far):')
        == 2
    )
    assert 'top items (this model' in out
    horror, comedy = [turns[0]['item_rankings'] for turns in model_turns(log)]
    assert [i['title'] for i in horror['rec_teacher_read']['items']] == ['The Shining']
    assert {'horror', 'scary'} <= set(horror['rec_teacher_read']['entities'])
    # [DONE] started a new conversation: The Shining is no longer in what the teacher reads
    assert [i['title'] for i in comedy['rec_teacher_read']['items']] == ['Big']
    assert {'comedy', 'tom hanks'} <= set(comedy['rec_teacher_read']['entities'])
    catalog = ItemCatalog.load(
        str(fresh_datapath / 'models' / 'conkd' / 'soft.catalog.json')
    )
    h = [genre_count(r['rec_teacher'], catalog, 'horror') for r in (horror, comedy)]
    c = [genre_count(r['rec_teacher'], catalog, 'comedy') for r in (horror, comedy)]
    assert h[0] > h[1] and c[1] > c[0], (h, c)
    assert h[0] > c[0] and c[1] > h[1], (h, c)
    for ranking in (horror, comedy):
        assert len(ranking['rec_teacher']) == len(ranking['model']) == 10
        assert 0 < sum(i['score'] for i in ranking['rec_teacher']) <= 1


def test_a_transcript_ids_titles_history_blank_lines_long_input_and_done(
    tiny_zoo, fresh_datapath, tmp_path
):
    """@id (ReDial's syntax) and typed titles are linked and stay in the history (the second
    message names nothing and the teacher still reads the first one's items); a blank line is the
    silence token; truncation is said once per conversation; [DONE] starts a new one."""
    _, env = tiny_zoo
    log = tmp_path / 'chat.jsonl'
    long = 'so ' * 5000
    proc = chat(
        fresh_datapath,
        env,
        [
            'I loved @202190 and "get out", also meet the parents (2000)',
            'anything else?',
            '',
            long,
            long,
            '[DONE]',
            long,
            '[EXIT]',
        ],
        '--show-recs',
        '3',
        outfile=log,
    )
    out = proc.stdout
    assert (
        'understood: The Shining (1980) (@202190), Get Out (2017), Meet the Parents (2000)'
        in out
    )
    first, second = model_turns(log)
    assert len(first) == 5 and len(second) == 1 and out.count('[ConkdStudent]:') == 6
    for turn in first[:3]:
        read = [
            (i['movie_id'], i['title'])
            for i in turn['item_rankings']['rec_teacher_read']['items']
        ]
        assert read[:3] == [
            ('202190', 'The Shining'),
            ('184418', 'Get Out'),
            ('170722', 'Meet the Parents'),
        ]
        assert isinstance(turn['recommendations'], list)
    assert second[0]['item_rankings']['rec_teacher_read']['items'] == []
    note = 'this conversation is now longer than the model reads'
    assert [note in turn['text'] for turn in first] == [
        False,
        False,
        False,
        True,
        False,
    ]
    assert note in second[0]['text'] and out.count(note) == 2
    assert '__item_' not in out.split('Enter Your Message:', 1)[1]


def test_zoo_model_chats_without_redial_data(tiny_zoo, fresh_datapath):
    """No CONKD_REDIAL_PATH / META path, a datapath with the models only: the chat works, the
    panel has the KG metadata (from the model files) and nothing is built or downloaded.
    """
    _, env = tiny_zoo
    proc = chat(
        fresh_datapath,
        env,
        ['I loved The Shining (1980)'],
        '--show-recs',
        '2',
        '--show-gates',
        'true',
    )
    assert 'Traceback' not in proc.stderr
    assert (
        'top items (recommendation teacher, for the conversation so far):'
        in proc.stdout
    )
    assert re.search(r'genre: [a-z]', proc.stdout), proc.stdout[-3000:]
    assert (
        'gate per token' in proc.stdout
        or 'no generated tokens to show a gate for' in proc.stdout
    )
    # no redial_crs/, no downloads/
    assert sorted(p.name for p in fresh_datapath.iterdir()) == ['models']


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _post(port, path, body):
    request = urllib.request.Request(
        f'http://127.0.0.1:{port}{path}', data=body.encode('utf-8'), method='POST'
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read().decode('utf-8'))


def test_interactive_web_follows_the_conversation_the_same_way(
    tiny_zoo, fresh_datapath
):
    _, env = tiny_zoo
    port = _free_port()
    proc = subprocess.Popen(
        [
            PARLAI,
            'interactive_web',
            '-mf',
            'zoo:conkd/soft',
            '-dp',
            str(fresh_datapath),
            '--port',
            str(port),
            '--host',
            '127.0.0.1',
            '--show-recs',
            '3',
            *TINY_CHAT,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 300
        while True:
            try:
                with socket.create_connection(('127.0.0.1', port), timeout=1):
                    break
            except OSError:
                assert (
                    proc.poll() is None and time.time() < deadline
                ), proc.stdout.read()[-3000:]
                time.sleep(1)
        first = _post(port, '/interact', 'I loved The Shining (1980)')
        assert 'understood: The Shining (1980)' in first['text']
        assert [
            i['title'] for i in first['item_rankings']['rec_teacher_read']['items']
        ] == ['The Shining']
        second = _post(port, '/interact', 'and a comedy?')
        assert [
            i['title'] for i in second['item_rankings']['rec_teacher_read']['items']
        ] == ['The Shining']
        assert 'comedy' in second['item_rankings']['rec_teacher_read']['entities']
        _post(port, '/reset', '')
        third = _post(port, '/interact', 'hello')
        assert third['item_rankings']['rec_teacher_read']['items'] == []
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_readme_python_example_runs_as_written(tiny_zoo, fresh_datapath, tmp_path):
    """docs/interactive.md's create_agent_from_model_file example, unchanged, with `data`
    being the tiny zoo's datapath."""
    import os
    import sys
    from pathlib import Path

    _, env = tiny_zoo
    readme = (
        Path(__file__).resolve().parents[2] / 'docs' / 'interactive.md'
    ).read_text()
    code = re.search(
        r'```python\n(from parlai\.core\.agents import create_agent_from_model_file\n.*?)```',
        readme,
        re.S,
    ).group(1)
    os.symlink(fresh_datapath, tmp_path / 'data')
    proc = subprocess.run(
        [sys.executable, '-c', code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert 'understood: The Shining (1980)' in lines
    ranked = [
        line for line in lines if re.fullmatch(r'\d+ .+ (\d{4}|None) \d+\.\d\d%', line)
    ]
    # at least the teacher's top 5 (and any film the reply names)
    assert len(ranked) >= 5
