"""The projects/conkd scripts run the zoo recipe (issue #23): every ``parlai`` command they would
run, checked against ``recipe.train_args`` of the default recipe.

Each script takes the recipe's values and names the ones it sets otherwise on purpose, so a recipe
change moves the scripts with it, and a flag the recipe gains fails here until the script takes it
or names it. Nothing is trained: the scripts' runner (``_common.parlai`` / ``start``) is replaced
by a recorder that writes the files a script reads back.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from parlai_conkd.redial.build import ENV_META_PATH, ENV_PATH
from parlai_conkd.zoo.conkd import recipe

SCRIPTS = Path(__file__).resolve().parents[2] / 'projects' / 'conkd'
ZOO = recipe.RECIPES['default']
#: the short option names the scripts and the recipe use, by their long names
ALIASES = {
    '-t': '--task',
    '-m': '--model',
    '-mf': '--model-file',
    '-dp': '--datapath',
    '-dt': '--datatype',
    '-eps': '--num-epochs',
    '-bs': '--batchsize',
    '-lr': '--learningrate',
    '-veps': '--validation-every-n-epochs',
    '-vstep': '--validation-every-n-steps',
    '-vmt': '--validation-metric',
    '-vmm': '--validation-metric-mode',
    '-vp': '--validation-patience',
}


def _long(flags):
    return {ALIASES.get(flag, flag) for flag in flags}


def _pairs(args):
    """``{long flag: value}`` of a flag/value argument list (a repeated flag: the last value, as
    parlai reads it); a ``train_model``/``eval_model`` in front is dropped."""
    args = [str(a) for a in args]
    if args and not args[0].startswith('-'):
        args = args[1:]
    assert len(args) % 2 == 0 and all(a.startswith('-') for a in args[::2]), args
    return {
        ALIASES.get(flag, flag): value for flag, value in zip(args[::2], args[1::2])
    }


def follows(command, zoo_args, different=(), left_out=()):
    """``command`` gives every flag of ``zoo_args`` the recipe's value, except the flags named as
    set otherwise (``different``: passed, with its own value) or not passed (``left_out``): a flag
    of the recipe that is neither taken nor named fails. Returns ``command``'s flags."""
    mine, zoo = _pairs(command), _pairs(zoo_args)
    different, left_out = _long(different), _long(left_out)
    assert not (different | left_out) - set(zoo), 'names a flag the recipe does not set'
    for flag, value in zoo.items():
        if flag in left_out:
            assert flag not in mine, flag
        elif flag in different:
            assert flag in mine, flag
        else:
            assert mine.get(flag) == value, (flag, mine.get(flag), value)
    return mine


@pytest.fixture
def load(monkeypatch):
    """Import a projects/conkd script as a module (its folder on ``sys.path``, as when run)."""
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.delenv(recipe.ENV_RECIPE, raising=False)

    def load(name):
        spec = importlib.util.spec_from_file_location(name, SCRIPTS / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def commands(load, monkeypatch):
    """The ``parlai`` commands the scripts run, recorded instead of run (with the files a real run
    leaves that the scripts read back: reports, trainstats)."""
    common = load('_common')
    monkeypatch.setitem(sys.modules, '_common', common)
    recorded = []

    def record(args, log_path=None, env=None, echo=False):
        args = [str(a) for a in args]
        recorded.append(args)
        if '--report-filename' in args:
            report = Path(args[args.index('--report-filename') + 1])
            report.write_text(json.dumps({'report': {'ppl': 30.0, 'exs': 1}}))
        if args[0] == 'train_model':
            model_file = args[args.index('-mf') + 1]
            Path(model_file + '.trainstats').write_text('{}')
        return 1.0

    monkeypatch.setattr(common, 'parlai', record)
    monkeypatch.setattr(common, 'start', lambda args, log, env=None: record(args))
    monkeypatch.setattr(common, 'wait', lambda running: 1.0)
    return recorded


def test_rec_teacher_ablation_is_the_zoo_rec_teacher(
    load, commands, tmp_path, monkeypatch
):
    monkeypatch.setenv(ENV_PATH, 'redial')  # the data, by the names the task reads
    monkeypatch.setenv(ENV_META_PATH, 'meta')
    script = load('rec_teacher_results')
    script.temperature_of = lambda model_file: 1.0
    zoo_variant = next(name for name in script.VARIANTS if '(zoo)' in name)
    script.main(
        [
            *('--out-dir', str(tmp_path), '--datapath', 'data'),
            *('--variants', zoo_variant, '--seeds', str(recipe.SEED)),
        ]
    )
    train = next(c for c in commands if c[0] == 'train_model')
    model_file = train[train.index('-mf') + 1]
    zoo = recipe.train_args('rec_teacher', model_file, 'data', recipe='default')
    mine = follows(train, zoo, left_out=script.LEFT_OUT)
    assert (mine['--redial-path'], mine['--redial-meta-path']) == ('redial', 'meta')
    assert [c[0] for c in commands] == ['train_model', *['eval_model'] * 3]


def test_dialogue_teacher_results_names_where_it_is_not_the_zoo(
    load, commands, tmp_path
):
    script = load('dialogue_teacher_results')
    (tmp_path / 'redial').mkdir()
    (tmp_path / 'redial' / 'train_data.jsonl').write_text('')
    out = tmp_path / 'run'
    script.main(
        [
            *('--redial-path', str(tmp_path / 'redial'), '--out', str(out)),
            *('--json', str(tmp_path / 'result.json')),
        ]
    )
    train, evaluate = commands
    zoo = recipe.train_args(
        'dialogue_teacher',
        str(out / 'model'),
        str(out / 'data'),
        {'rec_teacher': 'rec'},
        recipe='default',
    )
    mine = follows(train, zoo, script.DIFFERENT, script.LEFT_OUT)
    # the evaluation truncates as the training did
    for flag in ('--text-truncate', '--label-truncate', '--truncate'):
        assert _pairs(evaluate)[flag] == mine[flag]
    recorded = json.loads((tmp_path / 'result.json').read_text())['commands']
    assert recorded['train'].split()[1:] == train


@pytest.mark.parametrize('use_kg', [True, False])
def test_student_results_vary_only_seed_and_gate(
    load, commands, tmp_path, monkeypatch, use_kg
):
    from parlai_conkd.zoo.conkd import builder

    if use_kg:
        monkeypatch.setenv(ENV_META_PATH, 'meta')
    else:
        monkeypatch.delenv(ENV_META_PATH, raising=False)
    monkeypatch.setattr(builder, 'ensure', lambda datapath, models: None)
    script = load('student_results')
    datapath = tmp_path / 'data'
    spec = tmp_path / 'spec.json'
    script.main(['-dp', str(datapath), '--spec', str(spec)])
    teachers = {
        m: builder.model_file(str(datapath), m)
        for m in ('rec_teacher', 'dialogue_teacher')
    }
    trained = {}
    for command in commands:
        mine = _pairs(command)
        model = mine['--model'].replace('conkd_', '')
        trained.setdefault(model, []).append(mine)
        if model in ('popularity', 'repeat'):  # baselines: no recipe
            continue
        zoo_model = mine.get('--gate') if model == 'student' else model
        if zoo_model in ('none', 'static'):
            zoo_model = 'soft'  # the other gates: the soft student's arguments
        zoo = recipe.train_args(
            zoo_model,
            mine['--model-file'],
            str(datapath),
            teachers,
            use_kg=use_kg,
            recipe='default',
        )
        varied = {'--seed', '--gate'} if model == 'student' else {'--seed'}
        follows(command, zoo, different=varied & set(_pairs(zoo)))
        assert set(mine) == set(_pairs(zoo))
    # seeds 1 and 2 of the rec teacher, both baselines, every gate and seed but the zoo's own
    seeds = {int(m['--seed']) for m in trained['rec_teacher']}
    assert seeds == {1, 2} and recipe.SEED not in seeds
    gates = sorted((m['--gate'], m['--seed']) for m in trained['student'])
    assert gates == sorted(
        [(g, s) for g in ('none', 'static') for s in '012']
        + [(g, s) for g in ('hard', 'soft') for s in '12']
    )
    # the zoo-decoding row decodes as the zoo models were saved (--item-decoding: saved with them)
    row = next(
        r for r in json.loads(spec.read_text())['rows'] if 'zoo decoding' in r['name']
    )
    follows(row['args'], ZOO.decoding, left_out={'--item-decoding'})


def test_student_benchmark_zoo_shape_is_the_recipe(load, commands, monkeypatch):
    import parlai.core.agents
    import parlai.core.params

    script = load('student_benchmark')
    # the zoo's shape with the benchmark's own truncation and dropout; the generator's training
    # settings are not part of a shape (make_agent passes the optimizer, --batchsize the batch)
    training = ['--dict-minfreq', '-bs', '--optimizer', '-lr', '--lr-scheduler']
    follows(
        script.SHAPES['zoo'],
        ZOO.generator,
        different=script.TRUNCATION[::2],
        left_out=[*training, '--skip-generation'],
    )

    class Parser:
        def __init__(self, *args):
            pass

        def parse_args(self, args):
            return args

    monkeypatch.setattr(parlai.core.params, 'ParlaiParser', Parser)
    monkeypatch.setattr(parlai.core.agents, 'create_agent', lambda opt: opt)
    agent_args = script.make_agent('w', [], script.SHAPES['zoo'], 'soft', 'r', 'd', 8)
    assert _pairs(agent_args)['--optimizer'] == _pairs(ZOO.generator)['--optimizer']
    assert (
        _pairs(agent_args)['--learningrate'] == _pairs(ZOO.generator)['--learningrate']
    )


def test_reproducibility_check_runs_the_recipe_shortened(
    load, commands, tmp_path, monkeypatch
):
    from parlai_conkd.zoo.conkd import builder

    datapath = tmp_path / 'data'
    teachers = {}
    for model in ('rec_teacher', 'dialogue_teacher'):
        teachers[model] = builder.model_file(str(datapath), model)
        Path(teachers[model]).parent.mkdir(parents=True, exist_ok=True)
        Path(teachers[model]).write_text('')
    monkeypatch.setattr(builder, 'weights_sha256', lambda path: 'same')
    script = load('reproducibility_check')
    script.main(['-dp', str(datapath), '--work-dir', str(tmp_path / 'work')])
    assert len(commands) == 2 * len(script.MODELS)
    for command in commands:
        model_file = command[command.index('-mf') + 1]
        model = Path(model_file).parent.name[:-2]
        zoo = recipe.train_args(model, model_file, str(datapath), teachers)
        assert command[1 : 1 + len(zoo)] == zoo  # the recipe's arguments, to the letter
        shortened = set(_pairs(command[1 + len(zoo) :]))
        assert shortened <= _long(
            ['--num-epochs', '--max-train-steps', '-vstep', '--validation-max-exs']
        )


def test_scripts_read_the_data_paths_by_the_package_names(load, monkeypatch):
    monkeypatch.setenv(ENV_PATH, '/from/env')
    monkeypatch.setenv(ENV_META_PATH, '/from/env-meta')
    args = load('student_benchmark').parse_args([])
    assert (args.redial_path, args.redial_meta_path) == ('/from/env', '/from/env-meta')


def test_runner_logs_and_fails_with_the_log_tail(load, tmp_path, monkeypatch):
    common = load('_common')
    # stands in for the parlai command: prints, exits with $1
    fake = tmp_path / 'parlai'
    fake.write_text('#!/bin/sh\necho "ran $*"; echo "to stderr" >&2; exit "$1"\n')
    fake.chmod(0o755)
    monkeypatch.setattr(common, 'PARLAI', str(fake))
    log = tmp_path / 'ok.log'
    assert common.parlai([0, 'train_model'], str(log)) >= 0
    assert log.read_text() == 'ran 0 train_model\nto stderr\n'
    with pytest.raises(common.ParlaiFailed) as failed:
        common.parlai([3, 'eval_model', '-mf', 'a b'], str(tmp_path / 'bad.log'))
    message = str(failed.value)
    assert "parlai 3 eval_model -mf 'a b'" in message and 'exit 3' in message
    assert message.endswith('ran 3 eval_model -mf a b\nto stderr\n')  # the log's end
    running = [common.start([code], str(tmp_path / f'{code}.log')) for code in (0, 4)]
    assert common.wait(running[0]) >= 0
    with pytest.raises(common.ParlaiFailed, match='exit 4'):
        common.wait(running[1])

    def main():
        common.parlai([5], str(tmp_path / 'main.log'))

    with pytest.raises(SystemExit) as exited:
        common.run_main(main)
    assert 'exit 5' in str(exited.value.code) and 'ran 5' in str(exited.value.code)


def test_same_zoo_weights_compares_every_tensor_exactly(load, tmp_path, capsys):
    """projects/conkd/same_zoo_weights.py: identical builds exit 0; one changed weight, 1."""
    same = load('same_zoo_weights')
    weights = {'a': torch.arange(6.0).reshape(2, 3), 'b': torch.zeros(0)}

    def build(datapath, change=0.0):
        folder = datapath / 'models' / 'conkd'
        folder.mkdir(parents=True)
        for model in same.MODELS:
            state = {k: v.clone() for k, v in weights.items()}
            if model == 'soft':
                state['a'][1, 2] += change
            torch.save({'model': state}, folder / model)
        return str(datapath)

    before, after = build(tmp_path / 'x'), build(tmp_path / 'y')
    changed = build(tmp_path / 'z', change=0.25)
    assert same.main([before, after, '--json', str(tmp_path / 'same.json')]) == 0
    table = json.loads((tmp_path / 'same.json').read_text())['models']
    assert table['soft'] == {
        'tensors': 2,
        'weights': 6,
        'identical': True,
        'max_abs_diff': 0.0,
    }
    assert same.main([before, changed]) == 1
    assert 'soft' in capsys.readouterr().out
    assert same.compare(weights, {'a': weights['a']})['max_abs_diff'] is None
    with pytest.raises(SystemExit, match='no such model file'):
        same.main([before, str(tmp_path / 'missing')])


def test_what_gap_variants_and_table(load, monkeypatch):
    """projects/conkd/what_gap.py (issue #24): variant flags parsed by name; bad ones refused by
    entry; the table's means, sample sd and the tf-ReR@10 / rec R@10 ratio."""
    monkeypatch.setitem(sys.modules, '_common', load('_common'))
    what_gap = load('what_gap')
    assert what_gap.parse_variants('base=,kd=--rec-item-kd-weight:1.0 --seed:3') == {
        'base': [],
        'kd': ['--rec-item-kd-weight', '1.0', '--seed', '3'],
    }
    for bad in ('base', 'kd=--rec-item-kd-weight', 'kd=rec:1'):
        with pytest.raises(ValueError, match='--variants'):
            what_gap.parse_variants(bad)
    rows = {
        'soft': [{'tf_rer@10': 0.1, 'ppl': 20.0}, {'tf_rer@10': 0.2, 'ppl': 22.0}],
        'pipeline': [{'rer@10': 0.09}],
    }
    lines = what_gap.table(rows, rec_r10=0.2).splitlines()
    assert lines[2].startswith('| soft | 2 | 0.150 ± 0.071 |')
    assert lines[2].endswith('| 21.000 ± 1.414 | 0.75 x |')
    assert lines[3] == '| pipeline | 1 |  | 0.090 |  |  |  |  |  |  |'


def test_what_gap_evaluates_the_fold_it_is_given_and_reuses_its_report(
    load, monkeypatch, tmp_path
):
    """``--fold test`` reports on the shared test fold (its own report file, so a valid-fold report
    of the same model is never read as a test one)."""
    monkeypatch.setitem(sys.modules, '_common', load('_common'))
    what_gap = load('what_gap')
    calls = []

    def fake_parlai(args, log_path, echo=False):
        calls.append(args)
        report = args[args.index('--report-filename') + 1]
        with open(report, 'w') as f:
            json.dump({'report': {'rer@10': 0.1 if '-dt' in args else 0.0}}, f)

    monkeypatch.setattr(what_gap.common, 'parlai', fake_parlai)
    (tmp_path / 'm.valid.json').write_text(json.dumps({'report': {'rer@10': 0.5}}))
    got = what_gap.evaluate('model', 'data', str(tmp_path), 'm', ['-t', 'x'], 'test')
    assert got == {'rer@10': 0.1} and len(calls) == 1
    assert calls[0][calls[0].index('-dt') + 1] == 'test'
    assert (tmp_path / 'm.test.json').is_file()
    assert what_gap.evaluate('model', 'data', str(tmp_path), 'm', [], 'test') == got
    assert len(calls) == 1  # reused
    assert what_gap.evaluate('model', 'data', str(tmp_path), 'm', []) == {'rer@10': 0.5}
