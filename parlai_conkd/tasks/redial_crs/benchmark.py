"""Measure redial_crs: episodes/examples per teacher and fold, build time, first-load time.

    python -m parlai_conkd.tasks.redial_crs.benchmark --redial-path ../shared/data/redial \
        [--redial-meta-path ../shared/data/redial-meta] [--out stats.json]

Builds into a fresh temporary datapath (so the build is really timed), then loads each teacher's
folds once through ParlAI (``create_task``), prints a Markdown table and writes JSON.
"""

import argparse
import json
import os
import platform
import tempfile
import time

TEACHERS = ('redial_crs', 'redial_crs:rec')
FOLDS = ('train', 'valid', 'test')


def measure(redial_path: str, meta_path: str = None) -> dict:
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    from parlai_conkd.redial import build as redial_build

    result = {
        'redial_path': os.path.abspath(redial_path),
        'meta_path': meta_path,
        'rows': [],
    }
    with tempfile.TemporaryDirectory(prefix='redial_crs_bench_') as datapath:
        os.environ['PARLAI_DATAPATH'] = datapath
        base = {
            'datapath': datapath,
            'redial_path': redial_path,
            'redial_meta_path': meta_path,
        }
        started = time.perf_counter()
        built = redial_build.build(base)
        result['build_s'] = round(time.perf_counter() - started, 2)
        with open(os.path.join(built, redial_build.STATS_FILE)) as f:
            result['build_stats'] = json.load(f)
        for task in TEACHERS:
            for fold in FOLDS:
                kwargs = {'redial_meta_path': meta_path} if meta_path else {}
                opt = ParlaiParser(True, True).parse_kwargs(
                    task=task,
                    datatype='train:ordered' if fold == 'train' else fold,
                    model='fixed_response',
                    fixed_response='none',
                    datapath=datapath,
                    redial_path=redial_path,
                    batchsize=1,
                    **kwargs,
                )
                started = time.perf_counter()
                teacher = create_task(opt, []).get_task_agent()
                episodes, examples = teacher.num_episodes(), teacher.num_examples()
                load_s = time.perf_counter() - started
                result['rows'].append(
                    {
                        'teacher': task,
                        'fold': fold,
                        'episodes': episodes,
                        'examples': examples,
                        'first_load_s': round(load_s, 2),
                    }
                )
    result['machine'] = (
        f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs'
    )
    # Timings on a shared machine mean little without how busy it was.
    result['load_average_1min'] = round(os.getloadavg()[0], 2)
    return result


def markdown(result: dict) -> str:
    lines = [
        '| teacher | fold | episodes | examples | first load (s) |',
        '|---|---|---:|---:|---:|',
    ]
    for row in result['rows']:
        lines.append(
            f"| `{row['teacher']}` | {row['fold']} | {row['episodes']:,} | {row['examples']:,} "
            f"| {row['first_load_s']:.2f} |"
        )
    lines.append(
        f"\nbuild (preprocess all folds + catalog): {result['build_s']:.2f} s "
        f"on {result['machine']} (load average {result['load_average_1min']})"
    )
    return '\n'.join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--redial-path', required=True)
    parser.add_argument('--redial-meta-path', default=None)
    parser.add_argument(
        '--out', default=None, help='write the measurements as JSON here'
    )
    args = parser.parse_args(argv)
    result = measure(args.redial_path, args.redial_meta_path)
    print(markdown(result))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
