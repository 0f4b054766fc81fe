"""Make ConKD zoo models present under ``<datapath>/models/conkd/``: find, fetch or build them.

For each wanted model (its teachers first), the first route that applies:

1. **present**: ``<model>.zoo.json`` (the stamp) exists, names this ``ZOO_VERSION`` and recipe,
   lists files that all exist with the sha256 recorded at install (a damaged file makes the model
   absent: it is rebuilt or refetched, never loaded), and records the build ids of the teachers
   now present;
2. **release archive**: when a release is configured (``$CONKD_ZOO_URL`` + ``$CONKD_ZOO_SHA256``,
   or :data:`RELEASE_URL` / :data:`RELEASE_SHA256`), download it (HTTP status, tar form and sha256
   checked by ``parlai_conkd.downloads``; any failure stops with an error naming the status and URL
   and leaves nothing), unpack it and install every model in it;
3. **build locally** from :mod:`.recipe` by running ``parlai train_model`` in a subprocess (a
   progress bar per model, its full log kept next to the model as ``<model>.build.log``).

Atomicity: all work happens in a temporary directory under ``<datapath>/models/``. Installing a
model removes its old stamp first, moves the finished files in (``os.replace``, same file system)
and writes the new stamp *last*: the stamp is the commit point, so a model without a valid stamp is
never taken as present, whatever was interrupted. A process-wide file lock serialises builds; the
training subprocess dies with its parent (``PR_SET_PDEATHSIG``); leftover temporary directories
of killed builds are removed by the next build.

``python -m parlai_conkd.zoo.conkd.builder --help``: ``ensure`` (what ``zoo:conkd/...`` does),
``status``, ``pack`` (write a release archive of present models and print its sha256).
"""

import argparse
import contextlib
import ctypes
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
from typing import Dict, Iterable, List, Optional, Sequence

from parlai_conkd.errors import UserError
from parlai_conkd.fileio import atomic_path, atomic_write, sha256_file

from . import recipe as zoo_recipe

ZOO_SUBDIR = os.path.join('models', 'conkd')
STAMP_SUFFIX = '.zoo.json'
LOG_SUFFIX = '.build.log'
TMP_PREFIX = '.conkd-zoo-tmp-'
LOCK_NAME = '.conkd-zoo.lock'
ARCHIVE_NAME = 'conkd_zoo.tar.gz'

#: A published release of the zoo (none yet): set both, or the env vars below, to use one.
RELEASE_URL: Optional[str] = None
RELEASE_SHA256: Optional[str] = None
ENV_URL = 'CONKD_ZOO_URL'
ENV_SHA256 = 'CONKD_ZOO_SHA256'

#: Files of a model that are build by-products, not part of the installed model.
_NOT_INSTALLED = re.compile(r'\.checkpoint|\.teacher_cache|\.tmp')
_EPOCHS_RE = re.compile(r'\bepochs:([\d.]+)')


class ZooError(UserError, RuntimeError):
    """A zoo model that cannot be made present; the message says why and what to do."""


def zoo_dir(datapath: str) -> str:
    return os.path.join(datapath, ZOO_SUBDIR)


def model_file(datapath: str, model: str) -> str:
    return os.path.join(zoo_dir(datapath), model)


def stamp_path(directory: str, model: str) -> str:
    return os.path.join(directory, model + STAMP_SUFFIX)


def read_stamp(directory: str, model: str) -> Optional[Dict]:
    try:
        with open(stamp_path(directory, model), encoding='utf-8') as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) else None


def model_files(directory: str, model: str) -> List[str]:
    """Names of ``model``'s files in ``directory``: the model file and ``<model>.*``."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n == model or n.startswith(model + '.'))


# ---------------------------------------------------------------------------- present?
def why_not_present(
    datapath: str, model: str, recipe: Optional[str] = None
) -> Optional[str]:
    """None when ``model`` is present and usable as is; else the reason it is not."""
    directory = zoo_dir(datapath)
    stamp = read_stamp(directory, model)
    if stamp is None:
        if os.path.exists(stamp_path(directory, model)):
            return f'its stamp {model}{STAMP_SUFFIX} is unreadable'
        return 'not installed'
    if stamp.get('zoo_version') != zoo_recipe.ZOO_VERSION:
        return f'zoo version {stamp.get("zoo_version")} != {zoo_recipe.ZOO_VERSION}'
    wanted = zoo_recipe.recipe_name(recipe)
    if stamp.get('recipe') != wanted:
        return f'built with recipe {stamp.get("recipe")!r}, {wanted!r} wanted'
    key = zoo_recipe.recipe_key(model, stamp.get('use_kg', True), wanted)
    if stamp.get('recipe_key') is not None and stamp['recipe_key'] != key:
        # the recipe's arguments for this model changed since it was built (e.g. an epoch budget)
        return f'built with other recipe arguments (recipe key {stamp["recipe_key"]} != {key})'
    missing = [
        f
        for f in stamp.get('files', [])
        if not os.path.isfile(os.path.join(directory, f))
    ]
    if missing or model not in stamp.get('files', []):
        return f'files missing: {missing or [model]}'
    for name, recorded in sorted((stamp.get('sha256') or {}).items()):
        if _verified_sha256(os.path.join(directory, name)) != recorded:
            return f'{name} does not match the sha256 recorded when it was installed (damaged)'
    for teacher, build_id in (stamp.get('depends') or {}).items():
        teacher_stamp = read_stamp(directory, teacher)
        if teacher_stamp is None or teacher_stamp.get('build_id') != build_id:
            return f'its teacher {teacher} was replaced since it was built'
    return None


_sha256_seen: Dict[tuple, str] = {}


def _verified_sha256(path: str) -> str:
    """sha256 of ``path``, computed once per process for a given size and modification time (every
    ``zoo:`` name ParlAI resolves checks its files; the zoo's model files are tens of MB).
    """
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _sha256_seen:
        _sha256_seen[key] = sha256_file(path)
    return _sha256_seen[key]


def is_present(datapath: str, model: str, recipe: Optional[str] = None) -> bool:
    return why_not_present(datapath, model, recipe) is None


# ---------------------------------------------------------------------------- lock
_held: Dict[str, int] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def zoo_lock(datapath: str):
    """Exclusive across processes; re-entrant within one (a build may resolve zoo: paths)."""
    models = os.path.join(datapath, 'models')
    os.makedirs(models, exist_ok=True)
    path = os.path.abspath(os.path.join(models, LOCK_NAME))
    with _held_guard:
        if path in _held:
            _held[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[path] -= 1
        return
    with open(path, 'a+') as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(f'waiting for another process building ConKD zoo models ({path})')
            fcntl.flock(handle, fcntl.LOCK_EX)
        with _held_guard:
            _held[path] = 1
        try:
            yield
        finally:
            with _held_guard:
                del _held[path]
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_tmp(datapath: str) -> None:
    """Temporary directories of killed builds (called with the lock held: none is in use)."""
    for stale in glob.glob(os.path.join(datapath, 'models', TMP_PREFIX + '*')):
        shutil.rmtree(stale, ignore_errors=True)


def _new_tmp(datapath: str, what: str) -> str:
    return tempfile.mkdtemp(
        prefix=f'{TMP_PREFIX}{what}-', dir=os.path.join(datapath, 'models')
    )


# ---------------------------------------------------------------------------- install
def _atomic_write_json(path: str, payload: Dict) -> None:
    with atomic_write(
        path, fsync=True
    ) as f:  # a stamp says the files before it are complete
        json.dump(payload, f, indent=1, sort_keys=True)


def install(source_dir: str, datapath: str, model: str, stamp: Dict) -> None:
    """Move ``model``'s finished files from ``source_dir`` into the zoo; the stamp goes last."""
    directory = zoo_dir(datapath)
    os.makedirs(directory, exist_ok=True)
    names = [
        n
        for n in model_files(source_dir, model)
        if not n.endswith(STAMP_SUFFIX) and not _NOT_INSTALLED.search(n)
    ]
    if model not in names:
        raise ZooError(f'{source_dir} holds no model file {model!r} (found {names})')
    old_stamp = stamp_path(directory, model)
    if os.path.exists(old_stamp):
        os.unlink(old_stamp)  # from here on the old model is no longer "present"
    for name in model_files(directory, model):
        os.unlink(os.path.join(directory, name))
    for name in names:
        os.replace(os.path.join(source_dir, name), os.path.join(directory, name))
    # a damaged file is found by its checksum and rebuilt or refetched, never loaded (issue #22)
    sha256 = {name: _verified_sha256(os.path.join(directory, name)) for name in names}
    _atomic_write_json(old_stamp, dict(stamp, files=names, sha256=sha256))


def _portable_opt(opt_path: str, replacements: Dict[str, str]) -> None:
    """Make a built model's .opt independent of the temporary build directory.

    Paths are rewritten (``replacements``: old prefix -> new); ``dict_file`` and ``init_model``
    are dropped so ParlAI
    uses ``<model file>.dict`` wherever the model is installed.
    """
    with open(opt_path, encoding='utf-8') as f:
        opt = json.load(f)

    def rewrite(value):
        if isinstance(value, str):
            for old, new in replacements.items():
                if (
                    value == old
                    or value.startswith(old + os.sep)
                    or value.startswith(old + '.')
                ):
                    return new + value[len(old) :]
            return value
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    opt = rewrite(opt)
    # used for training only; the stamp keeps the args
    for key in (
        'dict_file',
        'init_model',
    ):
        opt.pop(key, None)
        if isinstance(opt.get('override'), dict):
            opt['override'].pop(key, None)
    _atomic_write_json(opt_path, opt)


# ---------------------------------------------------------------------------- release route
def release_source():
    """(url, sha256) of the configured release archive, or None."""
    url = os.environ.get(ENV_URL) or RELEASE_URL
    sha = os.environ.get(ENV_SHA256) or RELEASE_SHA256
    if not url:
        return None
    if not sha:
        raise ZooError(
            f'${ENV_URL} is set ({url}) but ${ENV_SHA256} is not: refusing an unchecked download'
        )
    return url, sha


def fetch_release(
    datapath: str, url: str, sha256: str, recipe: Optional[str] = None
) -> List[str]:
    """Download, check and install every model of the release archive; returns their names.

    The archive is kept only when the server answered with a tar archive matching ``sha256``
    (``parlai_conkd.downloads``): an HTTP error or an HTML page is refused with its status and
    URL, whatever checksum was configured, and nothing is installed.
    """
    from parlai.core.build_data import untar

    from parlai_conkd.downloads import TAR, DownloadError, fetch_archive

    tmp = _new_tmp(datapath, 'release')
    try:
        _say(f'downloading the ConKD zoo release {url}')
        offline = (
            f'Unset ${ENV_URL} (and ${ENV_SHA256}) to build the models locally instead '
            '(about 15 minutes on 2 CPU cores).'
        )
        try:
            fetch_archive(url, os.path.join(tmp, ARCHIVE_NAME), sha256, TAR, offline)
        except DownloadError as exc:
            raise ZooError(f'ConKD zoo release: {exc}') from None
        untar(tmp, ARCHIVE_NAME)
        installed = []
        wanted_recipe = zoo_recipe.recipe_name(recipe)
        for (
            model
        ) in zoo_recipe.MODELS:  # teachers first: students' stamps name their build ids
            stamp = read_stamp(tmp, model)
            if stamp is None:
                continue
            if (
                stamp.get('zoo_version') != zoo_recipe.ZOO_VERSION
                or stamp.get('recipe') != wanted_recipe
            ):
                raise ZooError(
                    f'ConKD zoo release {url}: {model} is zoo version {stamp.get("zoo_version")} / '
                    f'recipe {stamp.get("recipe")}, this code wants {zoo_recipe.ZOO_VERSION} / {wanted_recipe}'
                )
            install(tmp, datapath, model, dict(stamp, source=url))
            installed.append(model)
        if not installed:
            raise ZooError(
                f'ConKD zoo release {url} holds no ConKD model (no *{STAMP_SUFFIX} stamp)'
            )
        return installed
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def pack(datapath: str, out: str, models: Sequence[str] = zoo_recipe.MODELS) -> str:
    """Write a release archive of present models (flat: files + stamps); returns its sha256."""
    directory = zoo_dir(datapath)
    for model in models:
        reason = why_not_present(
            datapath,
            model,
            read_stamp(directory, model) and read_stamp(directory, model)['recipe'],
        )
        if reason:
            raise ZooError(f'cannot pack {model}: {reason}')
    with atomic_path(out) as tmp_out, tarfile.open(tmp_out, 'w:gz') as tar:
        for model in models:
            stamp = read_stamp(directory, model)
            for name in stamp['files'] + [model + STAMP_SUFFIX]:
                tar.add(os.path.join(directory, name), arcname=name)
    return sha256_file(out)


# ---------------------------------------------------------------------------- build route
def _die_with_parent():
    """preexec_fn: the training process is killed when the builder dies (even by SIGKILL)."""
    try:
        # PR_SET_PDEATHSIG
        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGKILL)
    except OSError:
        pass


def _run_training(
    args: List[str],
    log_path: str,
    desc: str,
    epochs: float,
    threads: Optional[int] = None,
) -> None:
    from tqdm import tqdm

    cmd = [sys.executable, '-m', 'parlai', 'train_model', *args]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    if threads:  # float sums depend on the thread count: fixed for reproducible weights
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with (
        open(log_path, 'w', encoding='utf-8') as log,
        tqdm(
            total=epochs,
            desc=desc,
            unit='epoch',
            file=sys.stderr,
            bar_format='{desc}: {percentage:3.0f}%|{bar:20}| {n:.2f}/{total:g} epochs [{elapsed}<{remaining}]',
        ) as bar,
    ):
        log.write('$ ' + ' '.join(cmd) + '\n')
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
        try:
            for line in proc.stdout:
                log.write(line)
                match = _EPOCHS_RE.search(line)
                if match:
                    bar.set_description_str(desc, refresh=False)
                    bar.update(max(0.0, min(float(match.group(1)), epochs) - bar.n))
                elif 'running eval: valid' in line:
                    bar.set_description_str(desc + ' (evaluating)')
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == 0:
            bar.update(epochs - bar.n)
    if proc.returncode != 0:
        with open(log_path, encoding='utf-8') as f:
            tail = ''.join(f.readlines()[-30:])
        raise ZooError(
            f'{desc}: parlai train_model exited {proc.returncode}; last lines of its log:\n{tail}'
        )


def weights_sha256(path: str) -> str:
    """sha256 over a ParlAI model file's weights (every tensor of its ``model`` state dict, in key
    order, with names, dtypes and shapes): equal for two builds that trained the same weights,
    whatever else the file holds (optimizer state, time stamps)."""
    import parlai.utils.pickle
    import torch

    with open(path, 'rb') as f:
        states = torch.load(f, map_location='cpu', pickle_module=parlai.utils.pickle)
    digest = hashlib.sha256()
    for key, tensor in sorted(states['model'].items()):
        tensor = tensor.detach().cpu()
        if tensor.is_sparse:
            tensor = tensor.coalesce()
            parts = [tensor.indices(), tensor.values()]
        else:
            parts = [tensor.contiguous()]
        digest.update(f'{key}:{tensor.dtype}:{tuple(tensor.shape)}'.encode())
        for part in parts:
            digest.update(part.numpy().tobytes())
    return digest.hexdigest()


def _hit_time_cap(log_path: str) -> bool:
    """Did ParlAI stop this training at ``--max-train-time``?"""
    with open(log_path, encoding='utf-8', errors='replace') as f:
        return any('max_train_time elapsed' in line for line in f)


def _torch_version() -> str:
    import torch

    return torch.__version__


def _data_version(datapath: str, model: str) -> Dict[str, str]:
    """Which data a model was trained on: the built redial_crs directory and the sha256 of its
    train fold (the task's version, source and preprocessing are all in the directory name).
    """
    from parlai.core.params import ParlaiParser

    from parlai_conkd.redial.build import built_dir

    opt = ParlaiParser(True, False).parse_args(['-dp', datapath])
    opt.update({k: v for k, v in _data_sources().items() if v})
    # built by the training run; never build here
    path = os.path.join(built_dir(opt), 'train.json')
    if not os.path.isfile(path):
        return {'built': None, 'train_fold_sha256': None}
    return {
        'built': os.path.basename(os.path.dirname(path)),
        'train_fold_sha256': sha256_file(path),
    }


def _data_sources() -> Dict[str, Optional[str]]:
    from parlai_conkd.redial.build import ENV_META_PATH, ENV_PATH

    return {
        'redial_path': os.environ.get(ENV_PATH),
        'redial_meta_path': os.environ.get(ENV_META_PATH),
    }


def build_locally(
    datapath: str, model: str, step: int, steps: int, recipe: Optional[str] = None
) -> None:
    name = zoo_recipe.recipe_name(recipe)
    spec = zoo_recipe.RECIPES[name]
    data = _data_sources()
    use_kg = bool(data['redial_meta_path'])
    teachers = {t: model_file(datapath, t) for t in zoo_recipe.DEPENDENCIES[model]}
    tmp = _new_tmp(datapath, model)
    try:
        tmp_file = os.path.join(tmp, model)
        args = zoo_recipe.train_args(model, tmp_file, datapath, teachers, use_kg, name)
        minutes = spec.expected_minutes.get(model)
        _say(
            f'step {step}/{steps}: training {model}: {zoo_recipe.DESCRIPTIONS[model]} '
            f'[recipe {name}{"" if use_kg else ", no movie KG: set $CONKD_REDIAL_META_PATH to use it"}]'
            + (f', expected ~{minutes:g} min on a 2-core CPU' if minutes else '')
        )
        started = time.time()
        log_path = os.path.join(tmp, model + LOG_SUFFIX)
        _run_training(
            args,
            log_path,
            f'[{step}/{steps}] {model}',
            spec.epochs[model],
            spec.threads,
        )
        seconds = time.time() - started
        capped = _hit_time_cap(log_path)
        if capped:
            _say(
                f'warning: {model} stopped at its --max-train-time guard before its epochs were done '
                '(a slow or busy machine); it is usable, but not the reproducible recipe model'
            )
        replacements = {tmp_file: model_file(datapath, model)}
        replacements.update({path: f'zoo:conkd/{t}' for t, path in teachers.items()})
        _portable_opt(tmp_file + '.opt', replacements)
        stamp = {
            'zoo_version': zoo_recipe.ZOO_VERSION,
            'recipe': name,
            'recipe_key': zoo_recipe.recipe_key(model, use_kg, name),
            'build_id': uuid.uuid4().hex,
            'depends': {
                t: read_stamp(zoo_dir(datapath), t)['build_id'] for t in teachers
            },
            'source': 'built locally',
            'data': data,
            'use_kg': use_kg,
            'train_args': args,
            'seed': zoo_recipe.SEED,
            'threads': spec.threads,
            'torch': _torch_version(),
            'data_version': _data_version(datapath, model),
            'weights_sha256': weights_sha256(tmp_file),
            'stopped_by_time_cap': capped,
            'build_seconds': round(seconds, 1),
            'built_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        }
        install(tmp, datapath, model, stamp)
        _say(
            f'step {step}/{steps}: {model} ready in {seconds / 60:.1f} min -> {model_file(datapath, model)}'
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- entry point
def ensure(
    datapath: str,
    models: Iterable[str] = zoo_recipe.MODELS,
    recipe: Optional[str] = None,
) -> List[str]:
    """Make ``models`` (and their teachers) present; returns their model files.

    This is what ``download(datapath)`` of every ``parlai_conkd/zoo/conkd`` module calls.
    """
    datapath = os.path.abspath(datapath)
    wanted = set()
    for model in models:
        wanted.update(zoo_recipe.with_dependencies(model))
    order = [m for m in zoo_recipe.MODELS if m in wanted]
    if all(is_present(datapath, m, recipe) for m in order):
        return [model_file(datapath, m) for m in order]
    with zoo_lock(datapath):
        _remove_stale_tmp(datapath)
        missing = [m for m in order if not is_present(datapath, m, recipe)]
        release = release_source() if missing else None
        if release:
            fetch_release(datapath, *release, recipe=recipe)
            missing = [m for m in order if not is_present(datapath, m, recipe)]
            if missing:
                raise ZooError(f'ConKD zoo release {release[0]} lacks {missing}')
        todo = []
        for m in order:  # a rebuilt teacher makes its students stale
            if m in missing or any(t in todo for t in zoo_recipe.DEPENDENCIES[m]):
                todo.append(m)
        if todo:
            name = zoo_recipe.recipe_name(recipe)
            total = sum(
                zoo_recipe.RECIPES[name].expected_minutes.get(m, 0) for m in todo
            )
            reasons = '; '.join(
                f'{m}: {why_not_present(datapath, m, recipe)}' for m in todo
            )
            _say(
                f'building {len(todo)} ConKD zoo model(s) under {zoo_dir(datapath)} ({reasons}); '
                f'expected ~{total:g} min in all on a 2-core CPU'
            )
        for step, m in enumerate(todo, start=1):
            build_locally(datapath, m, step, len(todo), recipe)
    return [model_file(datapath, m) for m in order]


def _say(message: str) -> None:
    print(f'[conkd zoo] {message}', file=sys.stderr, flush=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog='python -m parlai_conkd.zoo.conkd.builder',
        description='ConKD model zoo: ensure / status / pack.',
    )
    sub = parser.add_subparsers(dest='command', required=True)
    p_ensure = sub.add_parser(
        'ensure', help='make models present (release archive or local build)'
    )
    p_status = sub.add_parser('status', help='which models are present, and why not')
    p_pack = sub.add_parser(
        'pack', help='write a release archive of the present models'
    )
    for p in (p_ensure, p_status, p_pack):
        p.add_argument('-dp', '--datapath', required=True)
        p.add_argument('--recipe', default=None, choices=sorted(zoo_recipe.RECIPES))
    p_ensure.add_argument('models', nargs='*', default=list(zoo_recipe.MODELS))
    p_pack.add_argument('--out', required=True)
    args = parser.parse_args(argv)
    if args.recipe:
        os.environ[zoo_recipe.ENV_RECIPE] = args.recipe
    if args.command == 'ensure':
        for path in ensure(args.datapath, args.models):
            print(path)
    elif args.command == 'status':
        for m in zoo_recipe.MODELS:
            reason = why_not_present(os.path.abspath(args.datapath), m)
            print(f'{m:17s} {"present" if reason is None else "absent: " + reason}')
    else:
        print(pack(os.path.abspath(args.datapath), args.out))


if __name__ == '__main__':
    main()
