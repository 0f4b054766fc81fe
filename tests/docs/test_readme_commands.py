"""Every command a user copies from the READMEs and docs/, run as written (issue #22).

The commands are read from the fenced shell blocks of README.md, projects/conkd/README.md and
docs/*.md (continuation lines joined). Each one is either run, in document order, by bash in a
sandbox laid out like a checkout (``main/`` is the working directory, ``../shared`` the shared
data, ``data/`` the datapath), or skipped with the reason written below; a command in no list fails
the test, so a new README command cannot go untested silently.

The zoo under ``data/`` is built from the ``smoke`` recipe: the default recipe's saved options
(decoding included: class decoding, delayed beam 5) at the tiny size. A zoo saved with other
options (the ``tiny`` recipe's token greedy decoding) hid a crash of the README's first
``eval_model`` command on the real zoo. A run may append arguments that shrink its budget (fewer
examples, steps, the smoke sizes); those are listed with each command.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pytest

from parlai_conkd.zoo.conkd import builder, recipe
from tests.support import REPO_ROOT, SHARED_DATA

pytestmark = pytest.mark.cli

DOCS = ['README.md', 'projects/conkd/README.md'] + sorted(
    str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / 'docs').glob('*.md')
)
STARTS = ('parlai ', 'python -m parlai_conkd', 'python projects/', 'bash scripts/')
_FENCE = re.compile(r'^\s*```(\w*)\s*$')

#: the smoke recipe's sizes: appended to a command that trains from the smoke zoo's dialogue teacher
SMOKE_SIZES = list(recipe.RECIPES['smoke'].generator[:8])  # --n-layers .. --ffn-size
FEW_STEPS = ['--max-train-steps', '4', '-veps', '-1', '--validation-max-exs', '8']
FEW_EXAMPLES = ['--num-examples', '8']
CHAT = 'Hi! I loved Frozen (2013), anything like it?\n[EXIT]\n'


@dataclass(frozen=True)
class Run:
    """Run the command with ``append`` added (a smaller budget), ``stdin`` typed, ``replace``
    (old, new) applied to its text, and check ``expect`` in its output."""

    append: Sequence[str] = ()
    stdin: Optional[str] = None
    replace: Sequence[tuple] = ()
    expect: Sequence[str] = ()
    #: run with ``-m slow`` only (the default run's 20-minute budget)
    slow: bool = False


@dataclass(frozen=True)
class Skip:
    reason: str


#: How each command is checked, by the first pattern (a regex searched in the command) it matches.
PLAN = [
    # ------------------------------------------------------------------ not run here
    (
        r'gpu_check\.sh',
        Skip(
            'needs a CUDA GPU (tests/foundation/test_gpu_check_script.py runs its CPU dry run)'
        ),
    ),
    (
        r'--hf-model-path (/models/|microsoft/)',
        Skip(
            'needs DialoGPT-small on disk or from the hub; the HF backbone is run on a tiny local GPT-2 by tests/dialogue/test_hf_model_path.py'
        ),
    ),
    (
        r'-mf data/models/conkd/',
        Skip(
            'the recipe as printed by python -m parlai_conkd.zoo.conkd.recipe (checked by tests/zoo/test_recipe_readme.py and test_recipe_paper.py); the builder runs exactly these arguments to build the smoke zoo above'
        ),
    ),
    (
        r'^python projects/conkd/what_gap\.py -dp',
        Skip(
            'builds the default zoo teachers and trains a student per variant and seed (an hour '
            'and more); tests/leaderboard/test_results_commands.py checks its variants and table'
        ),
    ),
    (
        r'^python projects/conkd/student_results\.py -dp',
        Skip('trains students for 3 seeds (hours); its --summary form is run below'),
    ),
    (
        r'^python -m parlai_conkd\.leaderboard',
        Skip(
            'evaluates every row of a results table on the whole test fold (tens of minutes); tests/leaderboard/test_cli.py runs the same command on two tiny models'
        ),
    ),
    (
        r'interactive_web',
        Skip(
            'serves until stopped; tests/interactive/test_chat_cli.py drives it over HTTP'
        ),
    ),
    (
        r'human_eval (serve|mturk)',
        Skip(
            'a web server / Amazon Mechanical Turk with credentials; tests/human_eval drives both against local stand-ins'
        ),
    ),
    (
        r'human_eval (logs|pairings|analyze)',
        Skip(
            'the human-evaluation flow end to end is tests/human_eval/test_cli.py (real logs of tiny models)'
        ),
    ),
    # ------------------------------------------------------------------ run
    (r'^parlai display_data', Run()),
    (r'^parlai eval_model ', Run(append=FEW_EXAMPLES, expect=['rer@10'])),
    (
        r'^parlai display_model ',
        Run(append=FEW_EXAMPLES, expect=['model:']),
    ),
    (r'^parlai interactive ', Run(stdin=CHAT, expect=['Enter Your Message:'])),
    (
        r'^parlai train_model -t redial_crs -m conkd_student',
        Run(append=[*SMOKE_SIZES, *FEW_STEPS]),
    ),
    (
        r'^python projects/conkd/student_results\.py --summary',
        Run(expect=['| student, gate soft |']),
    ),
    (r'builder ensure -dp data soft', Run(expect=['data/models/conkd/soft'])),
    (r'builder ensure -dp data', Run(expect=['data/models/conkd/hard'])),
    (r'builder status', Run(expect=['present'])),
    (r'builder pack', Run()),
    (r'parlai_conkd\.scripts\.plot_gates', Run(append=['-dp', 'data'])),
    (r'parlai_conkd\.scripts\.plot_results', Run()),
    (
        r'^python projects/conkd/student_benchmark\.py',
        Run(
            append=[
                '--shapes',
                'small',
                '--batches',
                '2',
                '--rounds',
                '1',
                '--max-dialogues',
                '40',
                '--skip-rss',
                '--out',
                'runs/benchmark.json',
            ],
            # a benchmark (about 45 s even this small); its shapes and options are unit-tested by
            # default (tests/leaderboard/test_results_commands.py)
            slow=True,
        ),
    ),
]


def doc_commands():
    """(file:line, command) of every command in a fenced shell block of the docs, in order."""
    found = []
    for doc in DOCS:
        in_block, lang, pending, start = False, '', '', 0
        for number, line in enumerate((REPO_ROOT / doc).read_text().splitlines(), 1):
            fence = _FENCE.match(line)
            if fence:
                in_block, lang, pending = not in_block, fence.group(1), ''
                continue
            if not in_block or lang not in ('bash', 'sh', 'shell', ''):
                continue
            text = line.strip()
            if pending:
                text = f'{pending} {text}'
            else:
                start = number
            if text.endswith('\\'):
                pending = text[:-1].rstrip()
                continue
            pending = ''
            if text.startswith(STARTS):
                found.append((f'{doc}:{start}', text))
    return found


def plan_for(command: str):
    for pattern, action in PLAN:
        if re.search(pattern, command):
            return action
    return None


COMMANDS = doc_commands()


def test_every_doc_command_is_run_or_skipped_with_a_reason():
    unplanned = [f'{where}: {cmd}' for where, cmd in COMMANDS if plan_for(cmd) is None]
    assert not unplanned, 'add these commands to PLAN:\n' + '\n'.join(unplanned)
    assert sum(isinstance(plan_for(c), Run) for _, c in COMMANDS) >= 15


@pytest.fixture(scope='module')
def sandbox(tmp_path_factory, smoke_zoo):
    """``<tmp>/main`` (cwd: projects/ linked, data/ = a copy of the smoke zoo's datapath) beside
    ``<tmp>/shared``."""
    zoo_datapath, _ = smoke_zoo
    root = tmp_path_factory.mktemp('checkout')
    main = root / 'main'
    main.mkdir()
    (root / 'shared').symlink_to(SHARED_DATA.parent.resolve())
    (main / 'projects').symlink_to(REPO_ROOT / 'projects')
    # a copy: the commands write beside the models (data caches, a training run's dictionary)
    shutil.copytree(zoo_datapath, main / 'data', symlinks=True)
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith('CONKD_')}
    env.update(
        # `parlai` and `python` as in the venv
        PATH=f'{venv_bin}{os.pathsep}{env.get("PATH", "")}',
        CONKD_ZOO_RECIPE='smoke',
        CONKD_REDIAL_PATH='../shared/data/redial',  # as the README's set-up exports them
        CONKD_REDIAL_META_PATH='../shared/data/redial-meta',
        # commands without -dp: ParlAI's default datapath would be inside site-packages
        PARLAI_DATAPATH=str(main / 'data'),
        OMP_NUM_THREADS='1',
        PYTHONUNBUFFERED='1',
    )
    # what "train a dialogue teacher" in the README leaves under runs/ (its training command needs
    # DialoGPT; the smoke zoo's transformer teacher stands in for it)
    runs = main / 'runs' / 'dialogue_teacher'
    runs.mkdir(parents=True)
    zoo = Path(builder.zoo_dir(str(main / 'data')))
    for name in builder.model_files(str(zoo), 'dialogue_teacher'):
        if not name.endswith(builder.STAMP_SUFFIX):
            shutil.copy(zoo / name, runs / name.replace('dialogue_teacher', 'model', 1))
    return main, env


@pytest.mark.parametrize(
    'where,command',
    [
        pytest.param(w, c, id=w, marks=[pytest.mark.slow] if plan_for(c).slow else [])
        for w, c in COMMANDS
        if isinstance(plan_for(c), Run)
    ],
)
def test_doc_command_runs_as_written(sandbox, where, command):
    main, env = sandbox
    plan = plan_for(command)
    text = command
    for old, new in plan.replace:
        text = text.replace(old, new)
    if plan.append:
        text = text.split(' #', 1)[0] + ' ' + ' '.join(map(shlex.quote, plan.append))
    proc = subprocess.run(
        ['bash', '-c', text],
        cwd=main,
        env=env,
        input=plan.stdin or '',
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = proc.stdout + proc.stderr
    assert (
        proc.returncode == 0
    ), f'{where}: `{text}` exited {proc.returncode}\n{output[-5000:]}'
    assert 'Traceback' not in output, f'{where}: `{text}`\n{output[-5000:]}'
    for expected in plan.expect:
        assert (
            expected in output
        ), f'{where}: `{text}`: no {expected!r} in\n{output[-3000:]}'
