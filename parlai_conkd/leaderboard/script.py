"""``python -m parlai_conkd.leaderboard``: evaluate rows of models under both recall protocols
and write the leaderboard as JSON, Markdown and PNG (issue #15).

    python -m parlai_conkd.leaderboard --spec projects/conkd/leaderboards/shared_test.spec.json
    python -m parlai_conkd.leaderboard --out runs/lb/board -dt test \\
        --row popularity=runs/pop/model --row 'soft=zoo:conkd/soft,runs/soft-seed2/model' \\
        --row-args 'soft=--inference beam --beam-size 5'

Each row is evaluated with the real ``parlai eval_model`` (a subprocess per model file): item
rankers on ``redial_crs:rec_all`` (``recall@k`` = all items, ``new_recall@k`` = new items, one
run gives both), generators on ``redial_crs`` with generation (``rer_all@k`` / ``rer@k`` at the
first generated item slot, item P/R/F1, Dist-n, BLEU-4, PPL). Several model files in a row are
seeds: the tables show mean ± sample standard deviation and n. Finished runs are cached under
``--work-dir`` and reused while their inputs are unchanged (see runner.py), so an interrupted
leaderboard resumes where it stopped; ``--force`` recomputes.
"""

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Dict, List

from parlai.core.params import ParlaiParser
from parlai.core.script import ParlaiScript

from parlai_conkd.fileio import atomic_path, atomic_write

from . import plot as plotting
from . import runner, table
from .spec import SPLITS, Spec, SpecError, load_spec, rows_from_cli


def _slug(name: str) -> str:
    import hashlib

    return (
        re.sub(r'[^A-Za-z0-9._-]+', '_', name).strip('_')[:40]
        + '-'
        + hashlib.sha1(name.encode()).hexdigest()[:6]
    )


def _versions() -> Dict:
    import parlai
    import torch

    import parlai_conkd

    versions = {
        'python': platform.python_version(),
        'platform': platform.platform(),
        'torch': torch.__version__,
        'parlai': parlai.__version__,
        'parlai_conkd': parlai_conkd.__version__,
        'parlai_conkd_git': None,
    }
    source = os.path.dirname(os.path.dirname(os.path.abspath(parlai_conkd.__file__)))
    try:
        commit = subprocess.run(
            ['git', '-C', source, 'rev-parse', '--short=12', 'HEAD'],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ['git', '-C', source, 'status', '--porcelain'],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if commit.returncode == 0:
            versions['parlai_conkd_git'] = commit.stdout.strip() + (
                '+dirty' if dirty.stdout.strip() else ''
            )
    except (OSError, subprocess.SubprocessError):
        pass
    return versions


def _shown_path(path: str) -> str:
    """Relative to the working directory when below it (the JSON is often committed)."""
    relative = os.path.relpath(path)
    return path if relative.startswith('..') else relative


def _write_atomic(path: str, text: str) -> None:
    with atomic_write(path) as f:
        f.write(text)


class Leaderboard(ParlaiScript):
    @classmethod
    def setup_args(cls):
        parser = ParlaiParser(False, False, description=__doc__)
        parser.add_parlai_data_path()
        group = parser.add_argument_group('Leaderboard')
        group.add_argument(
            '--spec',
            type=str,
            default=None,
            help='JSON/YAML file with the rows (see parlai_conkd/leaderboard/spec.py); '
            'its "split"/"eval_args"/"title" are used unless given here',
        )
        group.add_argument(
            '--row',
            type=str,
            action='append',
            default=[],
            help='NAME=MODEL[,MODEL...]: a row; several model files / zoo names are seeds',
        )
        group.add_argument(
            '--row-args',
            type=str,
            action='append',
            default=[],
            help='NAME=ARGS: extra eval_model arguments for that row (shell-quoted)',
        )
        group.add_argument(
            '--out',
            type=str,
            default=None,
            help='output prefix: writes OUT.json, OUT.md, OUT.png (default for --spec X.spec.json: '
            'X; for another spec name X.json: X.leaderboard)',
        )
        group.add_argument(
            '--work-dir',
            type=str,
            default=None,
            help='eval_model reports and logs, reused across runs (default: '
            'runs/leaderboards/<name of OUT>)',
        )
        group.add_argument(
            '-dt',
            '--split',
            type=str,
            default=None,
            choices=SPLITS,
            help='fold every row is evaluated on (default: the spec\'s, else test)',
        )
        group.add_argument(
            '--eval-args',
            type=str,
            default=None,
            help='extra eval_model arguments for every row (shell-quoted), after the spec\'s',
        )
        group.add_argument(
            '--redial-path',
            type=str,
            default=None,
            help='ReDial copy for every run (default: $CONKD_REDIAL_PATH, else the official download)',
        )
        group.add_argument(
            '--redial-meta-path',
            type=str,
            default=None,
            help='movie KG directory for every run (default: $CONKD_REDIAL_META_PATH)',
        )
        group.add_argument(
            '-n',
            '--num-examples',
            type=int,
            default=None,
            help='evaluate only the first N examples of the fold (quick looks; not for tables)',
        )
        group.add_argument('--title', type=str, default=None)
        group.add_argument(
            '--force',
            type='bool',
            default=False,
            help='recompute runs found in the cache',
        )
        return parser

    # ------------------------------------------------------------------ inputs
    def _spec(self) -> Spec:
        opt = self.opt
        if opt.get('spec'):
            spec = load_spec(opt['spec'])
            if opt.get('row'):
                raise SpecError(
                    'give the rows either with --spec or with --row, not both'
                )
        elif opt.get('row'):
            spec = Spec(rows_from_cli(opt['row'], opt.get('row_args') or []))
        else:
            raise SpecError(
                'no rows: give --spec FILE or at least one --row NAME=MODEL'
            )
        if opt.get('row_args') and opt.get('spec'):
            raise SpecError(
                '--row-args belongs to --row; put a spec row\'s arguments in its "args"'
            )
        if opt.get('split'):
            spec.split = opt['split']
        if opt.get('eval_args'):
            spec.eval_args += shlex.split(opt['eval_args'])
        if opt.get('title'):
            spec.title = opt['title']
        return spec

    def _out_prefix(self) -> str:
        spec = self.opt.get('spec')
        if self.opt.get('out'):
            out = self.opt['out']
        elif spec:
            # X.spec.json -> X.json/.md/.png; any other name -> X.leaderboard.json/...
            stem, _ = os.path.splitext(spec)
            out = (
                stem[: -len('.spec')]
                if stem.endswith('.spec')
                else stem + '.leaderboard'
            )
        else:
            raise SpecError(
                '--out PREFIX is required with --row (writes PREFIX.json/.md/.png)'
            )
        if spec and os.path.abspath(out + '.json') == os.path.abspath(spec):
            raise SpecError(
                f'--out {out} would overwrite the spec file {spec}; choose another prefix'
            )
        return out

    def _common_args(self, spec: Spec) -> List[str]:
        opt = self.opt
        args = ['-dt', spec.split, '-dp', opt['datapath'], '--log-every-n-secs', '2']
        for key, flag in (
            ('redial_path', '--redial-path'),
            ('redial_meta_path', '--redial-meta-path'),
        ):
            if opt.get(key):
                args += [flag, opt[key]]
        if opt.get('num_examples'):
            args += ['--num-examples', str(opt['num_examples'])]
        return args

    # ------------------------------------------------------------------ run
    def run(self):
        from tqdm import tqdm

        import parlai_conkd

        opt = self.opt
        spec = self._spec()
        out = self._out_prefix()
        work_dir = opt.get('work_dir') or os.path.join(
            'runs', 'leaderboards', os.path.basename(out)
        )
        datapath = opt['datapath']
        data = runner.data_inputs(
            datapath, spec.split, opt.get('redial_path'), opt.get('redial_meta_path')
        )
        common = self._common_args(spec)
        runs: List[runner.Run] = []
        kinds: Dict[str, str] = {}
        for row in spec.rows:
            for index, model in enumerate(row.models):
                where = f'row {row.name!r}'
                model_file = runner.resolve_model(model, datapath, where)
                kind = row.kind or runner.model_kind(model_file, where)
                if kinds.setdefault(row.name, kind) != kind:
                    raise SpecError(
                        f'{where}: mixes {kinds[row.name]} and {kind} model files'
                    )
                run = runner.Run(
                    row.name,
                    index,
                    model,
                    model_file,
                    kind,
                    [],
                    os.path.join(work_dir, _slug(row.name), str(index)),
                )
                # the model as given (a zoo name stays one, so the JSON does not hold this machine's paths)
                run.command = runner.parlai_command(
                    [
                        'eval_model',
                        '-mf',
                        model,
                        *runner.DEFAULT_ARGS[kind],
                        *common,
                        *spec.eval_args,
                        *row.args,
                        '--report-filename',
                        run.report_path,
                    ]
                )
                run.key = runner.run_key(run, data, parlai_conkd.__version__)
                runs.append(run)

        results: Dict[int, Dict] = {}
        # run key -> label of the run that produced it in this invocation
        done: Dict[str, str] = {}
        bar = tqdm(total=len(runs), desc='leaderboard', unit='run', file=sys.stderr)
        for i, run in enumerate(runs):
            label = f'{run.row} [{run.index + 1}/{sum(r.row == run.row for r in runs)}]'
            twin = next((j for j in results if runs[j].key == run.key), None)
            result = None if opt.get('force') else runner.cached(run)
            if twin is not None:
                # the same model file with the same command and data: the same numbers
                result = dict(results[twin], cached=True)
                bar.write(
                    f'{label}: same model, command and data as {done[run.key]}, result reused',
                    file=sys.stderr,
                )
            elif result is not None:
                bar.write(
                    f'{label}: unchanged, cached result reused ({run.stamp_path})',
                    file=sys.stderr,
                )
                result['cached'] = True
            else:
                bar.set_postfix_str(label)
                step = tqdm(
                    total=100,
                    desc=f'  {run.row}',
                    unit='%',
                    leave=False,
                    file=sys.stderr,
                    bar_format='{desc}: {percentage:3.0f}%|{bar}| {elapsed}',
                )

                def progress(fraction, step=step):
                    step.update(max(0, round(fraction * 100) - step.n))

                try:
                    result = runner.execute(run, progress)
                finally:
                    step.close()
                result['cached'] = False
                bar.write(
                    f'{label}: done in {result["seconds"]:.0f} s', file=sys.stderr
                )
            results[i] = result
            done.setdefault(run.key, label)
            bar.update(1)
        bar.close()

        board = self._board(spec, runs, results, data)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        _write_atomic(out + '.json', json.dumps(board, indent=2) + '\n')
        _write_atomic(out + '.md', table.markdown(board))
        with atomic_path(out + '.png') as tmp_png:
            plotting.plot(board, tmp_png)
        print(table.markdown(board))
        print(f'wrote {out}.json, {out}.md, {out}.png')
        return board

    def _board(self, spec: Spec, runs, results, data) -> Dict:
        rows = []
        for row in spec.rows:
            mine = [
                (run, results[i]) for i, run in enumerate(runs) if run.row == row.name
            ]
            rows.append(
                {
                    'name': row.name,
                    'kind': mine[0][0].kind,
                    'models': list(row.models),
                    'args': list(row.args),
                    'metrics': table.aggregate(
                        [result['report'] for _, result in mine]
                    ),
                    'runs': [
                        {
                            'model': run.model,
                            'model_file': _shown_path(run.model_file),
                            'model_sha256': runner.model_inputs(run.model_file)[
                                'model'
                            ],
                            'seeds': runner.model_seeds(run.model_file),
                            'command': runner.display_command(run.command),
                            'argv': run.command[1:],
                            'seconds': result.get('seconds'),
                            'finished': result.get('finished'),
                            'cached': result.get('cached'),
                            'key': run.key,
                            'work_dir': run.directory,
                            'report': result['report'],
                        }
                        for run, result in mine
                    ],
                }
            )
        argv = ' '.join(shlex.quote(a) for a in sys.argv[1:])
        return {
            'title': spec.title,
            'split': spec.split,
            'created': time.strftime('%Y-%m-%dT%H:%M:%S%z'),
            'command': f'python -m parlai_conkd.leaderboard {argv}'.strip(),
            'versions': _versions(),
            'data': data,
            'spec': spec.as_dict(),
            'protocols': {
                'all': 'every item the gold recommender turn names, items mentioned before included '
                '(KBRD/CRSLab); rankers: recall@k on redial_crs:rec_all; generators: rer_all@k',
                'new': 'only items not mentioned before in the dialogue (He et al., CIKM 2023); '
                'rankers: new_recall@k; generators: rer@k',
            },
            'rows': rows,
        }


def main():
    try:
        Leaderboard.main()
    except (SpecError, runner.RunError) as exc:
        sys.exit(f'error: {exc}')
