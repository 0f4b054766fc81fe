"""Broken files a run reads end the real ``parlai`` command in one line (issue #22, part 3).

A corruption matrix through the CLI (subprocesses) over every file a user's run reads: the model
file, its ``.opt``, ``.dict`` and ``.catalog.json``, a student's ``--teacher-cache``, the zoo's
stamp (``<model>.zoo.json``) and recorded checksums, the ReDial files of a ``--redial-path`` and
the processed copy of them under ``<datapath>/redial_crs/``. Each is made empty, truncated or not
what it should be (malformed JSON, JSON of the wrong shape, a flipped byte), on a copy. For each:
the command exits non-zero (a damaged zoo model is rebuilt instead), the last line of stderr is
one error naming the file and what to do, no traceback is printed, and nothing is left
half-written (no new file beside the damaged one, the damaged file untouched, no partial build).
Both agent families: a generator (``conkd_dialogue_teacher``, and ``conkd_student`` for the
teacher cache) and a ranker (``conkd_rec_teacher``).

The models are a ``smoke`` zoo built once for the module (about 20 s on an idle 2-core machine).
The reading commands: ``parlai eval_model -mf COPY -t redial_crs -dt valid -ne 4`` (about 5 s
each), a student's ``train_model --max-train-steps 2`` for the teacher cache and
``display_data`` for the ReDial files.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import (
    SHARED_REDIAL,
    SHARED_REDIAL_META,
    run_parlai,
    shared_meta_or_skip,
    shared_redial_or_skip,
)

pytestmark = pytest.mark.cli

#: the files of a model a run reads (the rest, e.g. .trainstats or the build log, it does not)
MODEL_SUFFIXES = ('', '.opt', '.dict', '.dict.opt', '.catalog.json')
#: what the message of a damaged model file of yours says to do (parlai_conkd.errors.remedy)
RETRAIN = 'retrain it (parlai train_model -mf'
#: zoo variables of the caller that would change what the zoo does (a release URL, ...)
ZOO_ENV = ('CONKD_ZOO_URL', 'CONKD_ZOO_SHA256', 'CONKD_ZOO_MODELS')


# ---------------------------------------------------------------------------- helpers
def corrupt(path: Path, how: str) -> None:
    """Damage ``path`` in place the way ``how`` says."""
    data = path.read_bytes()
    if how == 'empty':
        damaged = b''
    elif how == 'truncated':
        damaged = data[: len(data) // 2]
    elif how == 'malformed':  # not JSON at all, e.g. an error page saved in its place
        damaged = b'<html><body>404 Not Found</body></html>\n'
    elif how == 'wrong_json':  # valid JSON of the wrong shape
        damaged = b'[1, 2]\n'
    elif how == 'lines_dropped':  # cut at a line boundary: every line still well formed
        lines = data.splitlines(keepends=True)
        damaged = b''.join(lines[: len(lines) // 2])
    elif how == 'flipped_byte':  # same size, one byte changed (what a checksum sees)
        middle = len(data) // 2
        damaged = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    else:
        raise ValueError(how)
    path.write_bytes(damaged)


def snapshot(directory: Path):
    """Every entry under ``directory`` with its size and modification time."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob('*'))
    }


def error_line(proc) -> str:
    """The last line of stderr, after checking that the command failed without a traceback."""
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output[-3000:]
    assert 'Traceback' not in output, output[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines, output[-3000:]
    return lines[-1]


def assert_names(line: str, path, remedy: str) -> None:
    assert line.split(':', 1)[0].endswith('Error'), line  # one error: "Kind: message"
    assert str(path) in line, line
    assert remedy in line, line


@pytest.fixture(scope='module')
def zoo(tmp_path_factory, smoke_zoo):
    """This module's copy of the session's smoke-recipe zoo (some cases change the zoo itself):
    (datapath, zoo dir, env)."""
    shared_datapath, shared_env = smoke_zoo
    datapath = tmp_path_factory.mktemp('corrupt_files') / 'data'
    shutil.copytree(shared_datapath, datapath, symlinks=True)
    env = dict(shared_env, **{name: '' for name in ZOO_ENV})
    return datapath, datapath / 'models' / 'conkd', env


def copy_model(zoo_dir: Path, model: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in MODEL_SUFFIXES:
        if (zoo_dir / (model + suffix)).is_file():
            shutil.copyfile(zoo_dir / (model + suffix), dest / (model + suffix))
    return dest / model


def eval_model(model_file, datapath, env, *extra):
    return run_parlai(
        ['eval_model', '-mf', model_file, '-t', 'redial_crs', '-dt', 'valid']
        + ['-ne', 4, '-dp', datapath, *extra],
        env=env,
        check=False,
    )


# ---------------------------------------------------------------------------- model files
GENERATOR, RANKER = 'dialogue_teacher', 'rec_teacher'


#: the cases the default suite runs (one per file and agent family); the rest of the matrix runs
#: with ``-m slow`` (CI's time: each case is an eval_model process)
DEFAULT_CASES = {
    f'{GENERATOR}-model-truncated',
    f'{RANKER}-model-empty',
    f'{GENERATOR}-opt-wrong_json',
    f'{RANKER}-opt-truncated',
    f'{GENERATOR}-dict-truncated',
    f'{GENERATOR}-dict-lines_dropped',
    f'{GENERATOR}-catalog-truncated',
}


def _case(model, suffix, how, kind):
    case_id = f'{model}-{kind}-{how}'
    marks = [] if case_id in DEFAULT_CASES else [pytest.mark.slow]
    return pytest.param(model, suffix, how, id=case_id, marks=marks)


def _cases():
    for model in (GENERATOR, RANKER):
        for how in ('empty', 'truncated'):
            yield _case(model, '', how, 'model')
        for how in ('empty', 'truncated', 'wrong_json'):
            yield _case(model, '.opt', how, 'opt')
    for how in ('empty', 'truncated', 'lines_dropped'):
        yield _case(GENERATOR, '.dict', how, 'dict')
    for how in ('empty', 'truncated', 'wrong_json'):
        yield _case(GENERATOR, '.catalog.json', how, 'catalog')


@pytest.mark.parametrize('model, suffix, how', list(_cases()))
def test_a_damaged_model_file_ends_eval_in_one_line(zoo, tmp_path, model, suffix, how):
    datapath, zoo_dir, env = zoo
    model_file = copy_model(zoo_dir, model, tmp_path / 'copy')
    damaged = Path(f'{model_file}{suffix}')
    corrupt(damaged, how)
    before = snapshot(tmp_path)
    line = error_line(eval_model(model_file, datapath, env))
    assert_names(line, damaged, RETRAIN)
    # nothing written beside it, the damaged file untouched
    assert snapshot(tmp_path) == before


def test_a_rankers_damaged_dictionary_is_not_used(zoo, tmp_path):
    """Item rankers never tokenise (``NoTokenDictionary``): ParlAI adds its four special tokens
    itself, so an empty ``.dict`` changes nothing and the run goes on, without a traceback.
    """
    datapath, zoo_dir, env = zoo
    model_file = copy_model(zoo_dir, RANKER, tmp_path / 'copy')
    corrupt(Path(f'{model_file}.dict'), 'empty')
    before = snapshot(tmp_path)
    proc = eval_model(model_file, datapath, env)
    assert proc.returncode == 0 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert 'recall@10' in proc.stdout
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    'args, named',
    [
        pytest.param(
            ['-mf', 'zoo:conkd/sfot'],
            'zoo:conkd/sfot',
            id='zoo-name-typo',
        ),
        pytest.param(
            ['-mf', '{tmp}/no/such/model', '-m', 'conkd_rec_teacher'],
            '{tmp}/no/such/model',
            id='missing-model-file-of-a-conkd-agent',
        ),
        pytest.param(
            ['-mf', '{tmp}/no/such/model'],
            '{tmp}/no/such/model',
            # no -m, but -t redial_crs is this project's task
            id='missing-model-file-on-our-task',
        ),
    ],
)
def test_a_model_that_does_not_exist_is_named_in_one_line(zoo, tmp_path, args, named):
    datapath, zoo_dir, env = zoo
    args = [a.replace('{tmp}', str(tmp_path)) for a in args]
    before = snapshot(datapath / 'models')
    proc = run_parlai(
        ['eval_model', *args, '-t', 'redial_crs', '-dt', 'valid', '-ne', 4]
        + ['-dp', datapath],
        env=env,
        check=False,
    )
    line = error_line(proc)
    assert str(named).replace('{tmp}', str(tmp_path)) in line, line
    assert snapshot(datapath / 'models') == before  # no build of anything


def test_display_model_refuses_a_missing_model_file_of_ours(zoo, tmp_path):
    """ParlAI's display_model creates a fresh, untrained model when -mf names nothing; for this
    project's agents that is refused, naming the file."""
    datapath, _, env = zoo
    missing = tmp_path / 'no' / 'such' / 'model'
    proc = run_parlai(
        ['display_model', '-m', 'conkd_student', '-mf', missing, '-t', 'redial_crs']
        + ['-dt', 'valid', '-n', 2, '-dp', datapath],
        env=env,
        check=False,
    )
    assert_names(error_line(proc), missing, RETRAIN)
    assert not missing.parent.exists()


# ---------------------------------------------------------------------------- teacher cache
@pytest.mark.parametrize(
    'how', [pytest.param('empty', marks=pytest.mark.slow), 'truncated']
)
def test_a_damaged_teacher_cache_ends_student_training_in_one_line(zoo, tmp_path, how):
    import torch

    datapath, zoo_dir, env = zoo
    cache = tmp_path / 'teachers.cache'
    # a real torch archive
    torch.save({'format': 1, 'key': {}, 'entries': {}}, str(cache))
    corrupt(cache, how)
    before = snapshot(tmp_path)
    proc = run_parlai(
        ['train_model', '-t', 'redial_crs', '-m', 'conkd_student', '--gate', 'soft']
        + ['-mf', tmp_path / 'student', '--teacher-cache', cache]
        + ['--dialogue-teacher-file', zoo_dir / GENERATOR]
        + ['--rec-teacher-file', zoo_dir / RANKER, '--max-train-steps', 2]
        + ['--n-layers', 1, '--n-heads', 2, '--embedding-size', 32, '--ffn-size', 64]
        + ['-bs', 8, '--redial-max-dialogues', 12, '-dp', datapath],
        env=env,
        check=False,
    )
    line = error_line(proc)
    assert_names(line, cache, 'delete it: the next training run rebuilds it')
    assert snapshot(tmp_path) == before  # no student files, the cache untouched


# ---------------------------------------------------------------------------- zoo
def _zoo_copy(datapath: Path, tmp_path: Path) -> Path:
    own = tmp_path / 'data'  # a rebuild replaces files: a copy of the module's datapath
    shutil.copytree(datapath, own)
    return own


@pytest.mark.parametrize(
    'how',
    [
        pytest.param('empty', marks=pytest.mark.slow),
        pytest.param('truncated', marks=pytest.mark.slow),
        'wrong_json',
    ],
)
def test_a_damaged_zoo_stamp_makes_the_model_absent(zoo, tmp_path, how):
    """What ``zoo:conkd/X`` checks first, seen through the builder's ``status`` (no rebuild)."""
    datapath, _, env = zoo
    own = _zoo_copy(datapath, tmp_path)
    corrupt(own / 'models' / 'conkd' / 'rec_teacher.zoo.json', how)
    proc = subprocess.run(
        [sys.executable, '-m', 'parlai_conkd.zoo.conkd.builder', 'status']
        + ['-dp', str(own)],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and 'Traceback' not in output, output[-3000:]
    rows = dict(line.split(None, 1) for line in proc.stdout.splitlines() if line)
    assert (
        rows['rec_teacher'] == 'absent: its stamp rec_teacher.zoo.json is unreadable'
    ), proc.stdout
    # its students were distilled from the rec teacher that stamp recorded: rebuilt too
    assert 'its teacher rec_teacher was replaced' in rows['soft'], proc.stdout


def test_a_damaged_zoo_model_file_is_rebuilt(zoo, tmp_path):
    """A flipped byte keeps the size and the archive form: the recorded sha256 finds it, the model
    is absent and ``zoo:conkd/X`` rebuilds it (a damaged stamp makes it absent in the same way).
    """
    from parlai_conkd.zoo.conkd import builder

    datapath, _, env = zoo
    own = _zoo_copy(datapath, tmp_path)
    corrupt(own / 'models' / 'conkd' / 'rec_teacher', 'flipped_byte')
    proc = eval_model('zoo:conkd/rec_teacher', own, env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and 'Traceback' not in output, output[-3000:]
    assert (
        'rec_teacher: rec_teacher does not match the sha256 recorded when it was installed'
        in proc.stderr
    )
    assert 'rec_teacher ready' in proc.stderr and 'recall@10' in proc.stdout
    assert builder.why_not_present(str(own), 'rec_teacher', 'smoke') is None
    assert not list((own / 'models').glob(builder.TMP_PREFIX + '*'))


# ---------------------------------------------------------------------------- ReDial data
@pytest.mark.parametrize(
    'name, how, says',
    [
        pytest.param(
            'train_data.jsonl', 'empty', 'holds no dialogue', marks=pytest.mark.slow
        ),
        ('train_data.jsonl', 'truncated', 'malformed JSON'),
        pytest.param(
            'train_data.jsonl',
            'malformed',
            ':1: malformed JSON',
            marks=pytest.mark.slow,
        ),
        pytest.param(
            'movies_with_mentions.csv', 'empty', 'is empty', marks=pytest.mark.slow
        ),
        ('movies_with_mentions.csv', 'truncated', 'columns'),
    ],
    ids=lambda v: v if isinstance(v, str) and '.' not in v and ' ' not in v else None,
)
def test_a_damaged_redial_file_ends_the_build_in_one_line(tmp_path, name, how, says):
    shared_redial_or_skip()
    shared_meta_or_skip()
    redial = tmp_path / 'redial'
    redial.mkdir()
    for fname in ('train_data.jsonl', 'test_data.jsonl', 'movies_with_mentions.csv'):
        shutil.copyfile(SHARED_REDIAL / fname, redial / fname)
    with open(redial / 'train_data.jsonl', 'rb') as f:  # a short file builds fast
        head = b''.join(line for _, line in zip(range(300), f))
    (redial / 'train_data.jsonl').write_bytes(head)
    corrupt(redial / name, how)
    before = snapshot(redial)
    datapath = tmp_path / 'data'
    proc = run_parlai(
        ['display_data', '-t', 'redial_crs', '--redial-path', redial]
        + ['-dp', datapath, '-n', 1],
        env={
            'CONKD_REDIAL_PATH': '',
            'CONKD_REDIAL_META_PATH': str(SHARED_REDIAL_META),
        },
        check=False,
    )
    line = error_line(proc)
    assert_names(line, redial / name, 'replace it with an intact copy of ReDial')
    assert says in line, line
    assert snapshot(redial) == before
    built = datapath / 'redial_crs'
    # no build, marked or partial
    assert not built.exists() or list(built.iterdir()) == []


@pytest.mark.parametrize(
    'name, how',
    [('valid.json', 'truncated'), ('catalog.json', 'empty')],
    ids=['fold-truncated', 'catalog-empty'],
)
def test_a_damaged_build_of_the_data_says_to_delete_it(zoo, tmp_path, name, how):
    """The processed copy under ``<datapath>/redial_crs/`` that every run reads."""
    datapath, zoo_dir, env = zoo
    own = tmp_path / 'data'
    shutil.copytree(datapath / 'redial_crs', own / 'redial_crs')
    (build,) = [p for p in (own / 'redial_crs').iterdir() if (p / '.built').is_file()]
    corrupt(build / name, how)
    before = snapshot(own)
    line = error_line(eval_model(zoo_dir / RANKER, own, env))
    assert_names(line, build / name, f'delete {build}: the next run builds it again')
    assert snapshot(own) == before
