"""Load frozen ConKD models from ParlAI model files or zoo: paths, with clear errors.

Used for the student's two teachers and the pipeline baseline's recommender. Only training may
build or download a teacher (``fetch=True``); evaluating or chatting with a trained model uses a
teacher only when it is already on disk (issue #22: evaluating a copy of the soft student started a
14-minute build of its dialogue teacher).
"""

import json
import os

from parlai.core.agents import create_agent_from_model_file
from parlai.core.build_data import modelzoo_path

from parlai_conkd.errors import UserError
from parlai_conkd.items import ItemCatalog


class TeacherError(UserError, ValueError):
    """A teacher file that cannot be used by this student; the message names option and file."""


def local_model_path(datapath: str, path: str) -> str:
    """Where ParlAI keeps ``path`` (a file, or a ``zoo:``/``models:`` name) on disk, without
    downloading or building anything (``modelzoo_path`` does both)."""
    for prefix in ('zoo:', 'models:'):
        if path.startswith(prefix):
            return os.path.join(datapath, 'models', path[len(prefix) :])
    return path


def resolve_model_file(opt, option: str, fetch: bool = True) -> str:
    """The model file named by ``option`` (e.g. ``--rec-teacher-file``). ``fetch``: a ``zoo:`` name
    may be downloaded or built (training); otherwise it must already be on disk. Raises
    TeacherError naming the option when there is no usable file."""
    path = opt.get(option.lstrip('-').replace('-', '_'))
    if not path:
        raise TeacherError(f'{option} is required for this gate (or use --gate none)')
    if fetch:
        resolved = modelzoo_path(opt.get('datapath'), path)
    else:
        resolved = local_model_path(opt.get('datapath'), path)
        if path.startswith('zoo:') and not os.path.isfile(resolved):
            raise TeacherError(
                f'{option} {path}: not on disk at {resolved} (only training builds or downloads '
                f'a teacher; to have it, run any command with -mf {path})'
            )
    if not os.path.isfile(resolved):
        raise TeacherError(f'{option} {path}: model file not found at {resolved}')
    if not os.path.isfile(resolved + '.opt'):
        raise TeacherError(
            f'{option} {path}: {resolved}.opt is missing; is this a ParlAI model file?'
        )
    return resolved


def model_name_of(model_file: str) -> str:
    with open(model_file + '.opt', encoding='utf-8') as f:
        return json.load(f).get('model', '')


def load_frozen_teacher(
    opt,
    option: str,
    expected_class,
    expected_models,
    catalog: ItemCatalog,
    extra_overrides=None,
    fetch: bool = True,
):
    """Create the teacher agent from its file, in eval mode with gradients off, on our device.

    ``expected_models``: the ``-m`` names accepted for this role (checked before loading, so a
    wrong file fails fast); ``expected_class``: what the loaded agent must be an instance of;
    ``extra_overrides``: options set on the loaded agent (e.g. the rec teacher's temperature);
    ``fetch``: as in :func:`resolve_model_file`.
    """
    model_file = resolve_model_file(opt, option, fetch=fetch)
    model_name = model_name_of(model_file)
    if model_name not in expected_models:
        raise TeacherError(
            f'{option} {model_file} is a {model_name!r} model; expected one of {sorted(expected_models)}'
        )
    overrides = {
        'datapath': opt['datapath'],
        'no_cuda': opt.get('no_cuda', False),
        'gpu': opt.get('gpu', -1),
        'interactive_mode': False,
        'skip_generation': True,
        # A frozen teacher is a component, not on a task: its model file's catalog is checked
        # against ours below, so it must not build (or download) the task data it was trained on
        # to check it again (issue #14: chatting with a zoo model needs no ReDial data).
        'task': None,
    }
    for key in ('redial_path', 'redial_meta_path'):
        if opt.get(key):
            overrides[key] = opt[key]
    overrides.update(extra_overrides or {})
    agent = create_agent_from_model_file(model_file, overrides)
    if not isinstance(agent, expected_class):
        raise TeacherError(
            f'{option} {model_file} loaded as {type(agent).__name__}, not a {expected_class.__name__}'
        )
    teacher_catalog = getattr(agent, 'catalog', None)
    if teacher_catalog is None or teacher_catalog.fingerprint != catalog.fingerprint:
        raise TeacherError(
            f'{option} {model_file} was trained on another item catalog '
            f'({getattr(teacher_catalog, "fingerprint", None)} vs the student\'s {catalog.fingerprint})'
        )
    agent.model.eval()
    for parameter in agent.model.parameters():
        parameter.requires_grad_(False)
    return agent, model_file
