#!/usr/bin/env python
"""Same recipe command twice -> the same weights? (issue [reproducible]); prints a table, writes JSON.

For each zoo model, the default recipe's exact ``train_model`` arguments (``recipe.train_args``:
seed, shapes, decoding), with the recipe's thread count, run twice *at the same time* (so the two
runs see a busy machine, as builds on a shared machine do), shortened to ``--max-train-steps`` for
the generators; then the weights' sha256 (``builder.weights_sha256``) of the two runs are compared.
With ``--deterministic false`` it shows what the default deterministic kernels buy.

    python projects/conkd/reproducibility_check.py -dp runs/zoo1/data \\
        --json projects/conkd/results/reproducibility.json

Needs the zoo teachers in ``-dp`` (``builder ensure -dp ... rec_teacher dialogue_teacher``) and
``$CONKD_REDIAL_PATH`` / ``$CONKD_REDIAL_META_PATH`` like the zoo build.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import _common as common

MODELS = ('rec_teacher', 'dialogue_teacher', 'soft')


def shortened(train_args, model, args):
    """The recipe's ``train_model`` arguments with a shorter run appended (the last value wins):
    ``--rec-epochs`` epochs for the rec teacher, ``--steps`` updates for the generators (validating
    halfway on 64 examples); ``--deterministic`` when given."""
    if model == 'rec_teacher':
        extra = ['--num-epochs', str(args.rec_epochs)]
    else:
        extra = [
            '--max-train-steps',
            str(args.steps),
            '-vstep',
            str(args.steps // 2),
            '--validation-max-exs',
            '64',
        ]
    if args.deterministic:
        extra += ['--deterministic', args.deterministic]
    return [*train_args, *extra]


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '-dp',
        '--datapath',
        required=True,
        help='a datapath with the zoo teachers built',
    )
    parser.add_argument('--models', default=','.join(MODELS))
    parser.add_argument(
        '--rec-epochs', type=float, default=1.0, help='rec teacher: epochs per run'
    )
    parser.add_argument(
        '--steps', type=int, default=16, help='generators: updates per run'
    )
    parser.add_argument(
        '--deterministic',
        default=None,
        choices=('true', 'false'),
        help='pass --deterministic (default: leave it unset, the agents\' default)',
    )
    parser.add_argument('--work-dir', default=None)
    parser.add_argument('--json', default=None)
    args = parser.parse_args(argv)

    from parlai_conkd.zoo.conkd import builder, recipe

    datapath = os.path.abspath(args.datapath)
    teachers = {
        m: builder.model_file(datapath, m) for m in ('rec_teacher', 'dialogue_teacher')
    }
    missing = [f for f in teachers.values() if not os.path.isfile(f)]
    if missing:
        sys.exit(
            f'missing zoo teachers {missing}: run python -m parlai_conkd.zoo.conkd.builder ensure '
            f'-dp {args.datapath} rec_teacher dialogue_teacher first'
        )
    work = args.work_dir or tempfile.mkdtemp(prefix='conkd-repro-')
    threads = common.ZOO.threads
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    rows = []
    for model in args.models.split(','):
        runs, files = [], []
        for run in ('a', 'b'):
            model_file = os.path.join(work, f'{model}_{run}', 'model')
            os.makedirs(os.path.dirname(model_file), exist_ok=True)
            train = shortened(
                recipe.train_args(model, model_file, datapath, teachers), model, args
            )
            runs.append(
                common.start(['train_model', *train], model_file + '.log', env=env)
            )
            files.append(model_file)
        started = time.time()
        for running in runs:
            common.wait(running)
        sums = [builder.weights_sha256(f) for f in files]
        rows.append(
            {
                'model': model,
                'identical': sums[0] == sums[1],
                'sha256': sums,
                'seconds': round(time.time() - started, 1),
                'run': (
                    f'{args.rec_epochs} epoch'
                    if model == 'rec_teacher'
                    else f'{args.steps} updates'
                ),
                'command': 'parlai train_model ' + ' '.join(train),
            }
        )
        print(
            f'{model}: {"identical" if rows[-1]["identical"] else "DIFFERENT"} '
            f'({sums[0][:12]} / {sums[1][:12]})',
            flush=True,
        )
    import torch

    result = {
        'threads': threads,
        'torch': torch.__version__,
        'deterministic': args.deterministic or 'default',
        'cpus': os.cpu_count(),
        'rows': rows,
    }
    print('\n| model | run | deterministic | two concurrent runs |\n|---|---|---|---|')
    for row in rows:
        print(
            f'| {row["model"]} | {row["run"]} | {result["deterministic"]} | '
            f'{"identical" if row["identical"] else "different"} |'
        )
    if args.json:
        existing = {}
        if os.path.isfile(args.json):
            with open(args.json) as f:
                existing = json.load(f)
        existing[result['deterministic']] = result
        from parlai_conkd.fileio import atomic_write

        with atomic_write(args.json) as f:
            json.dump(existing, f, indent=1)
        print(f'wrote {args.json}')


if __name__ == '__main__':
    common.run_main(main)
