"""What makes a cached leaderboard run stale: the key over command, model files and data."""

import json

from parlai_conkd.leaderboard import runner


def _run(tmp_path, command_tail=('-dt', 'test')):
    model = tmp_path / 'model'
    if not model.exists():
        model.write_bytes(b'weights')
        (tmp_path / 'model.opt').write_text(
            json.dumps({'model': 'conkd_popularity', 'rec_seed': 3})
        )
    run = runner.Run(
        'pop', 0, str(model), str(model), 'ranker', [], str(tmp_path / 'work')
    )
    run.command = runner.parlai_command(
        [
            'eval_model',
            '-mf',
            str(model),
            *command_tail,
            '--report-filename',
            run.report_path,
        ]
    )
    return run


DATA = {'fold_sha256': 'a', 'catalog_sha256': 'b'}


def test_key_changes_with_model_bytes_opt_command_data_and_version(tmp_path):
    run = _run(tmp_path)
    key = runner.run_key(run, DATA, '0.1.0')
    assert runner.run_key(_run(tmp_path), DATA, '0.1.0') == key  # deterministic
    assert runner.run_key(_run(tmp_path, ('-dt', 'valid')), DATA, '0.1.0') != key
    assert runner.run_key(run, {**DATA, 'fold_sha256': 'c'}, '0.1.0') != key
    assert runner.run_key(run, DATA, '0.2.0') != key
    (tmp_path / 'model').write_bytes(b'weights, retrained')
    assert runner.run_key(run, DATA, '0.1.0') != key
    assert runner.model_seeds(str(tmp_path / 'model')) == {'rec_seed': 3}


def test_a_stamp_with_another_key_or_without_report_is_not_reused(tmp_path):
    run = _run(tmp_path)
    run.key = 'k1'
    (tmp_path / 'work').mkdir()
    (tmp_path / 'work' / 'run.json').write_text(
        json.dumps({'key': 'k1', 'seconds': 1.0})
    )
    assert runner.cached(run) is None  # no report
    (tmp_path / 'work' / 'report.json').write_text(
        json.dumps({'report': {'recall@1': 0.5}})
    )
    assert runner.cached(run)['report'] == {'recall@1': 0.5}
    run.key = 'k2'
    assert runner.cached(run) is None


def test_display_command_reads_like_the_cli(tmp_path):
    run = _run(tmp_path, ('--row-args', 'a b'))
    assert runner.display_command(run.command).startswith('parlai eval_model -mf ')
    assert "'a b'" in runner.display_command(run.command)
