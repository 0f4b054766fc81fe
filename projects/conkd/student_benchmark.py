"""Cost of ConKD distillation, measured side by side in one run (not a test: prints a table, writes JSON).

Compares, on the same backbone, data and batches:

- training step time: ConKD with live teachers / NLL-only, and ConKD from the teacher cache / NLL-only;
- inference: student ms per generated token / NLL-only model ms per token (same architecture:
  distillation changes the weights, not the network, so this should be ~1);
- peak RSS of a process that builds each configuration and runs its steps.

Timings interleave the configurations round-robin in a shuffled order (so machine noise and
order effects hit all of them alike) and report medians; run it on a quiet machine, a loaded
2-core box swings single calls by 2-4x. Teachers are built with a few training steps (their speed does not depend on how
well they are trained). Targets from the issue: <= 1.35 live, <= 1.10 cached, <= 1.02 inference.

    python projects/conkd/student_benchmark.py --redial-path ../shared/data/redial \
        --redial-meta-path ../shared/data/redial-meta --out projects/conkd/results/student_benchmark.json
"""
import argparse
import json
import multiprocessing
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SHAPE = ['--n-layers', '2', '--n-heads', '2', '--embedding-size', '128', '--ffn-size', '256',
         '--truncate', '128', '--text-truncate', '128', '--label-truncate', '40', '--dropout', '0']


def _parlai(args, env):
    parlai = os.path.join(os.path.dirname(sys.executable), 'parlai')
    subprocess.run([parlai, *map(str, args)], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def build_teachers(workdir, data_args, env):
    rec, dial = os.path.join(workdir, 'rec'), os.path.join(workdir, 'dial')
    if not os.path.isfile(rec):
        _parlai(['train_model', '-t', 'redial_crs:rec', '-m', 'conkd_rec_teacher', '-mf', rec,
                 '--max-train-steps', 2, '-bs', 32, '--validation-max-exs', 8, *data_args], env)
    if not os.path.isfile(dial):
        _parlai(['train_model', '-t', 'redial_crs', '-m', 'conkd_dialogue_teacher', '-mf', dial,
                 '--max-train-steps', 2, '-bs', 32, '--validation-max-exs', 8, '--skip-generation', 'true',
                 *SHAPE, *data_args], env)
    return rec, dial


def make_agent(workdir, data_args, gate, rec, dial, batchsize, cache=None):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    args = ['-t', 'redial_crs', '-m', 'conkd_student', '--gate', gate, '-dt', 'train:ordered',
            '-bs', batchsize, '--dialogue-teacher-file', dial, '--rec-teacher-file', rec,
            '--dict-file', dial + '.dict', '-mf', os.path.join(workdir, f'student-{gate}'),
            '--optimizer', 'adam', '-lr', '1e-3', *SHAPE, *data_args]
    if cache:
        args += ['--teacher-cache', cache]
    return create_agent(ParlaiParser(True, True).parse_args([str(a) for a in args]))


def make_batches(agent, data_args, batchsize, count):
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    opt = ParlaiParser(True, True).parse_args(
        ['-t', 'redial_crs', '-m', 'repeat_label', '-dt', 'train:ordered', *map(str, data_args)])
    teacher = create_task(opt, [agent.clone()]).get_agents()[0]
    batches = []
    for _ in range(count):
        observations = []
        for _ in range(batchsize):
            clone = agent.clone()
            observations.append(clone.observe(teacher.act()))
        batches.append(agent.batchify(observations))
    return batches


def train_step(agent, batch):
    """One optimiser step, as ParlAI's batch_act would run it (without metric bookkeeping)."""
    agent._control_local_metrics(disabled=True)
    try:
        agent.train_step(batch)
    finally:
        agent._control_local_metrics(enabled=True)


def time_train_step(agent, batch):
    start = time.perf_counter()
    train_step(agent, batch)
    return time.perf_counter() - start


def time_generation(agent, batch, length=20):
    """Greedy generation of exactly ``length`` tokens per example (untrained models stop at random
    points otherwise, which would compare different amounts of per-call overhead)."""
    import torch

    agent.beam_min_length = length
    agent.model.eval()
    agent._control_local_metrics(disabled=True)
    start = time.perf_counter()
    with torch.no_grad():
        beam_preds_scores, _ = agent._generate(batch, agent.beam_size, length)
    elapsed = time.perf_counter() - start
    agent._control_local_metrics(enabled=True)
    tokens = sum(len(pred) for pred, _score, *_ in beam_preds_scores)
    return elapsed, tokens


def peak_rss_child(conn, workdir, data_args, gate, rec, dial, batchsize, cache, steps):
    agent = make_agent(workdir, data_args, gate, rec, dial, batchsize, cache)
    for batch in make_batches(agent, data_args, batchsize, steps):
        train_step(agent, batch)
    conn.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def measure_peak_rss(*args):
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context('spawn').Process(target=peak_rss_child, args=(child, *args))
    process.start()
    value = parent.recv()
    process.join()
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--redial-path', default=os.environ.get('CONKD_REDIAL_PATH'))
    parser.add_argument('--redial-meta-path', default=os.environ.get('CONKD_REDIAL_META_PATH'))
    parser.add_argument('--workdir', default=None, help='reuse teachers built here (default: a temp dir)')
    parser.add_argument('--batchsize', type=int, default=32)
    parser.add_argument('--batches', type=int, default=6)
    parser.add_argument('--rounds', type=int, default=3, help='round-robin passes over the batches')
    parser.add_argument('--out', default=os.path.join(os.path.dirname(__file__), 'results', 'student_benchmark.json'))
    args = parser.parse_args()
    if not args.redial_path:
        sys.exit('pass --redial-path (or set CONKD_REDIAL_PATH) to a ReDial directory')

    import torch
    from tqdm import tqdm

    workdir = args.workdir or tempfile.mkdtemp(prefix='conkd-bench-')
    data_args = ['-dp', os.path.join(workdir, 'data'), '--redial-path', args.redial_path,
                 '--redial-max-dialogues', 200]
    if args.redial_meta_path:
        data_args += ['--redial-meta-path', args.redial_meta_path]
    env = dict(os.environ)
    print(f'[bench] building throwaway teachers in {workdir}', flush=True)
    rec, dial = build_teachers(workdir, data_args, env)

    cache = os.path.join(workdir, 'teacher.cache')
    if os.path.exists(cache):
        os.unlink(cache)
    agents = {
        'nll': make_agent(workdir, data_args, 'none', rec, dial, args.batchsize),
        'live': make_agent(workdir, data_args, 'soft', rec, dial, args.batchsize),
        'live_hard': make_agent(workdir, data_args, 'hard', rec, dial, args.batchsize),
        'cached': make_agent(workdir, data_args, 'soft', rec, dial, args.batchsize, cache),
    }
    batches = make_batches(agents['nll'], data_args, args.batchsize, args.batches)
    order = random.Random(0)
    # inference first, on the freshly built agents (same architecture: the cost should match)
    gen = {'nll': [], 'live': []}
    for _ in tqdm(range(args.rounds * 2), desc='generation (round-robin)'):
        for batch in batches[:2]:
            names = list(gen)
            order.shuffle(names)
            for name in names:
                elapsed, tokens = time_generation(agents[name], batch)
                gen[name].append(elapsed / max(tokens, 1))
    for batch in batches:  # fill the cache (and warm every configuration up) once, untimed
        for agent in agents.values():
            train_step(agent, batch)
    times = {name: [] for name in agents}
    for _ in tqdm(range(args.rounds), desc='train steps (round-robin)'):
        for batch in batches:
            names = list(agents)
            order.shuffle(names)  # no configuration always runs first (or right after another)
            for name in names:
                times[name].append(time_train_step(agents[name], batch))
    step_ms = {name: 1000 * statistics.median(values) for name, values in times.items()}
    ms_per_token = {name: 1000 * statistics.median(values) for name, values in gen.items()}
    print('[bench] peak RSS: one process per configuration', flush=True)
    rss = {name: measure_peak_rss(workdir, data_args, gate, rec, dial, args.batchsize,
                                  cache if name == 'cached' else None, 2)
           for name, gate in (('nll', 'none'), ('live', 'soft'), ('cached', 'soft'))}

    result = {
        'hardware': f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, '
                    f'{torch.get_num_threads()} threads',
        'setup': {'backbone': 'transformer ' + ' '.join(SHAPE), 'batchsize': args.batchsize,
                  'batches': args.batches, 'rounds': args.rounds, 'gates': 'soft (live, cached), hard (live)',
                  'data': args.redial_path},
        'train_step_ms_median': step_ms,
        'ratio_live_over_nll': step_ms['live'] / step_ms['nll'],
        'ratio_live_hard_over_nll': step_ms['live_hard'] / step_ms['nll'],
        'ratio_cached_over_nll': step_ms['cached'] / step_ms['nll'],
        'generation_ms_per_token': ms_per_token,
        'ratio_inference_student_over_nll': ms_per_token['live'] / ms_per_token['nll'],
        'peak_rss_mb': rss,
        'targets': {'live': 1.35, 'cached': 1.10, 'inference': 1.02},
    }
    rows = [
        ('train step, live teachers, soft gate / NLL-only', result['ratio_live_over_nll'], 1.35,
         f"{step_ms['live']:.0f} / {step_ms['nll']:.0f} ms"),
        ('train step, live teachers, hard gate / NLL-only', result['ratio_live_hard_over_nll'], 1.35,
         f"{step_ms['live_hard']:.0f} / {step_ms['nll']:.0f} ms"),
        ('train step, cached teachers / NLL-only', result['ratio_cached_over_nll'], 1.10,
         f"{step_ms['cached']:.0f} / {step_ms['nll']:.0f} ms"),
        ('generation ms/token, student / NLL-only', result['ratio_inference_student_over_nll'], 1.02,
         f"{ms_per_token['live']:.2f} / {ms_per_token['nll']:.2f} ms"),
    ]
    print('\n| measurement | ratio | target | raw |\n|---|---|---|---|')
    for name, ratio, target, raw in rows:
        print(f'| {name} | {ratio:.3f} | <= {target} | {raw} |')
    print('| peak RSS (MB): NLL-only / live / cached | | | '
          f"{rss['nll']:.0f} / {rss['live']:.0f} / {rss['cached']:.0f} |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
        json.dump(result, f, indent=2)
    print(f'\n[bench] wrote {args.out}')


if __name__ == '__main__':
    main()
