"""``python -m parlai_conkd.human_eval <command>``: the human-evaluation route, step by step.

logs       parlai eval_model --world-logs for each model file / zoo name
pairings   ACUTE-Eval pairings JSONL from those logs (+ onboarding pairs)
serve      the local rating server on 127.0.0.1
analyze    win rates, binomial tests, table + PNG chart
mturk      create / collect / balance: the Mechanical Turk route (boto3)
standin    a local stand-in of the MTurk API for rehearsals (127.0.0.1)
"""

import argparse
import json
import sys
import time


def _add_study_args(p, need_results=True):
    p.add_argument('--pairings', required=True, help='ACUTE-Eval pairings JSONL')
    if need_results:
        p.add_argument('--results', required=True, help='results JSONL (appended to)')
    p.add_argument(
        '--question',
        action='append',
        dest='questions',
        help='question preset, repeatable: talk, recommend, fluency (default: all three)',
    )
    p.add_argument(
        '--pairs-per-unit',
        type=int,
        default=3,
        help='comparisons per unit besides onboarding',
    )
    p.add_argument(
        '--onboarding-per-worker',
        type=int,
        default=1,
        help='onboarding comparisons at the start of a rater\'s first unit (0: none)',
    )
    p.add_argument(
        '--onboarding-threshold',
        type=float,
        default=0.75,
        help='fraction of onboarding comparisons to get right (ACUTE\'s default 0.75)',
    )
    p.add_argument('--seed', type=int, default=None)


def _study(args, results_path):
    from parlai_conkd.human_eval.pairings import read_pairings
    from parlai_conkd.human_eval.questions import PRESETS, resolve
    from parlai_conkd.human_eval.study import Study
    from parlai_conkd.human_eval.units import ResultStore

    questions = resolve(args.questions or list(PRESETS))
    return Study(
        read_pairings(args.pairings),
        questions,
        ResultStore(results_path),
        pairs_per_unit=args.pairs_per_unit,
        onboarding_per_worker=args.onboarding_per_worker,
        onboarding_threshold=args.onboarding_threshold,
        seed=args.seed,
    )


def cmd_logs(args, extra):
    from parlai_conkd.human_eval.conversations import collect_logs

    runs = collect_logs(
        args.model_files,
        args.outdir,
        task=args.task,
        datatype=args.datatype,
        num_examples=args.num_examples,
        names=args.names,
        extra_args=extra,
    )
    for run in runs:
        print(f'{run.name}\t{run.log_path}')


def cmd_pairings(args, extra):
    from parlai_conkd.human_eval.conversations import catalog_for_log, load_catalog
    from parlai_conkd.human_eval.pairings import (
        build_pairings,
        onboarding_from_gold,
        read_pairings,
        write_pairings,
    )

    logs = {}
    for spec in args.logs:
        name, sep, path = spec.partition('=')
        if not sep or not name or not path:
            raise SystemExit(f'--log expects NAME=PATH, got {spec!r}')
        if name in logs:
            raise SystemExit(
                f'--log {name}= is given twice ({logs[name]} and {path}); one log per model name'
            )
        logs[name] = path
    catalog = (
        load_catalog(args.catalog)
        if args.catalog
        else catalog_for_log(next(iter(logs.values())))
    )
    if catalog is None:
        print(
            '[human_eval] no item catalog (--catalog, or a redial_crs log\'s metadata): logs with item '
            'tokens will be refused',
            file=sys.stderr,
        )
    source = f'{args.task}:{args.datatype}'
    pairs = []
    if args.onboarding_file:
        pairs += [
            dict(p, is_onboarding=True) for p in read_pairings(args.onboarding_file)
        ]
    if args.onboarding:
        pairs += onboarding_from_gold(
            next(iter(logs.values())),
            args.onboarding,
            catalog,
            args.max_turns,
            source,
            args.seed,
        )
    pairs += build_pairings(
        logs, catalog, args.max_turns, args.pairs_per_matchup, source, args.seed
    )
    write_pairings(pairs, args.out)
    onboarding = sum(p['is_onboarding'] for p in pairs)
    print(f'wrote {len(pairs)} pairings ({onboarding} onboarding) to {args.out}')


def cmd_serve(args, extra):
    from parlai_conkd.human_eval.server import start_server

    study = _study(args, args.results)
    server, url = start_server(study, args.host, args.port)
    print(
        f'rating page: {url}/   (results -> {args.results}; Ctrl-C to stop)', flush=True
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


def cmd_analyze(args, extra):
    from parlai_conkd.human_eval.analysis import (
        first_ratings,
        markdown_table,
        responses,
        win_rates,
        write_reports,
    )
    from parlai_conkd.human_eval.units import read_results

    records = [r for path in args.results for r in read_results(path)]
    matchups = win_rates(records, keep_failed=args.keep_failed)
    paths = write_reports(matchups, args.outdir, args.title)
    repeated = first_ratings(responses(records))[1]
    if repeated:
        print(
            f'[human_eval] {repeated} repeated rating(s) (same rater, question and comparison) not '
            'counted: each rater\'s first rating is kept',
            file=sys.stderr,
        )
    print(markdown_table(matchups))
    print('\n'.join(f'wrote {p}' for p in paths.values()))


def _mturk_client(args):
    from parlai_conkd.human_eval.mturk import make_client

    if args.target == 'live' and not args.endpoint_url and not args.i_mean_live:
        raise SystemExit(
            'refusing to use live MTurk (real money) without --i-mean-live'
        )
    return make_client(args.target, args.endpoint_url, args.profile)


def cmd_mturk(args, extra):
    from parlai_conkd.human_eval import mturk

    client = _mturk_client(args)
    if args.mturk_command == 'balance':
        print(client.get_account_balance()['AvailableBalance'])
        return
    study = _study(args, args.results)
    if args.mturk_command == 'create':
        created = mturk.create_hits(
            client,
            study,
            args.manifest,
            args.num_hits,
            args.reward,
            args.assignments_per_hit,
            lifetime_s=args.lifetime_hours * 3600,
            duration_s=args.duration_minutes * 60,
            block_qualification=args.block_qualification,
            min_approval=args.min_approval,
            min_approved_hits=args.min_approved_hits,
            locales=args.locales or (),
        )
        for entry in created:
            if args.endpoint_url:  # the local stand-in's worker side
                link = f'{args.endpoint_url}/worker/accept?hitId={entry["hit_id"]}&workerId=<worker>'
            else:
                link = f'{mturk.WORKER_SITES[args.target]}/projects/{entry["hit_type_id"]}/tasks'
            print(f'{entry["hit_id"]}\t{link}')
        print(f'created {len(created)} HITs; manifest {args.manifest}')
    elif args.mturk_command == 'collect':
        counts = mturk.collect(
            client,
            study,
            args.manifest,
            approve=not args.no_approve,
            block=not args.no_block,
        )
        print(json.dumps(counts))


def cmd_standin(args, extra):
    from parlai_conkd.human_eval.mturk_standin import start_standin

    server, _, url = start_standin(args.host, args.port)
    print(
        f'MTurk stand-in: requester API {url} (use --endpoint-url {url}); '
        f'worker: {url}/worker/accept?hitId=HIT&workerId=W',
        flush=True,
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m parlai_conkd.human_eval',
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest='command', required=True)

    p = sub.add_parser(
        'logs',
        help='conversation logs via parlai eval_model --world-logs; '
        'arguments after "--" go to parlai eval_model',
    )
    p.add_argument(
        '-mf',
        '--model-file',
        action='append',
        dest='model_files',
        required=True,
        help='model file or zoo name, repeatable',
    )
    p.add_argument(
        '--name',
        action='append',
        dest='names',
        help='speaker name per model (default: from the file)',
    )
    p.add_argument('--outdir', required=True)
    p.add_argument('-t', '--task', default='redial_crs')
    p.add_argument('-dt', '--datatype', default='test')
    p.add_argument(
        '-n',
        '--num-examples',
        type=int,
        default=50,
        help='examples (turns) to run; logs keep whole episodes seen so far',
    )
    p.set_defaults(func=cmd_logs)

    p = sub.add_parser(
        'pairings', help='ACUTE-Eval pairings JSONL from conversation logs'
    )
    p.add_argument(
        '--log',
        action='append',
        dest='logs',
        required=True,
        help='NAME=PATH, repeatable (>= 2)',
    )
    p.add_argument('--out', required=True)
    p.add_argument(
        '--catalog',
        help='item catalog JSON or ReDial movies_with_mentions.csv: item tokens -> '
        'titles (default: the catalog of the redial_crs build named in the first log\'s metadata)',
    )
    p.add_argument(
        '--max-turns', type=int, default=None, help='model turns kept per conversation'
    )
    p.add_argument(
        '--pairs-per-matchup',
        type=int,
        default=None,
        help='contexts sampled per model pair',
    )
    p.add_argument(
        '--onboarding',
        type=int,
        default=1,
        help='attention-check pairs from gold replies vs a broken reply (0: none)',
    )
    p.add_argument(
        '--onboarding-file',
        help='extra onboarding pairs in ParlAI\'s onboarding.json format',
    )
    p.add_argument('-t', '--task', default='redial_crs', help='recorded in tags')
    p.add_argument('-dt', '--datatype', default='test', help='recorded in tags')
    p.add_argument('--seed', type=int, default=0)
    p.set_defaults(func=cmd_pairings)

    p = sub.add_parser('serve', help='serve the rating page on 127.0.0.1')
    _add_study_args(p)
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=8765)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser('analyze', help='win rates + binomial tests -> table and PNG')
    p.add_argument('--results', nargs='+', required=True)
    p.add_argument('--outdir', required=True)
    p.add_argument('--title')
    p.add_argument(
        '--keep-failed', action='store_true', help='keep raters who failed onboarding'
    )
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser('mturk', help='the Mechanical Turk route (boto3)')
    msub = p.add_subparsers(dest='mturk_command', required=True)
    for name in ('create', 'collect', 'balance'):
        m = msub.add_parser(name)
        m.add_argument('--target', choices=['sandbox', 'live'], default='sandbox')
        m.add_argument(
            '--endpoint-url',
            help='another MTurk API endpoint (e.g. the local stand-in)',
        )
        m.add_argument('--profile', help='AWS credentials profile')
        m.add_argument(
            '--i-mean-live', action='store_true', help='required with --target live'
        )
        if name != 'balance':
            _add_study_args(m)
            m.add_argument(
                '--manifest', required=True, help='HIT manifest JSONL (requester side)'
            )
        if name == 'create':
            m.add_argument('--num-hits', type=int, required=True)
            m.add_argument(
                '--reward', default='0.50', help='USD per assignment, e.g. 0.50'
            )
            m.add_argument('--assignments-per-hit', type=int, default=1)
            m.add_argument('--lifetime-hours', type=int, default=72)
            m.add_argument('--duration-minutes', type=int, default=30)
            m.add_argument('--block-qualification', default='conkd_acute_blocked')
            m.add_argument(
                '--min-approval',
                type=int,
                help='e.g. 95: PercentAssignmentsApproved >=',
            )
            m.add_argument(
                '--min-approved-hits', type=int, help='e.g. 1000: NumberHITsApproved >='
            )
            m.add_argument(
                '--locale',
                action='append',
                dest='locales',
                help='country code, repeatable',
            )
        if name == 'collect':
            m.add_argument('--no-approve', action='store_true')
            m.add_argument('--no-block', action='store_true')
        m.set_defaults(func=cmd_mturk)

    p = sub.add_parser('standin', help='local stand-in of the MTurk API on 127.0.0.1')
    p.add_argument('--host', default='127.0.0.1')
    p.add_argument('--port', type=int, default=8766)
    p.set_defaults(func=cmd_standin)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = []
    if '--' in argv:
        cut = argv.index('--')
        argv, extra = argv[:cut], argv[cut + 1 :]
    args = build_parser().parse_args(argv)
    try:
        args.func(args, extra)
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
