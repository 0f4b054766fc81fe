#!/usr/bin/env python
"""Rerun the "Recommendation teacher" table of projects/conkd/README.md; print it and write JSON.

For each variant (popularity, R-GCN without KG, R-GCN with KG): ``parlai train_model`` on the
redial_crs:rec train fold (model selection on its valid fold), then ``parlai eval_model`` on the
test fold, once counting all ranked items and once with the context items excluded from the
ranking. Every command is run through the real CLI and recorded verbatim in the JSON.

    .venv/bin/python projects/conkd/rec_teacher_results.py \\
        --redial-path ../shared/data/redial --meta-path ../shared/data/redial-meta \\
        --out-dir /tmp/conkd_rec --json projects/conkd/results/rec_teacher.json

``--max-dialogues 200 --epochs 1`` gives a quick smoke run (numbers then mean little).
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PARLAI = str(Path(sys.executable).with_name('parlai'))
METRICS = ('recall@1', 'recall@10', 'recall@50', 'mrr', 'ndcg@10', 'ndcg@50')

VARIANTS = {
    'popularity': ['-m', 'conkd_popularity', '-eps', '1'],
    'no_kg': ['-m', 'conkd_rec_teacher', '--use-kg', 'false'],
    'kg': ['-m', 'conkd_rec_teacher', '--use-kg', 'true'],
}


def run(cmd, log_path):
    start = time.monotonic()
    with open(log_path, 'w') as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = Path(log_path).read_text()[-4000:]
        raise SystemExit(f'command failed ({proc.returncode}): {" ".join(cmd)}\n{tail}')
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--redial-path', required=True)
    parser.add_argument('--meta-path', required=True)
    parser.add_argument('--out-dir', default=None, help='model files and logs (default: a temp dir)')
    parser.add_argument('--json', default=None, help='where to write the results JSON')
    parser.add_argument('--epochs', type=float, default=4, help='training epochs of the R-GCN variants')
    parser.add_argument('--batchsize', type=int, default=64)
    parser.add_argument('--max-dialogues', type=int, default=0, help='slice of every fold (0: all)')
    parser.add_argument('--variants', default=','.join(VARIANTS), help='comma-separated subset')
    parser.add_argument('extra', nargs='*', help='extra options for the R-GCN train_model runs (after --)')
    args = parser.parse_args()

    out_dir = Path(args.out_dir or tempfile.mkdtemp(prefix='conkd_rec_'))
    out_dir.mkdir(parents=True, exist_ok=True)
    data = [
        '-t', 'redial_crs:rec', '--redial-path', args.redial_path,
        '--redial-meta-path', args.meta_path, '--redial-max-dialogues', str(args.max_dialogues),
    ]
    previous = {}
    if args.json and Path(args.json).is_file():
        # rerunning a subset of --variants keeps the other variants' results
        previous = json.loads(Path(args.json).read_text()).get('variants', {})
    results = {
        'host': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                 'omp_num_threads': os.environ.get('OMP_NUM_THREADS')},
        'variants': previous,
    }
    for name in args.variants.split(','):
        model_file = out_dir / name / 'model'
        if model_file.parent.exists():
            # train_model would resume an existing model file instead of training afresh
            shutil.rmtree(model_file.parent)
        model_file.parent.mkdir(parents=True)
        train = [PARLAI, 'train_model', *VARIANTS[name], *data, '-mf', str(model_file),
                 '-bs', str(args.batchsize)]
        if name != 'popularity':
            # validate 4x per epoch and keep the best valid recall@10 (the agent's default metric)
            train += ['-eps', str(args.epochs), '-veps', '0.25', '-vp', '8', *args.extra]
        train_seconds = run(train, model_file.parent / 'train.log')
        entry = {'train_command': ' '.join(train), 'train_seconds': round(train_seconds, 1)}
        for key, exclude in (('test', 'false'), ('test_exclude_context', 'true')):
            report = model_file.parent / f'{key}.json'
            evaluate = [PARLAI, 'eval_model', '-mf', str(model_file), *data, '-dt', 'test',
                        '-bs', str(args.batchsize), '--rank-exclude-context', exclude,
                        '--report-filename', str(report)]
            run(evaluate, model_file.parent / f'{key}.log')
            metrics = json.loads(report.read_text())['report']
            entry[key] = {m: metrics[m] for m in METRICS}
            entry[key]['examples'] = metrics['exs']
            entry[f'{key}_command'] = ' '.join(evaluate)
        results['variants'][name] = entry
        print(f'{name}: trained in {train_seconds:.0f}s; test {entry["test"]}', flush=True)

    print('\n| model | R@1 | R@10 | R@50 | MRR | R@10 (context excluded) | train time |')
    print('|---|---|---|---|---|---|---|')
    for name, entry in results['variants'].items():
        t, x = entry['test'], entry['test_exclude_context']
        print(f'| {name} | {t["recall@1"]:.3f} | {t["recall@10"]:.3f} | {t["recall@50"]:.3f} | '
              f'{t["mrr"]:.3f} | {x["recall@10"]:.3f} | {entry["train_seconds"]:.0f} s |')
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix('.tmp')
        tmp.write_text(json.dumps(results, indent=2))
        os.replace(tmp, path)
        print(f'wrote {path}')


if __name__ == '__main__':
    main()
