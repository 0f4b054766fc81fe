"""ConKD results table on the ReDial data the task reaches: none / static / hard / soft, one budget.

The teachers are the zoo's (parlai_conkd/zoo/conkd/recipe.py; built, or reused when present). All four students
start from the same dialogue teacher and are fine-tuned with the zoo recipe's student arguments
and the same number of optimiser steps (``--steps``; a step budget, not the recipe's wall-clock
cap, so a busy machine cannot favour one row); only ``--gate`` differs: ``none`` (NLL only, the
no-distillation baseline), ``static`` (lambda = 0.5, the ablation), ``hard`` and ``soft``. Every row
is evaluated with ``parlai eval_model`` on the test fold (greedy decoding, and teacher-forced
tf_rer@k), next to the rec teacher's R@1/10/50 on ``redial_crs:rec``.

    python projects/conkd/student_results.py --datapath runs/conkd/data \
        [--redial-path ../shared/data/redial --redial-meta-path ../shared/data/redial-meta]

Prints a markdown table and writes projects/conkd/results/student.json (commands included).
"""
import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time

METRICS = ('ppl', 'dist-2', 'dist-3', 'dist-4', 'rer@1', 'rer@10', 'rer@50', 'tf_rer@1', 'tf_rer@10',
           'tf_rer@50', 'item_f1', 'item_ratio', 'kd_gate', 'exs')
REC_METRICS = ('recall@1', 'recall@10', 'recall@50', 'new_recall@1', 'new_recall@10', 'new_recall@50')
GATES = ('none', 'static', 'hard', 'soft')


def parlai(args, log_path):
    """Run the parlai CLI, log to a file, return the last JSON report it printed."""
    exe = os.path.join(os.path.dirname(sys.executable), 'parlai')
    cmd = [exe, *map(str, args)]
    print('$ parlai ' + ' '.join(shlex.quote(str(a)) for a in args), flush=True)
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
        log.write(proc.stdout)
    if proc.returncode != 0:
        sys.exit(f'failed (exit {proc.returncode}); see {log_path}')
    reports = [line for line in proc.stdout.splitlines() if line.startswith('{')]
    return json.loads(reports[-1]) if reports else {}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--datapath', default='runs/conkd/data')
    parser.add_argument('--redial-path', default=None)
    parser.add_argument('--redial-meta-path', default=None)
    parser.add_argument('--eval-examples', type=int, default=0, help='0: the whole test fold')
    parser.add_argument('--steps', type=int, default=100, help='optimiser steps per student (same for every gate)')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(os.path.abspath(__file__)), 'results', 'student.json'))
    args = parser.parse_args()
    if args.redial_path:
        os.environ['CONKD_REDIAL_PATH'] = os.path.abspath(args.redial_path)
    if args.redial_meta_path:
        os.environ['CONKD_REDIAL_META_PATH'] = os.path.abspath(args.redial_meta_path)
    datapath = os.path.abspath(args.datapath)
    logs = os.path.join(os.path.dirname(datapath), 'logs')
    os.makedirs(logs, exist_ok=True)

    from parlai_conkd.zoo.conkd import builder, recipe

    started = time.time()
    built = builder.ensure(datapath, ['rec_teacher', 'dialogue_teacher'])
    files = {m: builder.model_file(datapath, m) for m in ('rec_teacher', 'dialogue_teacher')}
    train_minutes = {'zoo teachers': round((time.time() - started) / 60, 1), 'built': built}
    commands = {'teachers': f'python -m parlai_conkd.zoo.conkd.builder ensure -dp {datapath} rec_teacher dialogue_teacher'}
    use_kg = bool(os.environ.get('CONKD_REDIAL_META_PATH'))
    for gate in GATES:
        files[gate] = os.path.join(os.path.dirname(datapath), 'students', gate)
        train = recipe.train_args('soft', files[gate], datapath, files, use_kg=use_kg)
        train[train.index('--gate') + 1] = gate
        if '--max-train-time' in train:  # a step budget instead of the recipe's wall-clock cap
            at = train.index('--max-train-time')
            del train[at:at + 2]
        train += ['--max-train-steps', str(args.steps)]
        commands[gate] = 'parlai train_model ' + ' '.join(shlex.quote(a) for a in train)
        if not os.path.isfile(files[gate]):
            os.makedirs(os.path.dirname(files[gate]), exist_ok=True)
            t0 = time.time()
            parlai(['train_model', *train], os.path.join(logs, f'train-{gate}.log'))
            train_minutes[gate] = round((time.time() - t0) / 60, 1)

    rows = {}
    limit = ['--num-examples', args.eval_examples] if args.eval_examples else []
    for gate in GATES:
        evaluate = ['eval_model', '-t', 'redial_crs', '-dt', 'test', '-mf', files[gate], '-dp', datapath,
                    '--skip-generation', 'false', '--inference', 'greedy', '-bs', 64,
                    '--dialogue-teacher-file', files['dialogue_teacher'], '--rec-teacher-file', files['rec_teacher'],
                    *limit]
        commands[f'eval {gate}'] = 'parlai ' + ' '.join(shlex.quote(str(a)) for a in evaluate)
        t0 = time.time()
        report = parlai(evaluate, os.path.join(logs, f'eval-{gate}.log'))
        rows[gate] = {m: report.get(m) for m in METRICS}
        rows[gate]['eval_minutes'] = round((time.time() - t0) / 60, 1)
    rec_eval = ['eval_model', '-t', 'redial_crs:rec', '-dt', 'test', '-mf', files['rec_teacher'], '-dp', datapath, '-bs', 128]
    commands['eval rec teacher'] = 'parlai ' + ' '.join(shlex.quote(str(a)) for a in rec_eval)
    rec_report = parlai(rec_eval, os.path.join(logs, 'eval-rec-teacher.log'))
    rec = {m: rec_report.get(m) for m in REC_METRICS}

    import torch

    result = {
        'hardware': f'{platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__}, no GPU',
        'data': {'redial': os.environ.get('CONKD_REDIAL_PATH', 'official download'),
                 'meta': os.environ.get('CONKD_REDIAL_META_PATH'), 'eval_fold': 'test'},
        'budget': f'zoo recipe "default" student arguments, {args.steps} optimiser steps each from the '
                  'dialogue teacher; only --gate differs',
        'train_minutes': train_minutes,
        'students': rows,
        'rec_teacher': rec,
        'commands': commands,
        # for `python -m parlai_conkd.explain plot-results` (the rec teacher's R@k beside the
        # students' item ranking at the gold slot)
        'rows': [{'model': f'student, gate {gate}', 'metrics': rows[gate]} for gate in GATES]
        + [{'model': 'rec teacher (R@k)', 'metrics': {f'tf_rer@{k}': rec[f'recall@{k}'] for k in (1, 10, 50)}}],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)

    def fmt(v):
        return '-' if v is None else f'{v:.4g}' if isinstance(v, float) else str(v)

    print('\n| gate | PPL | Dist-2 | Dist-3 | Dist-4 | ReR@1 | ReR@10 | ReR@50 | tf-ReR@1 | tf-ReR@10 | tf-ReR@50 '
          '| item F1 | item ratio | mean gate |')
    print('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
    for gate in GATES:
        r = rows[gate]
        print(f'| {gate} | ' + ' | '.join(fmt(r[m]) for m in METRICS[:-1]) + ' |')
    print(f"\nrec teacher (redial_crs:rec test): R@1/10/50 = "
          f"{fmt(rec['recall@1'])} / {fmt(rec['recall@10'])} / {fmt(rec['recall@50'])}")
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
