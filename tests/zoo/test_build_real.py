"""Real builds of the tiny recipe on the shared ReDial (slow): the zoo family from the recipe,
`parlai interactive` / `eval_model` on `zoo:conkd/...`, the gate picture, kill mid-build + rerun.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from parlai_conkd.zoo.conkd import builder, recipe
from tests.support import (
    SHARED_REDIAL,
    SHARED_REDIAL_META,
    TINY_CHAT,
    ZOO_ENV,
    assert_png,
    run_parlai,
    shared_meta_or_skip,
    shared_redial_or_skip,
    tmp_dirs,
    visible_model_files,
)

pytestmark = pytest.mark.slow


def tiny_env():
    shared_redial_or_skip()
    shared_meta_or_skip()
    env = {k: v for k, v in os.environ.items() if k not in ZOO_ENV}
    env.update(
        CONKD_ZOO_RECIPE='tiny',
        CONKD_REDIAL_PATH=str(SHARED_REDIAL),
        CONKD_REDIAL_META_PATH=str(SHARED_REDIAL_META),
        OMP_NUM_THREADS='1',
        PYTHONUNBUFFERED='1',
    )
    return env


def builder_cmd(datapath, *models):
    return [
        sys.executable,
        '-m',
        'parlai_conkd.zoo.conkd.builder',
        'ensure',
        '-dp',
        str(datapath),
        *models,
    ]


@pytest.fixture(scope='module')
def tiny_zoo(tmp_path_factory):
    env = tiny_env()
    datapath = tmp_path_factory.mktemp('tiny_zoo')
    proc = subprocess.run(
        builder_cmd(datapath), env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return datapath, env, proc


def test_tiny_family_built_from_the_recipe(tiny_zoo):
    datapath, env, proc = tiny_zoo
    for step, model in enumerate(recipe.MODELS, start=1):
        assert f'step {step}/4: training {model}' in proc.stderr
        assert builder.is_present(str(datapath), model, 'tiny')
        assert os.path.isfile(builder.model_file(str(datapath), model) + '.opt')
    assert proc.stdout.split() == [
        builder.model_file(str(datapath), m) for m in recipe.MODELS
    ]
    stamp = builder.read_stamp(builder.zoo_dir(str(datapath)), 'hard')
    assert stamp['use_kg'] is True and '--gate' in stamp['train_args']
    assert tmp_dirs(datapath) == []


@pytest.mark.cli
def test_interactive_session_with_piped_input(tiny_zoo):
    datapath, env, _ = tiny_zoo
    messages = [
        'Hi! I loved Frozen (2013), anything like it?',
        '',
        'so ' * 2000,
        '[EXIT]',
    ]
    proc = run_parlai(
        [
            'interactive',
            '-mf',
            'zoo:conkd/soft',
            '-dp',
            datapath,
            '--show-recs',
            '3',
            '--show-gates',
            'true',
            *TINY_CHAT,
        ],
        env=env,
        input='\n'.join(messages) + '\n',
        timeout=300,
    )
    out = proc.stdout
    assert 'Traceback' not in proc.stderr
    assert out.count('Enter Your Message:') >= 3
    assert 'top items (recommendation teacher, for the conversation so far):' in out
    assert 'understood: Frozen (2013)' in out
    assert 'gate per token' in out or 'no generated tokens to show a gate for' in out
    # items shown as titles
    assert '__item_' not in out.split('Enter Your Message:', 1)[1]


@pytest.mark.cli
def test_eval_model_resolves_the_teachers_through_the_zoo(tiny_zoo):
    datapath, env, _ = tiny_zoo
    proc = run_parlai(
        [
            'eval_model',
            '-mf',
            'zoo:conkd/hard',
            '-dp',
            datapath,
            '-t',
            'redial_crs',
            '-dt',
            'valid',
            '--redial-max-dialogues',
            '5',
            '--skip-generation',
            'true',
            '-bs',
            '8',
            '--label-truncate',
            '12',
            '--text-truncate',
            '64',
            '--truncate',
            '64',
        ],
        env=env,
        timeout=300,
    )
    assert 'kd_loss' in proc.stdout + proc.stderr


def test_plot_gates_command_writes_a_png(tiny_zoo, tmp_path):
    datapath, env, _ = tiny_zoo
    out = tmp_path / 'gates.png'
    subprocess.run(
        [
            sys.executable,
            '-m',
            'parlai_conkd.explain',
            'plot-gates',
            '-mf',
            'zoo:conkd/hard',
            '-dp',
            str(datapath),
            '--dialogue',
            '1',
            '--max-turns',
            '3',
            '--out',
            str(out),
        ],
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert_png(out)


def test_killed_build_is_not_taken_as_done_and_a_rerun_completes(tmp_path):
    env = tiny_env()
    datapath = tmp_path / 'dp'
    proc = subprocess.Popen(
        builder_cmd(datapath, 'rec_teacher'),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    log = None
    # wait until training has really started
    while time.time() < deadline and log is None:
        time.sleep(1)
        for name in tmp_dirs(datapath):
            candidate = os.path.join(
                datapath, 'models', name, 'rec_teacher' + builder.LOG_SUFFIX
            )
            if os.path.isfile(candidate) and os.path.getsize(candidate) > 2000:
                log = candidate
    assert log is not None, 'the build never started training'
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    time.sleep(3)
    size = os.path.getsize(log)
    time.sleep(3)
    assert (
        os.path.getsize(log) == size
    ), 'the training process outlived the killed builder'
    assert (
        builder.why_not_present(str(datapath), 'rec_teacher', 'tiny') == 'not installed'
    )
    assert visible_model_files(datapath, 'rec_teacher') == []
    rerun = subprocess.run(
        builder_cmd(datapath, 'rec_teacher'),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert builder.is_present(str(datapath), 'rec_teacher', 'tiny')
    assert tmp_dirs(datapath) == []  # the killed build's directory was cleaned up
