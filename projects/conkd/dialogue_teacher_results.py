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
import subprocess
import sys
import time

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


def parlai_bin() -> str:
    return os.path.join(os.path.dirname(sys.executable), 'parlai')


def train_command(args, model_file: str):
    return [
        parlai_bin(),
        'train_model',
        '-m',
        'conkd_dialogue_teacher',
        '--backbone',
        'transformer',
        '-t',
        'redial_crs',
        '--redial-path',
        args.redial_path,
        '--datapath',
        args.datapath,
        '-mf',
        model_file,
        '--dict-minfreq',
        '3',
        '--dict-tokenizer',
        're',
        '--dict-lower',
        'true',
        '--n-layers',
        '2',
        '--embedding-size',
        '128',
        '--ffn-size',
        '256',
        '--n-heads',
        '4',
        '--dropout',
        '0.1',
        '--text-truncate',
        '128',
        '--label-truncate',
        '40',
        '--truncate',
        '128',
        '-bs',
        str(args.batchsize),
        '--optimizer',
        'adam',
        '-lr',
        '1e-3',
        '--lr-scheduler',
        'none',
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
        'ppl',
        '--validation-metric-mode',
        'min',
        '--skip-generation',
        'true',
        '--save-after-valid',
        'true',
        '--log-every-n-secs',
        '30',
        '--num-workers',
        '0',
    ]


def eval_command(args, model_file: str, report_file: str):
    return [
        parlai_bin(),
        'eval_model',
        '-mf',
        model_file,
        '-t',
        'redial_crs',
        '--redial-path',
        args.redial_path,
        '--datapath',
        args.datapath,
        '-dt',
        'test',
        '--skip-generation',
        'false',
        '--inference',
        'greedy',
        '--label-truncate',
        '40',
        '--text-truncate',
        '128',
        '--truncate',
        '128',
        '-bs',
        '64',
        '--report-filename',
        report_file,
    ]


def run(command, env):
    print('$', ' '.join(shlex.quote(c) for c in command), flush=True)
    started = time.time()
    subprocess.run(command, env=env, check=True)
    return time.time() - started


def write_json_atomic(path: str, payload) -> None:
    with atomic_write(path) as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.write('\n')


def main():
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
    args = parser.parse_args()
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
    train_seconds = run(train, env)
    eval_seconds = run(evaluate, env)
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
            'train': ' '.join(shlex.quote(c) for c in train),
            'eval': ' '.join(shlex.quote(c) for c in evaluate),
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
    main()
