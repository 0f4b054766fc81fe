#!/usr/bin/env python3
"""Report on a built ConKD zoo: build times, train_model's final test report, pictures.

    .venv/bin/python projects/conkd/scripts/plot_zoo.py -dp data --out-dir projects/conkd/plots

Reads ``<datapath>/models/conkd/*.zoo.json`` (the stamps: recipe, train args, build seconds) and
``<model>.test`` (train_model's final test report), writes ``zoo_build.json`` in the ``rows``
shape that ``python -m parlai_conkd.scripts.plot_results`` reads, prints a Markdown table, and
draws ``zoo_results.png`` and the gate pictures ``gates_soft.png`` / ``gates_hard.png`` of one test
dialogue (``--dialogue``).
"""

import argparse
import json
import os
import sys

from parlai_conkd import explain, plots
from parlai_conkd.fileio import atomic_write
from parlai_conkd.zoo.conkd import builder, recipe

METRICS = (
    'recall@10',
    'recall@50',
    'ppl',
    'token_acc',
    'kd_loss',
    'kd_gate',
    'kd_rec_share',
)


def _read_report(path):
    with open(path, encoding='utf-8') as f:
        text = f.read()
    return json.loads(text[text.index('{') :])  # ParlAI writes "test:\n{...}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('-dp', '--datapath', required=True)
    parser.add_argument('--out-dir', required=True)
    parser.add_argument(
        '--dialogue', type=int, default=3, help='test dialogue for the gate pictures'
    )
    parser.add_argument(
        '--no-gates',
        action='store_true',
        help='skip the gate pictures (they load models)',
    )
    args = parser.parse_args(argv)
    directory = builder.zoo_dir(os.path.abspath(args.datapath))
    rows, table = [], []
    for model in recipe.MODELS:
        stamp = builder.read_stamp(directory, model)
        if stamp is None:
            sys.exit(
                f'{model} is not built under {directory}: run python -m parlai_conkd.zoo.conkd.builder ensure'
            )
        report = _read_report(os.path.join(directory, model + '.test'))
        metrics = {m: report[m] for m in METRICS if m in report}
        rows.append(
            {
                'model': model,
                'metrics': metrics,
                'examples': report.get('exs'),
                'build_seconds': stamp.get('build_seconds'),
                'recipe': stamp.get('recipe'),
                'source': stamp.get('source'),
                'train_args': stamp.get('train_args'),
            }
        )
        table.append(
            f'| `zoo:conkd/{model}` | {stamp.get("build_seconds", 0) / 60:.1f} min | '
            + ', '.join(f'{k} {v:.4g}' for k, v in metrics.items())
            + f' ({report.get("exs")} ex.) |'
        )
    os.makedirs(args.out_dir, exist_ok=True)
    out_json = os.path.join(args.out_dir, 'zoo_build.json')
    with atomic_write(out_json) as f:
        json.dump(
            {
                'rows': rows,
                'note': 'train_model final test report (--short-final-eval: first 500 '
                'examples); build_seconds: wall time of each train_model run',
            },
            f,
            indent=1,
        )
    total = sum(r['build_seconds'] or 0 for r in rows)
    print('| model | build time | final test report |\n|---|---|---|')
    print('\n'.join(table))
    print(f'| all four | {total / 60:.1f} min | |')
    plots.plot_results(
        plots.load_results([out_json]),
        ['recall@10', 'ppl', 'kd_loss', 'kd_gate'],
        os.path.join(args.out_dir, 'zoo_results.png'),
        'ConKD zoo (default recipe), test',
    )
    if not args.no_gates:
        for gate in ('soft', 'hard'):
            out = os.path.join(args.out_dir, f'gates_{gate}.png')
            explain.main(
                [
                    'plot-gates',
                    '-mf',
                    f'zoo:conkd/{gate}',
                    '-dp',
                    os.path.abspath(args.datapath),
                    '--dialogue',
                    str(args.dialogue),
                    '--max-turns',
                    '4',
                    '--out',
                    out,
                ]
            )
    print(f'wrote {out_json} and pictures in {args.out_dir}')


if __name__ == '__main__':
    main()
