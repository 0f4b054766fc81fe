#!/usr/bin/env python
"""Train what the ConKD results table compares, at one budget and several seeds, then tabulate it.

1. the zoo teachers (``builder ensure``: rec teacher, dialogue teacher; reused when present) and the
   rec teacher again with the other seeds (same recipe arguments, ``--seed`` changed);
2. the students ``none`` (NLL only, the no-distillation baseline), ``static`` (lambda = 0.5, the
   ablation), ``hard`` and ``soft``, each with every seed, all with the zoo recipe's student
   arguments (same teachers, same epochs, same decoding): only ``--gate`` and ``--seed`` differ.
   Seed 0 of hard and soft is what the zoo itself builds; the zoo's files are reused when present
   and their weights checked against a fresh build's checksum when ``--check-zoo`` is given;
3. a leaderboard spec (``--spec``) with every row of the table, run by
   ``python -m parlai_conkd.leaderboard`` (both recall protocols, JSON, Markdown, PNG).

    python projects/conkd/student_results.py -dp data --seeds 0,1,2 \\
        --spec projects/conkd/leaderboards/conkd_test.spec.json
    python -m parlai_conkd.leaderboard --spec projects/conkd/leaderboards/conkd_test.spec.json -dp data

Model files go to ``<datapath>/../conkd_results/``; every command is printed and logged there.
"""

import argparse
import json
import os
import shlex

import _common as common

from parlai_conkd.zoo.conkd import recipe

GATES = ('none', 'static', 'hard', 'soft')
#: the decoding of every generator row, chosen on the valid fold with the zoo's soft student
#: (leaderboards/decoding_valid.*: the best ReR@10 among decodings with Dist_crs-2 >= 0.3 and item
#: ratio in [0.35, 0.6]); deterministic, so the seeds' spread is the models' alone
TABLE_DECODING = [
    '--inference',
    'greedy',
    '--beam-size',
    '1',
    '--beam-block-ngram',
    '3',
    '--beam-context-block-ngram',
    '3',
]
#: the search the zoo models are saved with (more varied replies for chat; a row of its own): the
#: recipe's decoding, whose n-gram blocking TABLE_DECODING has already and whose --item-decoding
#: is the one the models were saved with
ZOO_DECODING = common.options(
    common.ZOO.decoding, '--inference', '--topk', '--beam-delay', '--beam-size'
)


def train_model(args, log_path):
    """``parlai train_model <args>`` (printed), its output in ``log_path``; the seconds it took."""
    return round(common.parlai(['train_model', *args], log_path, echo=True), 1)


def zoo_args(model, model_file, datapath, teachers, use_kg, seed, gate=None):
    """The zoo recipe's ``train_model`` arguments of ``model`` (``recipe.train_args``) with only
    ``--seed`` (and, for a student, ``--gate``) changed."""
    values = {'--seed': str(seed), **({'--gate': gate} if gate else {})}
    return recipe.with_values(
        recipe.train_args(model, model_file, datapath, teachers, use_kg=use_kg), values
    )


def spec_rows(files, seeds):
    """The rows of the results table (test fold), as leaderboard spec rows. A gate trained with
    fewer seeds than asked (``--gates``/``--seeds`` subsets) shows the seeds it has."""
    rec, dialogue = files['rec_teacher'], files['dialogue_teacher']
    students = {
        gate: [m for m in (files.get((gate, s)) for s in seeds) if m is not None]
        for gate in GATES
    }
    fill = ['--fill-items-from', rec[0]]
    token = ['--item-decoding', 'token']
    baselines = (
        [
            {'name': 'popularity', 'models': [files['popularity']]},
            {
                'name': 'repeat (mentioned items, then popularity)',
                'models': [files['repeat']],
            },
            {
                'name': 'repeat, mentioned items only',
                'models': [files['repeat']],
                'args': ['--repeat-fill', 'none'],
            },
        ]
        if files.get('popularity') and files.get('repeat')
        else []
    )
    generators = [
        {'name': 'rec teacher', 'models': rec},
        {
            'name': 'pipeline: dialogue teacher + rec teacher items',
            'models': [dialogue],
            'args': fill,
        },
        {'name': 'dialogue teacher', 'models': [dialogue]},
        {'name': 'student, gate none (NLL only)', 'models': students['none']},
        {'name': 'student, gate static (lambda 0.5)', 'models': students['static']},
        {'name': 'student, gate hard', 'models': students['hard']},
        {'name': 'student, gate soft', 'models': students['soft']},
        {
            'name': 'student, gate soft, zoo decoding (delayed beam)',
            'models': students['soft'],
            'args': ZOO_DECODING,
        },
        # the paper's plain decoding (an item only where it is the single best token)
        {
            'name': 'ablation: student soft, token decoding',
            'models': students['soft'],
            'args': token,
        },
        {
            'name': 'ablation: pipeline, token decoding',
            'models': [dialogue],
            'args': fill + token,
        },
    ]
    # every generator row decodes the same way (its own args win)
    for row in generators[1:]:
        row['args'] = TABLE_DECODING + row.get('args', [])
    return baselines + generators


#: the README's compact table: (column, ranker metric, generator metric, digits)
SUMMARY = [
    ('R@10 / ReR@10 new', 'new_recall@10', 'rer@10', 3),
    ('R@50 / ReR@50 new', 'new_recall@50', 'rer@50', 3),
    ('R@1 / item P', 'new_recall@1', 'item_precision', 3),
    ('item F1', None, 'item_f1', 3),
    ('item ratio', None, 'item_ratio', 3),
    ('when F1', None, 'when_f1', 3),
    ('what ReR@10 / rec R@10', None, ('what_rer@10', 'what_rec@10'), 3),
    ('Dist_crs-2', None, 'dist_crs-2', 3),
    ('BLEU-4', None, 'bleu-4', 3),
    ('PPL', None, 'ppl', 1),
]


def _mean_sd(value, digits) -> str:
    """``mean ± sd`` of a leaderboard metric (``''`` when absent; no ``±`` for one run)."""
    if not value:
        return ''
    text = f"{value['mean']:.{digits}f}"
    if value.get('std') is not None:
        text += f" ± {value['std']:.{digits}f}"
    return text


def summary_table(board):
    """The README's compact Markdown table of a leaderboard JSON (mean ± sample sd over seeds).

    A column no row has a number for is left out (a leaderboard run before its metric existed,
    such as "when" and "what" of issue #24).
    """
    rows = []
    for row in board['rows']:
        cells = []
        for _, ranker_metric, generator_metric, digits in SUMMARY:
            metric = ranker_metric if row['kind'] == 'ranker' else generator_metric
            metrics = metric if isinstance(metric, tuple) else (metric,)
            parts = [_mean_sd(row['metrics'].get(m), digits) for m in metrics if m]
            cells.append(' / '.join(parts) if parts and all(parts) else '')
        rows.append((row, cells))
    shown = [i for i in range(len(SUMMARY)) if any(cells[i] for _, cells in rows)]
    lines = [
        '| model | n | ' + ' | '.join(SUMMARY[i][0] for i in shown) + ' |',
        '|---|---|' + '---:|' * len(shown),
    ]
    for row, cells in rows:
        lines.append(
            f"| {row['name']} | {len(row['runs'])} | "
            + ' | '.join(cells[i] for i in shown)
            + ' |'
        )
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('-dp', '--datapath', default='data')
    parser.add_argument('--seeds', default='0,1,2')
    parser.add_argument('--gates', default=','.join(GATES))
    parser.add_argument(
        '--spec', default='projects/conkd/leaderboards/conkd_test.spec.json'
    )
    parser.add_argument(
        '--check-zoo',
        action='store_true',
        help='also train seed 0 of hard/soft afresh and compare weights with the zoo',
    )
    parser.add_argument(
        '--collect-only',
        action='store_true',
        help='train nothing: write the spec from the model files already there',
    )
    parser.add_argument(
        '--summary',
        metavar='BOARD_JSON',
        help='train nothing: print the compact table of a leaderboard JSON',
    )
    args = parser.parse_args(argv)
    if args.summary:
        if not os.path.isfile(args.summary):
            parser.error(f'--summary: no such file {args.summary!r}')
        try:
            with open(args.summary) as f:
                board = json.load(f)
        except json.JSONDecodeError as err:
            parser.error(f'--summary: {args.summary} is not valid JSON ({err})')
        if not isinstance(board, dict) or not isinstance(board.get('rows'), list):
            parser.error(
                f'--summary: {args.summary} is not a leaderboard JSON (no "rows" list); '
                'make one with python -m parlai_conkd.leaderboard'
            )
        print(summary_table(board))
        return

    from parlai_conkd.redial.build import ENV_META_PATH
    from parlai_conkd.zoo.conkd import builder

    datapath = os.path.abspath(args.datapath)
    out = os.path.join(os.path.dirname(datapath), 'conkd_results')
    os.makedirs(out, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(',')]
    use_kg = bool(os.environ.get(ENV_META_PATH))  # as the zoo builder decides
    builder.ensure(datapath, ['rec_teacher', 'dialogue_teacher'])
    teachers = {
        m: builder.model_file(datapath, m) for m in ('rec_teacher', 'dialogue_teacher')
    }
    # zoo models by their zoo names, the others relative to the working directory (spec rules)
    files = {'rec_teacher': [], 'dialogue_teacher': 'zoo:conkd/dialogue_teacher'}
    log = {'seeds': seeds, 'commands': {}, 'seconds': {}}

    def build(path, arguments):
        """Train ``path`` unless it is there (or --collect-only); record its command."""
        if not os.path.isfile(path) and not args.collect_only:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            log['seconds'][path] = train_model(arguments, path + '.log')
        log['commands'][path] = 'parlai train_model ' + shlex.join(arguments)

    for seed in seeds:
        if seed == recipe.SEED:
            files['rec_teacher'].append('zoo:conkd/rec_teacher')
            continue
        path = os.path.join(out, f'rec_teacher_s{seed}', 'model')
        if args.collect_only and not os.path.isfile(path):
            continue
        build(path, zoo_args('rec_teacher', path, datapath, None, use_kg, seed))
        files['rec_teacher'].append(os.path.relpath(path))
    # the baselines every table keeps (seconds to train; no seed: counts, not weights)
    for name in ('popularity', 'repeat'):
        path = os.path.join(out, name, 'model')
        build(
            path,
            [
                '-t',
                'redial_crs:rec',
                '-m',
                f'conkd_{name}',
                '-dp',
                datapath,
                '-mf',
                path,
                '-eps',
                '1',
                '-bs',
                '64',
            ],
        )
        files[name] = os.path.relpath(path) if os.path.isfile(path) else None
    for gate in args.gates.split(','):
        for seed in seeds:
            zoo_model = gate in ('soft', 'hard') and seed == recipe.SEED
            if zoo_model and not args.check_zoo:
                builder.ensure(datapath, [gate])
                files[(gate, seed)] = f'zoo:conkd/{gate}'
                continue
            path = os.path.join(out, f'{gate}_s{seed}', 'model')
            if args.collect_only and not os.path.isfile(path):
                print(
                    f'{gate} seed {seed}: not trained, left out (--collect-only)',
                    flush=True,
                )
                continue
            # every gate from the soft student's arguments: only --gate and --seed differ
            build(path, zoo_args('soft', path, datapath, teachers, use_kg, seed, gate))
            files[(gate, seed)] = os.path.relpath(path)
            if zoo_model:
                zoo = builder.weights_sha256(builder.model_file(datapath, gate))
                print(
                    f'{gate} seed {seed}: weights {"==" if zoo == builder.weights_sha256(path) else "!="} '
                    f'the zoo build',
                    flush=True,
                )
    spec = {
        'title': 'ConKD on the shared ReDial copy, test fold: recommenders, pipeline, dialogue teacher, students',
        'split': 'test',
        'eval_args': ['-bs', '64'],
        'rows': [row for row in spec_rows(files, seeds) if row['models']],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.spec)), exist_ok=True)
    with open(args.spec, 'w') as f:
        json.dump(spec, f, indent=1)
    log_file = os.path.join(out, 'student_results.json')
    # runs that trained other gates/seeds keep their records
    if os.path.isfile(log_file):
        with open(log_file) as f:
            previous = json.load(f)
        for key in ('commands', 'seconds'):
            log[key] = {**previous.get(key, {}), **log[key]}
    with open(log_file, 'w') as f:
        json.dump(log, f, indent=1)
    print(
        f'wrote {args.spec}; now: python -m parlai_conkd.leaderboard --spec {args.spec} -dp {args.datapath}'
    )


if __name__ == '__main__':
    common.run_main(main)
