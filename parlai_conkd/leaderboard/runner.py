"""One ``parlai eval_model`` run per (row, model file): commands, input fingerprints, the run cache.

A run is reused when its key is unchanged: the key hashes the exact command (less the report and
log paths), the sha256 of the model file and its ``.opt``/``.dict``, the sha256 of the built data
fold and item catalog it is evaluated on, and the plugin and cache versions. A run is stamped
done (``run.json``, written last, atomically) only after its report is in place, so an
interrupted leaderboard resumes at the first unfinished run.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from parlai_conkd.fileio import atomic_write, sha256_file

from .spec import SpecError

#: bump when what a run records changes, so older cached runs are recomputed
CACHE_VERSION = 1
#: arguments every run of a kind gets first (row and leaderboard arguments come later and win)
DEFAULT_ARGS = {
    # one example per item a recommender turn names: recall@k = "all", new_recall@k = "new"
    'ranker': ['-t', 'redial_crs:rec_all', '-bs', '64'],
    'generator': ['-t', 'redial_crs', '-bs', '32', '--skip-generation', 'false'],
}
_PROGRESS_RE = re.compile(r'([\d.]+)% complete')


class RunError(RuntimeError):
    """An eval_model run failed; the message holds its command and the end of its log."""


@dataclass
class Run:
    row: str
    index: int
    model: str  # as given in the row
    model_file: str  # resolved
    kind: str
    command: List[str]
    directory: str
    key: str = ''
    inputs: Dict = field(default_factory=dict)

    @property
    def report_path(self) -> str:
        return os.path.join(self.directory, 'report.json')

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, 'eval.log')

    @property
    def stamp_path(self) -> str:
        return os.path.join(self.directory, 'run.json')


def resolve_model(model: str, datapath: str, where: str) -> str:
    """A model file path or ``zoo:`` name -> the model file (a zoo name makes its model present)."""
    if model.startswith('zoo:'):
        from parlai.core.build_data import modelzoo_path

        path = modelzoo_path(datapath, model)
    else:
        path = os.path.abspath(os.path.expanduser(model))
    if not os.path.isfile(path):
        raise SpecError(f'{where}: model file not found: {model} ({path})')
    if not os.path.isfile(path + '.opt'):
        raise SpecError(
            f'{where}: {path}.opt is missing; is {model} a ParlAI model file?'
        )
    return path


def model_opt(model_file: str) -> Dict:
    with open(model_file + '.opt', encoding='utf-8') as f:
        return json.load(f)


def model_kind(model_file: str, where: str) -> str:
    """``ranker`` for item rankers (scored on ``redial_crs:rec_all``), ``generator`` for ParlAI
    generators (scored on ``redial_crs`` with generation)."""
    from parlai.core.loader import load_agent_module
    from parlai.core.torch_generator_agent import TorchGeneratorAgent

    from parlai_conkd.agents.item_ranking import ItemRankingAgent

    name = model_opt(model_file).get('model')
    if not name:
        raise SpecError(f'{where}: {model_file}.opt names no model')
    agent_class = load_agent_module(name)
    if issubclass(agent_class, ItemRankingAgent):
        return 'ranker'
    if issubclass(agent_class, TorchGeneratorAgent):
        return 'generator'
    raise SpecError(
        f'{where}: {model_file} is a {name!r} model, neither an item ranker nor a generator; '
        'give the row "kind" to say how to evaluate it'
    )


def model_seeds(model_file: str) -> Dict:
    """Every seed-like option the model was trained with (e.g. ``rec_seed``), as recorded."""
    return {k: v for k, v in sorted(model_opt(model_file).items()) if 'seed' in k}


def model_inputs(model_file: str) -> Dict[str, str]:
    """sha256 of the model file and the sidecars that change its behaviour."""
    files = {'model': model_file}
    for suffix in ('.opt', '.dict', '.catalog.json'):
        if os.path.isfile(model_file + suffix):
            files[suffix] = model_file + suffix
    return {name: sha256_file(path) for name, path in files.items()}


def data_inputs(
    datapath: str, split: str, redial_path: Optional[str], meta_path: Optional[str]
) -> Dict:
    """The built fold and item catalog the runs read (built here when needed)."""
    from parlai_conkd.redial import build

    opt = {
        'datapath': datapath,
        'redial_path': redial_path,
        'redial_meta_path': meta_path,
    }
    fold = build.fold_path(opt, split)
    return {
        'built_dir': os.path.dirname(fold),
        'source': build.source_path(opt) or 'official download',
        'meta_path': build.meta_path(opt),
        'fold_sha256': sha256_file(fold),
        'catalog_sha256': sha256_file(build.catalog_path(opt)),
    }


def parlai_command(args: List[str]) -> List[str]:
    return [sys.executable, '-m', 'parlai', *args]


def display_command(command: List[str]) -> str:
    """``parlai eval_model ...`` as a person would type it."""
    import shlex

    args = command[3:] if command[:3] == [sys.executable, '-m', 'parlai'] else command
    return ' '.join(['parlai', *(shlex.quote(a) for a in args)])


def run_key(run: Run, data: Dict, version: str) -> str:
    command = [a for a in run.command if a not in (run.report_path, run.log_path)]
    payload = {
        'cache_version': CACHE_VERSION,
        'plugin': version,
        'command': command[3:],
        'model': model_inputs(run.model_file),
        'data': {k: data[k] for k in ('fold_sha256', 'catalog_sha256')},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cached(run: Run) -> Optional[Dict]:
    """The stamped result of an earlier identical run, or None."""
    try:
        with open(run.stamp_path, encoding='utf-8') as f:
            stamp = json.load(f)
        if stamp.get('key') != run.key:
            return None
        with open(run.report_path, encoding='utf-8') as f:
            report = json.load(f)['report']
    except (OSError, ValueError, KeyError):
        return None
    return {
        'report': report,
        'seconds': stamp.get('seconds'),
        'finished': stamp.get('finished'),
    }


def _write_json_atomic(path: str, payload) -> None:
    with atomic_write(path) as f:
        json.dump(payload, f, indent=2)


def execute(
    run: Run, on_progress: Callable[[float], None] = lambda fraction: None
) -> Dict:
    """Run ``eval_model`` (output to ``eval.log``), then stamp the run; raises RunError on failure."""
    os.makedirs(run.directory, exist_ok=True)
    for path in (run.stamp_path, run.report_path):
        if os.path.exists(path):
            os.remove(path)  # a stale result must not survive a failed rerun
    start = time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    with open(run.log_path, 'w', encoding='utf-8') as log:
        log.write(display_command(run.command) + '\n')
        proc = subprocess.Popen(
            run.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        try:
            for line in proc.stdout:
                log.write(line)
                match = _PROGRESS_RE.search(line)
                if match:
                    on_progress(float(match.group(1)) / 100)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    seconds = time.monotonic() - start
    if code != 0 or not os.path.isfile(run.report_path):
        with open(run.log_path, encoding='utf-8', errors='replace') as f:
            tail = f.read()[-3000:]
        raise RunError(
            f'row {run.row!r}, model {run.model}: eval_model exited {code}'
            f'{"" if code else " without writing its report"}\n'
            f'command: {display_command(run.command)}\nlog: {run.log_path}\n--- end of log ---\n{tail}'
        )
    with open(run.report_path, encoding='utf-8') as f:
        report = json.load(f)['report']
    finished = time.strftime('%Y-%m-%dT%H:%M:%S%z')
    _write_json_atomic(
        run.stamp_path,
        {
            'key': run.key,
            'command': display_command(run.command),
            'seconds': round(seconds, 2),
            'finished': finished,
        },
    )
    return {'report': report, 'seconds': round(seconds, 2), 'finished': finished}
