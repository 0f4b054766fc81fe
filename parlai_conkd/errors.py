"""Errors a person can act on, and how a command line shows them: one line, no traceback.

Every error of this project whose message is complete for a person (the file, line or option at
fault, and what to do) derives from :class:`UserError`. Python callers catch them like any other
exception (each also derives from the built-in class it used to be: ``ValueError``,
``RuntimeError``, ...). At the top of a process, :func:`install_excepthook` prints such an error as
its message alone, without the traceback that hides it (issue #22: a new user's broken model file
ended in a page of torch internals); every other exception is shown as Python shows it.

:class:`ModelFileError` is the error of a file a run reads (model file, ``.opt``, ``.dict``,
catalog, teacher cache, data) that is missing, empty, truncated or damaged; :func:`remedy` says
what to do about a model file.
"""

import os
import sys

_ZOO_DIR = os.path.join('models', 'conkd') + os.sep


class UserError(Exception):
    """An error whose message names what is wrong and what to do; shown without a traceback."""


class OptionError(UserError, ValueError):
    """A command-line option (or combination) that cannot be used; the message names it."""


class ModelFileError(UserError, ValueError):
    """A file a run reads is missing, empty, truncated or damaged; the message names it."""


def remedy(path: str) -> str:
    """What to do about a damaged model file at ``path``: a zoo entry is rebuilt, a model of yours
    is retrained or restored (its ``.checkpoint`` may hold the last interrupted state).
    """
    if _ZOO_DIR in os.path.abspath(path):
        name = os.path.basename(path).split('.')[0]
        return (
            f'rerun the command with zoo:conkd/{name}: the zoo checks its files against their '
            'recorded checksums and rebuilds a damaged entry'
        )
    hint = (
        f' ({path}.checkpoint holds the last checkpoint of its training)'
        if os.path.isfile(path + '.checkpoint')
        else ''
    )
    return f'retrain it (parlai train_model -mf {path} ...) or restore it from a copy{hint}'


def one_line(exc: BaseException) -> str:
    """``Kind: message`` for a person (the message as written, however many lines it has)."""
    return f'{type(exc).__name__}: {exc}'


def install_excepthook() -> None:
    """Show an uncaught :class:`UserError` as one message and exit status 1; leave every other
    exception to the hook in place before (idempotent)."""
    previous = sys.excepthook
    if getattr(previous, '_parlai_conkd', False):
        return

    def excepthook(exc_type, exc, tb):
        if isinstance(exc, UserError):
            print(one_line(exc), file=sys.stderr, flush=True)
        else:
            previous(exc_type, exc, tb)

    excepthook._parlai_conkd = True
    sys.excepthook = excepthook
