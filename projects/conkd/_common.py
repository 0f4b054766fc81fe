"""What the projects/conkd scripts share: the zoo recipe's values, and running ``parlai`` with a log.

The scripts measure the zoo's models, so they take shapes, flags, budgets and decoding from the
recipe (parlai_conkd/zoo/conkd/recipe.py: ``ZOO``, ``option``, ``options``,
``recipe.train_args``, ``recipe.with_values``) and name the values they set otherwise on purpose:
a recipe change moves them with it (tests/leaderboard/test_results_commands.py checks each
script's commands against ``recipe.train_args``).

The scripts import this module as ``_common``: ``python projects/conkd/<script>.py`` puts this
folder on ``sys.path``.
"""

import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import IO, Callable, List, Mapping, Optional, Sequence

from parlai_conkd.zoo.conkd import recipe

#: the ``parlai`` command of this interpreter's environment
PARLAI = os.path.join(os.path.dirname(sys.executable), 'parlai')
#: the recipe the zoo is built with (``recipe.DEFAULT_RECIPE``), whose values the scripts quote
ZOO = recipe.RECIPES[recipe.DEFAULT_RECIPE]
#: how much of a failed command's log its error shows
LOG_TAIL_CHARS = 4000


# ------------------------------------------------------------------------------ recipe values
def option(args: Sequence[str], flag: str) -> str:
    """The value ``args`` (a recipe part, ``recipe.train_args``) gives ``flag``: the last one, as
    the ``parlai`` command line reads it. KeyError when ``args`` does not set ``flag``.
    """
    args = list(args)
    for i in range(len(args) - 2, -1, -1):
        if args[i] == flag:
            return args[i + 1]
    raise KeyError(f'{flag} is not set by {args}')


def options(args: Sequence[str], *flags: str) -> List[str]:
    """``flag, value`` for each of ``flags`` as ``args`` sets it, in the order of ``flags``."""
    return [token for flag in flags for token in (flag, option(args, flag))]


# ------------------------------------------------------------------------------ running parlai
class ParlaiFailed(RuntimeError):
    """A ``parlai`` command exited non-zero; the message names the command, its log and the log's
    end. ``run_main`` turns it into the script's exit message."""


def _failed(args: Sequence[str], code: int, log_path: Optional[str]) -> ParlaiFailed:
    message = f'parlai {shlex.join(args)}\nfailed (exit {code})'
    if log_path:
        with open(log_path, encoding='utf-8', errors='replace') as log:
            tail = log.read()[-LOG_TAIL_CHARS:]
        message += f'; the end of its log {log_path}:\n{tail}'
    return ParlaiFailed(message)


def _argv(args: Sequence[object]) -> List[str]:
    return [str(a) for a in args]


def parlai(
    args: Sequence[object],
    log_path: Optional[str] = None,
    env: Optional[Mapping[str, str]] = None,
    echo: bool = False,
) -> float:
    """Run ``parlai <args>`` and wait for it; the seconds it took. Its output (stdout and stderr)
    goes to ``log_path``, or to this process's own output when None; ``env``: its whole
    environment (default: this process's); ``echo``: print ``$ parlai <args>`` first.
    Raises ParlaiFailed, with the end of the log, when it fails."""
    args = _argv(args)
    if echo:
        print(f'$ parlai {shlex.join(args)}', flush=True)
    started = time.monotonic()
    if log_path is None:
        code = subprocess.run([PARLAI, *args], env=env).returncode
    else:
        with open(log_path, 'w', encoding='utf-8') as log:
            code = subprocess.run(
                [PARLAI, *args], stdout=log, stderr=subprocess.STDOUT, env=env
            ).returncode
    if code != 0:
        raise _failed(args, code, log_path)
    return time.monotonic() - started


@dataclass
class Running:
    """A ``parlai`` command started by ``start`` (``wait`` for it)."""

    args: List[str]
    log_path: str
    log: IO[str]
    process: subprocess.Popen
    started: float


def start(
    args: Sequence[object], log_path: str, env: Optional[Mapping[str, str]] = None
) -> Running:
    """Start ``parlai <args>`` with its output in ``log_path`` and return at once: for commands that
    run side by side (``wait`` for each)."""
    log = open(log_path, 'w', encoding='utf-8')
    process = subprocess.Popen(
        [PARLAI, *_argv(args)], stdout=log, stderr=subprocess.STDOUT, env=env
    )
    return Running(_argv(args), log_path, log, process, time.monotonic())


def wait(running: Running) -> float:
    """Wait for a started command; the seconds since its start. ParlaiFailed when it fails."""
    code = running.process.wait()
    running.log.close()
    if code != 0:
        raise _failed(running.args, code, running.log_path)
    return time.monotonic() - running.started


def run_main(main: Callable[[], object]) -> None:
    """Run a script's ``main``: a failed ``parlai`` command ends it with its message (exit 1)."""
    try:
        main()
    except ParlaiFailed as err:
        sys.exit(str(err))
