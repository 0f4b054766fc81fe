#!/usr/bin/env python
"""The rec teacher ablation of projects/conkd/README.md ("Recommendation teacher"): print it, write JSON.

Every variant is trained with ``parlai train_model`` on the redial_crs:rec train fold for each
seed (model selection on the valid fold, as in the zoo recipe), then ``parlai eval_model`` on the
valid fold (uncalibrated, T = 1, and at the fitted temperature) and on the test fold. Every command
is run through the real CLI and recorded verbatim in the JSON. The variant the zoo uses is chosen
on the *valid* fold: best mean valid R@10, ties within one seed spread broken by valid NLL.

    .venv/bin/python projects/conkd/rec_teacher_results.py \\
        --redial-path ../shared/data/redial --meta-path ../shared/data/redial-meta \\
        --out-dir runs/rec_ablation --json projects/conkd/results/rec_teacher.json --seeds 0,1,2

``--variants`` picks a subset; rerunning keeps the other variants' results in the JSON.
``--max-dialogues 200 --seeds 0`` gives a quick smoke run (numbers then mean little).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
from pathlib import Path

import _common as common

from parlai_conkd.redial.build import ENV_META_PATH, ENV_PATH

ZOO = common.ZOO
RANKING = ('new_recall@1', 'new_recall@10', 'new_recall@50', 'new_mrr')
SHARPNESS = ('gold_nll', 'top1_prob', 'entropy')

#: the previous zoo teacher (KBRD-style) first, then one change at a time, then two checks
_KBRD = ['--cooccurrence', 'false', '--item-bias-init', 'zero']
VARIANTS = {
    'popularity': ['-m', 'conkd_popularity', '-eps', '1'],
    'kbrd': ['-m', 'conkd_rec_teacher', *_KBRD],
    '+cooccurrence': ['-m', 'conkd_rec_teacher', '--item-bias-init', 'zero'],
    '+seeker mentions': [
        '-m',
        'conkd_rec_teacher',
        '--item-bias-init',
        'zero',
        '--redial-rec-seeker-mentions',
        'true',
    ],
    '+popularity prior (zoo)': [
        '-m',
        'conkd_rec_teacher',
        '--redial-rec-seeker-mentions',
        'true',
    ],
    'zoo 128-d': [
        '-m',
        'conkd_rec_teacher',
        '--redial-rec-seeker-mentions',
        'true',
        '--rec-dim',
        '128',
    ],
    'zoo without KG': [
        '-m',
        'conkd_rec_teacher',
        '--redial-rec-seeker-mentions',
        'true',
        '--use-kg',
        'false',
    ],
}
#: what every R-GCN variant shares: the zoo recipe's rec teacher (its epochs, validation rule,
#: size and batch size)
TRAIN = [
    '-eps',
    str(ZOO.epochs['rec_teacher']),
    *common.options(
        ZOO.rec_teacher, '-veps', '-vmt', '-vmm', '-vp', '--rec-dim', '-bs'
    ),
]
#: the zoo recipe's rec teacher arguments (``recipe.train_args``) that the zoo variant (TRAIN and
#: VARIANTS['+popularity prior (zoo)']) does not pass, and why
LEFT_OUT = {
    '--use-kg': 'true by default; the variant without the KG sets it',
    '--validation-max-exs': "the recipe's -1 is the default: the whole valid fold",
    '--max-train-time': "the recipe's guard against a stuck machine; every variant runs its epochs",
    '--log-every-n-secs': 'progress output only',
    '--short-final-eval': 'the evaluations are eval_model runs of their own',
}
#: every training and evaluation runs with $OMP_NUM_THREADS, 1 when unset
THREADS = os.environ.get('OMP_NUM_THREADS', '1')


def run(args, log_path):
    """``parlai <args>``, its output in ``log_path``; the seconds it took."""
    return common.parlai(args, log_path, env=dict(os.environ, OMP_NUM_THREADS=THREADS))


def evaluate(model_file, data, fold, extra, name):
    report = model_file.parent / f'{name}.json'
    cmd = [
        'eval_model',
        '-mf',
        str(model_file),
        *data,
        '-dt',
        fold,
        '-bs',
        '128',
        '--report-filename',
        str(report),
        *extra,
    ]
    run(cmd, model_file.parent / f'{name}.log')
    metrics = json.loads(report.read_text())['report']
    return {
        m: metrics[m] for m in (*RANKING, *SHARPNESS, 'exs') if m in metrics
    }, ' '.join([common.PARLAI, *cmd])


def temperature_of(model_file):
    import torch

    states = torch.load(model_file, map_location='cpu', weights_only=False)
    value = states['model'].get('temperature')
    return None if value is None else round(float(value), 4)


def mean_sd(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (
        statistics.stdev(values) if len(values) > 1 else 0.0
    )


def summarise(entry):
    out = {}
    for block in ('valid', 'valid_t1', 'test'):
        for metric in (*RANKING, *SHARPNESS):
            mean, sd = mean_sd(
                [seed.get(block, {}).get(metric) for seed in entry['seeds'].values()]
            )
            if mean is not None:
                out[f'{block}/{metric}'] = [round(mean, 4), round(sd, 4)]
    mean, sd = mean_sd([seed.get('temperature') for seed in entry['seeds'].values()])
    if mean is not None:
        out['temperature'] = [round(mean, 3), round(sd, 3)]
    return out


def cell(summary, key, digits=3):
    if key not in summary:
        return '-'
    mean, sd = summary[key]
    return f'{mean:.{digits}f} ± {sd:.{digits}f}'


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--redial-path',
        default=os.environ.get(ENV_PATH),
        help=f'ReDial directory (default: ${ENV_PATH})',
    )
    parser.add_argument(
        '--meta-path',
        '--redial-meta-path',
        dest='meta_path',
        default=os.environ.get(ENV_META_PATH),
        help=f'movie KG directory (default: ${ENV_META_PATH})',
    )
    parser.add_argument(
        '--out-dir', default='runs/rec_ablation', help='model files and logs'
    )
    parser.add_argument('--datapath', default='data', help='ParlAI datapath (-dp)')
    parser.add_argument('--json', default=None, help='where to write the results JSON')
    parser.add_argument(
        '--seeds', default='0,1,2', help='comma-separated --seed values'
    )
    parser.add_argument(
        '--max-dialogues', type=int, default=0, help='slice of every fold (0: all)'
    )
    parser.add_argument(
        '--variants', default=','.join(VARIANTS), help='comma-separated subset'
    )
    parser.add_argument(
        '--table-only',
        action='store_true',
        help='train nothing: print the Markdown table of the results in --json',
    )
    args = parser.parse_args(argv)
    if args.table_only:
        if not (args.json and Path(args.json).is_file()):
            raise SystemExit(
                f'--table-only needs an existing --json file, got {args.json!r}'
            )
        print_table(json.loads(Path(args.json).read_text())['variants'])
        return

    if not (args.redial_path and args.meta_path):
        parser.error(
            f'--redial-path and --meta-path (or ${ENV_PATH} and ${ENV_META_PATH}) '
            'are required (unless --table-only)'
        )
    out_dir = Path(args.out_dir)
    data = [
        '-t',
        'redial_crs:rec',
        '--redial-path',
        args.redial_path,
        '--redial-meta-path',
        args.meta_path,
        '--redial-max-dialogues',
        str(args.max_dialogues),
        '-dp',
        args.datapath,
    ]
    seeds = [int(s) for s in args.seeds.split(',')]
    previous = {}
    if args.json and Path(args.json).is_file():
        previous = json.loads(Path(args.json).read_text()).get('variants', {})
        # results of variants this script no longer defines (or an older layout) are dropped
        previous = {
            k: v for k, v in previous.items() if k in VARIANTS and 'summary' in v
        }
    results = {
        'host': {
            'cpus': os.cpu_count(),
            'platform': platform.platform(),
            'omp_num_threads': THREADS,
        },
        'seeds': seeds,
        'selection': 'best mean valid new_recall@10; ties within one seed spread broken by valid gold_nll',
        'variants': previous,
    }
    for name in args.variants.split(','):
        if name not in VARIANTS:
            raise SystemExit(
                f'--variants: unknown variant {name!r}; choose from {list(VARIANTS)}'
            )
        entry = {'seeds': {}}
        for seed in seeds:
            model_file = (
                out_dir
                / name.replace(' ', '_').replace('+', 'plus_').replace(',', '')
                / f'seed{seed}'
                / 'model'
            )
            if model_file.parent.exists():
                # train_model would resume an existing model
                shutil.rmtree(model_file.parent)
            model_file.parent.mkdir(parents=True)
            train = [
                'train_model',
                *data,
                '-mf',
                str(model_file),
                '--seed',
                str(seed),
            ]
            # the variant's own arguments come last so that they override the shared ones
            train += ([] if name == 'popularity' else TRAIN) + VARIANTS[name]
            seconds = run(train, model_file.parent / 'train.log')
            run_entry = {
                'train_command': ' '.join([common.PARLAI, *train]),
                'train_seconds': round(seconds, 1),
            }
            run_entry['valid'], run_entry['valid_command'] = evaluate(
                model_file, data, 'valid', [], 'valid'
            )
            run_entry['test'], run_entry['test_command'] = evaluate(
                model_file, data, 'test', [], 'test'
            )
            if name != 'popularity':
                run_entry['temperature'] = temperature_of(model_file)
                run_entry['valid_t1'], _ = evaluate(
                    model_file, data, 'valid', ['--rec-temperature', '1'], 'valid_t1'
                )
            entry['seeds'][str(seed)] = run_entry
            print(
                f'{name} seed {seed}: {seconds:.0f}s; test {run_entry["test"]}',
                flush=True,
            )
        entry['summary'] = summarise(entry)
        results['variants'][name] = entry
        if args.json:  # after every variant: an interrupted run keeps what it finished
            write_json(args.json, results)

    print_table(results['variants'])
    if args.json:
        write_json(args.json, results)
        print(f'wrote {args.json}')


def print_table(variants):
    print(
        '\n| variant | valid R@10 | valid NLL (T=1 -> fitted T) | test R@1 | test R@10 | test R@50 | '
        'test NLL | fitted T | train s |'
    )
    print('|---|---|---|---|---|---|---|---|---|')
    for name, entry in variants.items():
        s = entry['summary']
        seconds = statistics.fmean(
            run['train_seconds'] for run in entry['seeds'].values()
        )
        nll = (
            f'{cell(s, "valid_t1/gold_nll", 2)} -> {cell(s, "valid/gold_nll", 2)}'
            if 'valid_t1/gold_nll' in s
            else '-'
        )
        print(
            f'| {name} | {cell(s, "valid/new_recall@10")} | {nll} | '
            f'{cell(s, "test/new_recall@1")} | {cell(s, "test/new_recall@10")} | '
            f'{cell(s, "test/new_recall@50")} | {cell(s, "test/gold_nll", 2)} | {cell(s, "temperature", 2)} | '
            f'{seconds:.0f} |'
        )


def write_json(path, payload):
    from parlai_conkd.fileio import atomic_write

    with atomic_write(str(path)) as f:
        f.write(json.dumps(payload, indent=2))


if __name__ == '__main__':
    common.run_main(main)
