"""The start-up hook: short names for agents/tasks/zoo in every process, lazily, harmlessly."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import REPO_ROOT, run_parlai

PY = sys.executable


def _python(code, env=None, executable=PY):
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [executable, '-c', textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
    )


def test_hook_is_installed_at_start_without_importing_parlai_or_torch():
    proc = _python("""
        import json, sys
        print(json.dumps({
            'finder': any(getattr(f, 'marker', None) == 'parlai_conkd' for f in sys.meta_path),
            'parlai': any(m == 'parlai' or m.startswith('parlai.') for m in sys.modules),
            'torch': 'torch' in sys.modules,
        }))
    """)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {'finder': True, 'parlai': False, 'torch': False}


def test_stock_parlai_names_are_never_shadowed():
    proc = _python("""
        import parlai.agents.transformer.transformer as t, parlai.tasks.integration_tests.agents as a
        print(t.__file__); print(a.__file__)
    """)
    assert proc.returncode == 0, proc.stderr
    assert all('site-packages/parlai/' in line for line in proc.stdout.split())


def test_unknown_names_still_fail_like_parlai():
    proc = _python("import parlai.agents.no_such_agent_here")
    assert proc.returncode != 0
    assert 'ModuleNotFoundError' in proc.stderr


def _write_throwaway_plugin(root):
    """A plugin mounted through parlai_conkd's namespaces: one agent, one task, one zoo entry."""
    files = {
        'parlai_conkd/agents/tmp_echo/__init__.py': '',
        'parlai_conkd/agents/tmp_echo/tmp_echo.py': '''
            from parlai.core.agents import Agent

            class TmpEchoAgent(Agent):
                """Answers every message with its text reversed."""
                def __init__(self, opt, shared=None):
                    super().__init__(opt, shared)
                    self.id = 'TmpEcho'

                def act(self):
                    return {'id': self.id, 'text': self.observation['text'][::-1], 'episode_done': False}
        ''',
        'parlai_conkd/tasks/tmp_task/__init__.py': '',
        'parlai_conkd/tasks/tmp_task/agents.py': '''
            from parlai.core.teachers import DialogTeacher

            class DefaultTeacher(DialogTeacher):
                def __init__(self, opt, shared=None):
                    opt = dict(opt); opt['datafile'] = opt['datatype'].split(':')[0]
                    self.id = 'tmp_task'
                    super().__init__(opt, shared)

                def setup_data(self, datafile):
                    for i in range(3):
                        yield {'text': f'abc{i}', 'labels': [f'{i}cba']}, True

            class LoudTeacher(DefaultTeacher):
                def setup_data(self, datafile):
                    for msg, new in super().setup_data(datafile):
                        yield {'text': msg['text'].upper(), 'labels': [l.upper() for l in msg['labels']]}, new
        ''',
        'parlai_conkd/zoo/tmp_zoo/__init__.py': '',
        'parlai_conkd/zoo/tmp_zoo/echo.py': '''
            import json, os

            def download(datapath):
                out = os.path.join(datapath, 'models', 'tmp_zoo', 'echo')
                os.makedirs(out, exist_ok=True)
                open(os.path.join(out, 'model'), 'w').close()
                with open(os.path.join(out, 'model.opt'), 'w') as f:
                    json.dump({'model': 'tmp_echo'}, f)
        ''',
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return {'PYTHONPATH': str(root)}


@pytest.mark.cli
def test_short_names_resolve_through_the_real_cli(tmp_path):
    env = _write_throwaway_plugin(tmp_path / 'plugin')
    out = run_parlai(
        [
            'eval_model',
            '-t',
            'tmp_task',
            '-m',
            'tmp_echo',
            '-dp',
            tmp_path / 'data',
            '--display-examples',
            'true',
        ],
        env=env,
    )
    # the throwaway agent answered the throwaway task
    assert '2cba' in out.stdout + out.stderr
    out = run_parlai(
        [
            'eval_model',
            '-t',
            'tmp_task:loud',
            '-mf',
            'zoo:tmp_zoo/echo/model',
            '-dp',
            tmp_path / 'data',
            '--display-examples',
            'true',
        ],
        env=env,
    )
    # teacher suffix syntax and zoo: both resolved
    assert '1CBA' in out.stdout + out.stderr
    assert (tmp_path / 'data' / 'models' / 'tmp_zoo' / 'echo' / 'model.opt').is_file()


def test_aliases_share_one_module_object(tmp_path):
    env = _write_throwaway_plugin(tmp_path / 'plugin')
    proc = _python(
        """
        import parlai.agents.tmp_echo.tmp_echo as via_parlai
        import parlai_conkd.agents.tmp_echo.tmp_echo as via_ours
        assert via_parlai is via_ours, (via_parlai, via_ours)
        assert via_ours.__spec__.name == 'parlai_conkd.agents.tmp_echo.tmp_echo'
        from parlai.core.loader import load_agent_module, load_teacher_module
        assert load_agent_module('tmp_echo') is via_ours.TmpEchoAgent
        assert load_teacher_module('tmp_task:loud').__name__ == 'LoudTeacher'
        print('ok')
    """,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == 'ok'


@pytest.fixture(scope='module')
def regular_install(tmp_path_factory):
    """A non-editable `pip install .` into a bare venv that has no ParlAI and no torch."""
    root = tmp_path_factory.mktemp('regular')
    venv = root / 'venv'
    subprocess.run([PY, '-m', 'venv', '--without-pip', str(venv)], check=True)
    site = subprocess.run(
        [
            str(venv / 'bin' / 'python'),
            '-c',
            'import sysconfig; print(sysconfig.get_paths()["purelib"])',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    subprocess.run(
        [
            PY,
            '-m',
            'pip',
            'install',
            '-q',
            '--no-deps',
            '--no-build-isolation',
            '--target',
            site,
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=root,
    )
    return venv / 'bin' / 'python', site


def test_regular_install_ships_the_hook_and_is_a_no_op_without_parlai(regular_install):
    python, site = regular_install
    assert os.path.isfile(os.path.join(site, 'parlai_conkd_startup.pth'))
    assert not os.path.exists(os.path.join(site, 'tasks')) and not os.path.exists(
        os.path.join(site, 'zoo')
    )
    assert os.path.isfile(os.path.join(site, 'parlai_conkd', 'tasks', '__init__.py'))
    proc = _python(
        """
        import sys
        assert any(getattr(f, 'marker', None) == 'parlai_conkd' for f in sys.meta_path)
        try:
            import parlai.agents.conkd_student
        except ModuleNotFoundError as exc:
            print('missing', exc.name)
    """,
        executable=str(python),
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ''  # the hook never prints or raises at start-up
    assert proc.stdout.strip() == 'missing parlai'
