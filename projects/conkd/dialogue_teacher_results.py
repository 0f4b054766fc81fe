#!/usr/bin/env python3
"""Train the dialogue teacher (transformer backbone) on ReDial, evaluate it, write a JSON report.

Reruns the "Dialogue teacher" results table of projects/conkd/README.md:

    .venv/bin/python projects/conkd/dialogue_teacher_results.py \
        --redial-path ../shared/data/redial --out runs/dialogue_teacher \
        --json projects/conkd/results/dialogue_teacher_transformer.json

It runs the real ``parlai train_model`` and ``parlai eval_model`` (the exact commands are stored
in the JSON), times training, and prints a table. The budget is deliberately small (a few minutes
on 2 CPU cores): it is a reproducible reference point, not a converged model.
"""

import argparse
import json
import os
import shlex

import _common as common

from parlai_conkd.fileio import atomic_write

REPORTED = [
    'ppl',
    'dist-2',
    'dist-3',
    'dist-4',
    'dist_crs-2',
    'dist_crs-3',
    'dist_crs-4',
    'rer@1',
    'rer@10',
    'rer@50',
    'item_ratio',
    'item_precision',
    'item_f1',
    'bleu-4',
    'dist-1',
    'dist_crs-1',
    'rec_flag_acc',
    'gen_n_toks',
    'f1',
    'exs',
]
#: the zoo's generator (shape, optimizer) and its dialogue teacher's validation rule, which this run
#: shares; where it differs, the values are named below
GENERATOR, DIALOGUE_TEACHER = common.ZOO.generator, common.ZOO.dialogue_teacher
#: an earlier, smaller reference point than the zoo's dialogue teacher (see the module docstring):
#: its own dictionary, feed-forward width and truncation, and a wall-clock budget (--train-seconds)
DICT_MINFREQ = '3'
FFN_SIZE = '256'
TEXT_TRUNCATE, LABEL_TRUNCATE = '128', '40'
#: the flags of ``recipe.train_args('dialogue_teacher', ...)`` this run sets to other values
#: (the ones above, the budget, the batch size of --batchsize) and those it leaves out (a seed,
#: the final eval, the recipe's validation schedule, the rec teacher's item embeddings, the saved
#: decoding: the evaluation passes its own)
DIFFERENT = (
    '--dict-minfreq',
    '--ffn-size',
    '--text-truncate',
    '--label-truncate',
    '--truncate',
    '-bs',
    '--num-epochs',
    '--max-train-time',
    '--validation-max-exs',
    '--log-every-n-secs',
)
LEFT_OUT = (
    '--seed',
    '--short-final-eval',
    '-veps',
    '-vp',
    '--item-embeddings-from',
    *common.ZOO.decoding[::2],
)


def data_args(args):
    return [
        '-t',
        'redial_crs',
        '--redial-path',
        args.redial_path,
        '--datapath',
        args.datapath,
    ]


def train_command(args, model_file: str):
    """The ``parlai`` arguments that train the dialogue teacher."""
    return [
        'train_model',
        '-m',
        'conkd_dialogue_teacher',
        '--backbone',
        'transformer',
        *data_args(args),
        '-mf',
        model_file,
        '--dict-minfreq',
        DICT_MINFREQ,
        '--dict-tokenizer',
        're',
        '--dict-lower',
        'true',
        *common.options(GENERATOR, '--n-layers', '--embedding-size'),
        '--ffn-size',
        FFN_SIZE,
        *common.options(GENERATOR, '--n-heads', '--dropout'),
        '--text-truncate',
        TEXT_TRUNCATE,
        '--label-truncate',
        LABEL_TRUNCATE,
        '--truncate',
        TEXT_TRUNCATE,
        '-bs',
        str(args.batchsize),
        *common.options(GENERATOR, '--optimizer', '-lr', '--lr-scheduler'),
        '--gradient-clip',
        '1.0',
        '--max-train-time',
        str(args.train_seconds),
        '-eps',
        '50',
        '--validation-every-n-secs',
        str(max(args.train_seconds // 3, 60)),
        '--validation-max-exs',
        '400',
        '--validation-metric',
        common.option(DIALOGUE_TEACHER, '-vmt'),
        '--validation-metric-mode',
        common.option(DIALOGUE_TEACHER, '-vmm'),
        *common.options(GENERATOR, '--skip-generation'),
        '--save-after-valid',
        'true',
        '--log-every-n-secs',
        '30',
        '--num-workers',
        '0',
    ]


def eval_command(args, model_file: str, report_file: str):
    """The ``parlai`` arguments that evaluate it on the test fold (greedy, the training's truncation)."""
    return [
        'eval_model',
        '-mf',
        model_file,
        *data_args(args),
        '-dt',
        'test',
        '--skip-generation',
        'false',
        '--inference',
        'greedy',
        '--label-truncate',
        LABEL_TRUNCATE,
        '--text-truncate',
        TEXT_TRUNCATE,
        '--truncate',
        TEXT_TRUNCATE,
        '-bs',
        '64',
        '--report-filename',
        report_file,
    ]


def shown(command) -> str:
    """A command as the JSON records it: the full path of ``parlai``, then its arguments."""
    return shlex.join([common.PARLAI, *command])


def write_json_atomic(path: str, payload) -> None:
    with atomic_write(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write('\n')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--redial-path', required=True, help='ReDial directory (official layout)'
    )
    parser.add_argument(
        '--out', default='runs/dialogue_teacher', help='model + built data go here'
    )
    parser.add_argument(
        '--json', default='projects/conkd/results/dialogue_teacher_transformer.json'
    )
    parser.add_argument(
        '--train-seconds', type=int, default=600, help='training time budget'
    )
    parser.add_argument('--batchsize', type=int, default=32)
    # one thread: on the shared 2-core machine two threads per process thrashed (5x fewer updates/s)
    parser.add_argument('--threads', type=int, default=1, help='OMP/torch threads')
    parser.add_argument(
        '--max-dialogues', type=int, default=0, help='per fold, 0 = all (smoke runs)'
    )
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.redial_path, 'train_data.jsonl')):
        parser.error(f'--redial-path {args.redial_path}: no train_data.jsonl there')
    args.redial_path = os.path.abspath(args.redial_path)
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    args.datapath = os.path.join(out, 'data')
    model_file = os.path.join(out, 'model')
    report_file = os.path.join(out, 'test_report.json')
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONUNBUFFERED='1')

    train = train_command(args, model_file)
    evaluate = eval_command(args, model_file, report_file)
    if args.max_dialogues:
        for command in (train, evaluate):
            command += ['--redial-max-dialogues', str(args.max_dialogues)]
    train_seconds = common.parlai(train, env=env, echo=True)
    eval_seconds = common.parlai(evaluate, env=env, echo=True)
    with open(report_file, encoding='utf-8') as f:
        report = json.load(f)['report']
    with open(model_file + '.trainstats', encoding='utf-8') as f:
        trainstats = json.load(f)
    results = {key: report.get(key) for key in REPORTED}
    payload = {
        'backbone': 'transformer',
        'split': 'test (shared ReDial copy: 272 dialogues)',
        'metrics': results,
        'train_wall_seconds': round(train_seconds, 1),
        'eval_wall_seconds': round(eval_seconds, 1),
        'train_updates': trainstats.get('train_steps'),
        'train_epochs': trainstats.get('total_epochs'),
        'threads': args.threads,
        'max_dialogues_per_fold': args.max_dialogues or 'all',
        'cpu_note': 'shared 2-core CPU, other jobs running at the same time: timings are indicative',
        'train_wall_seconds_includes': 'dictionary build, training, final loss-only valid/test evals',
        'commands': {
            'train': shown(train),
            'eval': shown(evaluate),
        },
    }
    write_json_atomic(args.json, payload)
    print(f'\n{"metric":<16}value')
    for key in REPORTED:
        value = results.get(key)
        print(
            f'{key:<16}{value:.4g}'
            if isinstance(value, (int, float))
            else f'{key:<16}{value}'
        )
    print(f'{"train seconds":<16}{train_seconds:.0f}')
    print(f'wrote {args.json}')


if __name__ == '__main__':
    common.run_main(main)
