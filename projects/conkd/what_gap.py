#!/usr/bin/env python
"""Issue #24's "what" and "when" gaps (validation fold; ``--fold test`` to report): ConKD students against the pipeline.

The zoo recipe's teachers (``builder ensure dialogue_teacher``: rec teacher and dialogue teacher,
reused when present), then for each ``--variants`` entry and seed a soft-gate student with the zoo
recipe's student arguments plus the variant's flags (only those and ``--seed`` differ), then on the
validation fold (settings are chosen there; the test fold is for reporting):

* the rec teacher's R@10 on new items (``redial_crs:rec``), the bar for "what";
* each student and the pipeline (dialogue teacher + the rec teacher's items, ``--fill-items-from``)
  with the results table's decoding: ``tf_rer@10`` (the gold film's rank at the gold reply's item
  slot, teacher-forced: "what"), ``when_f1`` ("when"), ReR@10, item precision, item ratio, PPL.

Prints a table (mean ± sample sd over seeds) and writes it as JSON::

    python projects/conkd/what_gap.py -dp data --seeds 0 \\
        --variants base=,item_kd=--rec-item-kd-weight:1.0 --json projects/conkd/results/what_gap.json

Model files and logs go to ``--out-dir`` (default ``<datapath>/../what_gap/``); a model file or
report already there is reused.
"""

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from typing import Dict, List, Sequence, Tuple

import _common as common
from student_results import TABLE_DECODING, train_model, zoo_args

from parlai_conkd.fileio import atomic_write

#: the generators' evaluation: generated replies (the models are saved with --skip-generation true)
GENERATE = ['--skip-generation', 'false', *TABLE_DECODING]
#: what the table shows, per row: (column, metric)
COLUMNS = (
    ('tf-ReR@10', 'tf_rer@10'),
    ('ReR@10', 'rer@10'),
    ('item P', 'item_precision'),
    ('when F1', 'when_f1'),
    ('what ReR@10', 'what_rer@10'),
    ('item ratio', 'item_ratio'),
    ('PPL', 'ppl'),
)


def parse_variants(text: str) -> Dict[str, List[str]]:
    """``name=flag:value flag:value,...`` -> ``{name: [flag, value, ...]}`` (``base=``: no flags).

    ValueError naming the entry for one without ``=`` or a flag without a value."""
    variants = {}
    for entry in filter(None, (e.strip() for e in text.split(','))):
        name, sep, flags = entry.partition('=')
        if not sep or not name:
            raise ValueError(f'--variants: {entry!r} is not name=flag:value ...')
        args = []
        for pair in flags.split():
            flag, sep, value = pair.partition(':')
            if not sep or not flag.startswith('--'):
                raise ValueError(
                    f'--variants: {pair!r} in {entry!r} is not --flag:value'
                )
            args += [flag, value]
        variants[name] = args
    return variants


def evaluate(
    model_file: str,
    datapath: str,
    out_dir: str,
    name: str,
    extra: Sequence[str],
    fold: str = 'valid',
) -> Dict:
    """``parlai eval_model`` on ``fold``; the report's metrics (reused when its report is already
    in ``out_dir``)."""
    report = os.path.join(out_dir, f'{name}.{fold}.json')
    if not os.path.isfile(report):
        args = [
            'eval_model',
            '-mf',
            model_file,
            '-dp',
            datapath,
            '-dt',
            fold,
            '-bs',
            '32',
            '--report-filename',
            report,
            *extra,
        ]
        common.parlai(args, os.path.join(out_dir, f'{name}.{fold}.log'), echo=True)
    with open(report, encoding='utf-8') as f:
        return json.load(f)['report']


def mean_sd(values: Sequence[float]) -> Tuple[float, float]:
    mean = sum(values) / len(values)
    sd = (
        math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        if len(values) > 1
        else float('nan')
    )
    return mean, sd


def table(rows: Dict[str, List[Dict]], rec_r10: float) -> str:
    lines = [
        '| row | n | '
        + ' | '.join(c for c, _ in COLUMNS)
        + ' | tf-ReR@10 / rec R@10 |',
        '|---|---|' + '---:|' * (len(COLUMNS) + 1),
    ]
    for name, reports in rows.items():
        cells = []
        for _, metric in COLUMNS:
            values = [r[metric] for r in reports if metric in r]
            if not values:
                cells.append('')
                continue
            mean, sd = mean_sd(values)
            cells.append(f'{mean:.3f}' + ('' if math.isnan(sd) else f' ± {sd:.3f}'))
        tf = [r['tf_rer@10'] for r in reports if 'tf_rer@10' in r]
        cells.append(f'{mean_sd(tf)[0] / rec_r10:.2f} x' if tf and rec_r10 else '')
        lines.append(f'| {name} | {len(reports)} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument('-dp', '--datapath', default='data')
    parser.add_argument('--seeds', default='0')
    parser.add_argument(
        '--variants',
        default='base=,item_kd=--rec-item-kd-weight:1.0',
        help='name=--flag:value ...,name=... (the soft student\'s extra flags per row)',
    )
    parser.add_argument(
        '--fold',
        default='valid',
        choices=('valid', 'test'),
        help='valid: choosing settings; test: reporting a chosen one (the shared test fold)',
    )
    parser.add_argument(
        '--out-dir',
        default=None,
        help='model files and reports (default <datapath>/../what_gap; reports there are reused '
        'by name, so give each set of teachers its own)',
    )
    parser.add_argument('--json', default='projects/conkd/results/what_gap.json')
    args = parser.parse_args(argv)
    try:
        variants = parse_variants(args.variants)
    except ValueError as err:
        parser.error(str(err))
    seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    datapath = os.path.abspath(args.datapath)
    out_dir = args.out_dir or os.path.join(os.path.dirname(datapath), 'what_gap')
    os.makedirs(out_dir, exist_ok=True)

    subprocess.run(
        [sys.executable, '-m', 'parlai_conkd.zoo.conkd.builder', 'ensure']
        + ['-dp', datapath, 'dialogue_teacher'],
        check=True,
    )
    zoo = os.path.join(datapath, 'models', 'conkd')
    teachers = {t: os.path.join(zoo, t) for t in ('rec_teacher', 'dialogue_teacher')}

    rec = evaluate(
        teachers['rec_teacher'],
        datapath,
        out_dir,
        'rec_teacher',
        ['-t', 'redial_crs:rec'],
        args.fold,
    )
    rec_r10 = rec['new_recall@10']
    rows = {
        'pipeline': [
            evaluate(
                teachers['dialogue_teacher'],
                datapath,
                out_dir,
                'pipeline',
                ['-t', 'redial_crs', '--fill-items-from', teachers['rec_teacher']]
                + GENERATE,
                args.fold,
            )
        ]
    }
    commands = {}
    for name, flags in variants.items():
        rows[f'soft {name}'] = []
        for seed in seeds:
            model_file = os.path.join(out_dir, f'soft-{name}-s{seed}')
            train = list(
                zoo_args('soft', model_file, datapath, teachers, True, seed, 'soft')
            ) + list(flags)
            commands[f'{name} seed {seed}'] = shlex.join(['train_model', *train])
            if not os.path.isfile(model_file):
                train_model(train, model_file + '.train.log')
            rows[f'soft {name}'].append(
                evaluate(
                    model_file,
                    datapath,
                    out_dir,
                    f'soft-{name}-s{seed}',
                    ['-t', 'redial_crs', *GENERATE],
                    args.fold,
                )
            )
    text = table(rows, rec_r10)
    print(f'rec teacher R@10 new ({args.fold}): {rec_r10:.3f}\n{text}')
    with atomic_write(args.json) as f:
        json.dump(
            {
                'fold': args.fold,
                'rec_teacher': rec,
                'rows': rows,
                'variants': variants,
                'seeds': seeds,
                'train_commands': commands,
                'table': text,
            },
            f,
            indent=1,
        )


if __name__ == '__main__':
    common.run_main(main)
