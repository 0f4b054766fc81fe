"""Is a model file (or its ``.opt``) readable? One-line errors naming the file and the remedy.

ParlAI reads a model file with ``torch.load`` and its options with ``json.load``; a missing, empty
or truncated file then ends in ``EOFError``, "PytorchStreamReader failed finding central directory",
``OSError: [Errno 22]`` or ``JSONDecodeError`` deep in a traceback (issue #22). These checks run
before the read, on the file's form only (a torch archive is a zip file whose central directory
is at its end, so a truncated one has none), cost a directory read, and raise
:class:`parlai_conkd.errors.ModelFileError` with the file and :func:`parlai_conkd.errors.remedy`.
"""

import json
import os
import zipfile
from typing import Dict

from parlai_conkd.errors import ModelFileError, remedy


def check_model_file(path: str) -> None:
    """Raise ModelFileError unless ``path`` is a complete torch archive (what ``torch.save`` writes).

    Bit flips inside a complete archive are not seen here: zoo files are checked against their
    recorded sha256 before use (``parlai_conkd.zoo.conkd.builder``).
    """
    if not os.path.exists(path):
        raise ModelFileError(f'{path}: no such model file; {remedy(path)}')
    if os.path.isdir(path):
        raise ModelFileError(
            f'{path}: is a directory, not a model file (-mf names the file, e.g. DIR/model)'
        )
    size = os.path.getsize(path)
    if size == 0:
        raise ModelFileError(
            f'{path}: the model file is empty (0 bytes); {remedy(path)}'
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f'{path}: the model file is truncated or damaged ({size:,d} bytes, not a complete '
            f'torch archive); {remedy(path)}'
        )


def check_model_file_given(opt) -> None:
    """Evaluating or chatting with ``-m conkd_* -mf PATH`` where PATH does not exist built a fresh,
    untrained model (ParlAI's ``display_model`` does so silently); refuse it naming the file.
    Training (a ``train`` datatype) creates the file, and is left alone."""
    path = opt.get('model_file')
    datatype = opt.get('datatype') or ''
    training = datatype.startswith('train') and 'evalmode' not in datatype
    if path and not training and not os.path.exists(path):
        raise ModelFileError(f'{path}: no such model file; {remedy(path)}')


def read_opt_file(path: str) -> Dict:
    """The JSON object of a ``.opt`` file; ModelFileError naming it when it is empty, truncated,
    not JSON or not an object."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except UnicodeDecodeError as exc:
        raise ModelFileError(
            f'{path}: not a text file ({exc.reason}); {remedy(path[:-4])}'
        ) from None
    try:
        opt = json.loads(text)
    except json.JSONDecodeError as exc:
        what = 'empty' if not text.strip() else 'truncated or not JSON'
        raise ModelFileError(
            f'{path}: the model\'s options file is {what} (line {exc.lineno}, column '
            f'{exc.colno}: {exc.msg}); {remedy(_model_of(path))}'
        ) from None
    if not isinstance(opt, dict):
        raise ModelFileError(
            f'{path}: the model\'s options file holds a {type(opt).__name__}, not an object; '
            f'{remedy(_model_of(path))}'
        )
    return opt


def _model_of(opt_path: str) -> str:
    return opt_path[: -len('.opt')] if opt_path.endswith('.opt') else opt_path
