"""Tiny ReDial copies in the official layout, written per test (dialogues spelled out in the tests)."""

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import pytest

MOVIES_CSV = (
    'movieId,movieName,nbMentions\n'
    '111,Alien  (1979),5\n'
    '222,Heat (1995),3\n'
    '333,The Godfather ,2\n'
    '444,Up (2009),1\n'
)
#: catalog indices of the movies above (file order)
ALIEN, HEAT, GODFATHER, UP = 0, 1, 2, 3


def dialogue(conversation_id, messages, seeker=1, recommender=2, **extra):
    """A raw ReDial dialogue; ``messages`` is [(sender, text)], message ids/time offsets omitted."""
    return {
        'conversationId': str(conversation_id),
        'movieMentions': {},
        'respondentQuestions': {},
        'initiatorQuestions': [],
        'messages': [{'senderWorkerId': s, 'text': t} for s, t in messages],
        'initiatorWorkerId': seeker,
        'respondentWorkerId': recommender,
        **extra,
    }


def default_dialogues(n=6):
    return [
        dialogue(
            100 + i,
            [
                (1, 'hi, I liked @111'),
                (2, 'try @222'),
                (2, 'or @333?'),
                (1, 'seen @222, thanks'),
                (2, 'then @444'),
            ],
        )
        for i in range(n)
    ]


def write_redial(
    directory: Path, train=None, test=None, movies=MOVIES_CSV, train_text=None
):
    """Write the three official files; ``train_text`` overrides train_data.jsonl verbatim."""
    directory.mkdir(parents=True, exist_ok=True)
    train = default_dialogues() if train is None else train
    test = default_dialogues(2) if test is None else test
    (directory / 'train_data.jsonl').write_text(
        train_text
        if train_text is not None
        else ''.join(json.dumps(d) + '\n' for d in train)
    )
    (directory / 'test_data.jsonl').write_text(
        ''.join(json.dumps(d) + '\n' for d in test)
    )
    (directory / 'movies_with_mentions.csv').write_text(movies)
    return directory


def zip_redial(directory: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, 'w') as zf:
        for name in ('train_data.jsonl', 'test_data.jsonl', 'movies_with_mentions.csv'):
            zf.write(directory / name, name)
    return zip_path


@pytest.fixture
def tiny_redial(tmp_path):
    return write_redial(tmp_path / 'redial')


@pytest.fixture
def no_redial_env(monkeypatch):
    """Tests must not pick up a developer's CONKD_REDIAL_PATH / CONKD_REDIAL_META_PATH."""
    monkeypatch.delenv('CONKD_REDIAL_PATH', raising=False)
    monkeypatch.delenv('CONKD_REDIAL_META_PATH', raising=False)


def task_opt(datapath, **kwargs):
    opt = {
        'datapath': str(datapath),
        'redial_path': None,
        'redial_meta_path': None,
        'redial_max_dialogues': 0,
    }
    opt.update(kwargs)
    return opt


@pytest.fixture
def served_archive(tmp_path, tiny_redial):
    """The tiny copy zipped in the official layout, served over HTTP on 127.0.0.1."""
    served = tmp_path / 'www'
    served.mkdir()
    archive = zip_redial(tiny_redial, served / 'redial_dataset.zip')
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f'http://127.0.0.1:{server.server_address[1]}/redial_dataset.zip'
    yield url, hashlib.sha256(archive.read_bytes()).hexdigest()
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
