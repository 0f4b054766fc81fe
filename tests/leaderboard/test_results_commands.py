"""projects/conkd/_common.py, the helpers the projects/conkd scripts share: running ``parlai``
with its output in a log, a failure ending the script with the log's end."""

import importlib.util
from pathlib import Path

import pytest

from parlai_conkd.zoo.conkd import recipe

SCRIPTS = Path(__file__).resolve().parents[2] / 'projects' / 'conkd'


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


def test_runner_logs_and_fails_with_the_log_tail(load, tmp_path, monkeypatch):
    common = load('_common')
    fake = (
        tmp_path / 'parlai'
    )  # stands in for the parlai command: prints, exits with $1
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
