"""The GPU check of issue #17: GPU tests, a short fp16 student training and the side-by-side benchmark.

Run through ``bash scripts/gpu_check.sh`` (which does the set-up first); prints a table and writes
``projects/conkd/results/gpu_check.json`` (and, when ``$OUT`` is set, copies it and the step logs
there). Steps, each under its own time limit inside ``--budget-s`` so the table always comes out:

1. environment: torch, CUDA, the GPU, whether our CPU patches are inactive;
2. benchmark: ``student_benchmark.py`` on a DialoGPT-small-shaped random GPT-2 (no download): live
   ConKD step / NLL step, cached / NLL, student ms per token / base generator ms per token,
   item-aware / plain greedy decoding (when ``--item-decoding`` exists);
3. fp16 training: ``parlai train_model -m conkd_student --fp16 true`` for a few dozen steps on that
   model, with the benchmark's teachers: loss, KD, gate, weights finite;
4. modern recipe (issue #25, GPU only): its generator options (LoRA, bf16) on a random
   Qwen2.5-0.5B-shaped model for a few dialogue-teacher steps: loss finite, peak GPU memory;
5. GPU tests: ``pytest -m gpu`` over the test files that hold them.

``--device cpu --quick`` is the CPU dry run (tiny model, a few steps): the same code path, which
tests/foundation/test_gpu_check_script.py runs. Without a GPU the GPU tests are reported as skipped.
"""

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time

import _common as common
import student_benchmark

from parlai_conkd.redial.build import ENV_META_PATH, ENV_PATH

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: the files holding the tests marked ``gpu`` (collecting only these keeps the step short)
GPU_TEST_FILES = (
    'tests/student/test_devices.py',
    'tests/student/test_mixed_precision.py',
    'tests/dialogue/test_causal_lm.py',
)
#: issue #17's targets on a GPU
TARGETS = student_benchmark.GPU_TARGETS
#: per mode: benchmark shape and sizes, training steps, step time limits (seconds)
MODES = {
    'full': dict(
        shape='dialogpt-small',
        batchsize=16,
        batches=4,
        rounds=3,
        dialogues=200,
        train_steps=30,
        limits={'benchmark': 210, 'training': 100, 'tests': 240},
    ),
    # the dry run checks the code path, not speed: limits only guard against hangs on a busy CPU
    'quick': dict(
        shape='tiny-gpt2',
        batchsize=4,
        batches=2,
        rounds=1,
        dialogues=20,
        train_steps=3,
        limits={'benchmark': 900, 'training': 600, 'tests': 600},
    ),
}


class Budget:
    def __init__(self, seconds):
        self.end = time.monotonic() + seconds

    def left(self, cap):
        return max(0.0, min(cap, self.end - time.monotonic()))


def _run(cmd, log_path, timeout, env=None):
    """Run ``cmd`` with its output in ``log_path``; (returncode or None when killed at the timeout, output)."""
    with open(log_path, 'w', encoding='utf-8') as log:
        try:
            proc = subprocess.run(
                [str(c) for c in cmd],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})},
                timeout=timeout,
            )
            code = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
    with open(log_path, encoding='utf-8', errors='replace') as log:
        return code, log.read()


# --------------------------------------------------------------------------- steps
def environment(device):
    import parlai.utils.distributed  # noqa: F401  (applies the distributed patches)
    import torch

    from parlai_conkd import compat

    info = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'cuda_available': torch.cuda.is_available(),
        'device': device,
        'cpu_cores': os.cpu_count(),
        # True on a CUDA machine would mean a worker without --no-cuda gets our gloo/CPU path
        'cpu_patches_active_for_a_default_worker': compat.cpu_distributed({}),
    }
    for package in ('transformers', 'parlai', 'huggingface_hub', 'numpy'):
        try:
            from importlib.metadata import version

            info[package] = version(package)
        except Exception:
            info[package] = None
    if torch.cuda.is_available():
        info.update(
            gpu=torch.cuda.get_device_name(),
            gpus=torch.cuda.device_count(),
            capability='.'.join(map(str, torch.cuda.get_device_capability())),
            gpu_memory_gib=round(
                torch.cuda.get_device_properties(0).total_memory / 2**30, 1
            ),
            cuda=torch.version.cuda,
        )
    ok = device == 'cpu' or (
        info['cuda_available'] and not info['cpu_patches_active_for_a_default_worker']
    )
    return {'status': 'ok' if ok else 'failed', **info}


def benchmark(mode, args, workdir, budget, logs):
    spec = MODES[mode]
    out = os.path.join(workdir, 'benchmark.json')
    cmd = [
        sys.executable,
        os.path.join(HERE, 'student_benchmark.py'),
        '--redial-path',
        args.redial_path,
        '--shapes',
        spec['shape'],
        '--batchsize',
        spec['batchsize'],
        '--batches',
        spec['batches'],
        '--rounds',
        spec['rounds'],
        '--max-dialogues',
        spec['dialogues'],
        '--device',
        args.device,
        '--skip-rss',
        '--item-decoding-ratio',
        '--workdir',
        os.path.join(workdir, 'bench'),
        '--out',
        out,
    ]
    if args.redial_meta_path:
        cmd += ['--redial-meta-path', args.redial_meta_path]
    if args.device == 'cuda':
        cmd.append('--fp16')
    code, output = _run(
        cmd,
        os.path.join(logs, 'benchmark.log'),
        budget.left(spec['limits']['benchmark']),
    )
    if code != 0 or not os.path.isfile(out):
        return {
            'status': 'timeout' if code is None else 'failed',
            'log_tail': output[-3000:],
        }
    with open(out, encoding='utf-8') as f:
        result = json.load(f)
    shape = result['shapes'][spec['shape']]
    ratios = {
        'live_soft_over_nll': shape['ratio_live_over_nll'],
        'live_hard_over_nll': shape['ratio_live_hard_over_nll'],
        'cached_over_nll': shape['ratio_cached_over_nll'],
        'student_over_base_ms_per_token': shape['ratio_inference_student_over_nll'],
        'item_decoding_over_greedy': shape['ratio_item_decoding_over_greedy'],
    }
    return {
        'status': 'ok',
        'shape': spec['shape'],
        'ratios': ratios,
        'item_decoding': shape['item_decoding'],
        'train_step_ms_median': shape['train_step_ms_median'],
        'generation_ms_per_token': shape['generation_ms_per_token'],
        'parameters': shape['parameters'],
        'setup': result['setup'],
        'hardware': result['hardware'],
    }


def fp16_training(mode, args, workdir, budget, logs):
    spec = MODES[mode]
    shape_dir = os.path.join(workdir, 'bench', spec['shape'])
    data = [
        '-dp',
        os.path.join(workdir, 'bench', 'data'),
        '--redial-path',
        args.redial_path,
        '--redial-max-dialogues',
        spec['dialogues'],
    ]
    if args.redial_meta_path:
        data += ['--redial-meta-path', args.redial_meta_path]
    # as the benchmark built the teachers: fp16 on a GPU (ParlAI ignores --fp16 on CPU, but it would
    # still pad the vocabulary, and the teachers' must match)
    extra = student_benchmark.device_args(args.device, fp16=args.device == 'cuda')
    started = time.monotonic()
    shape = student_benchmark.shape_args(spec['shape'], shape_dir)
    # the benchmark's, if built
    rec, dial = student_benchmark.build_teachers(
        shape_dir, data, [*shape, *extra], dict(os.environ)
    )
    model_file = os.path.join(workdir, 'student-fp16')
    for leftover in (model_file, model_file + '.checkpoint'):
        if os.path.exists(leftover):
            os.unlink(leftover)
    cmd = [
        common.PARLAI,
        'train_model',
        '-t',
        'redial_crs',
        '-m',
        'conkd_student',
        '--gate',
        'soft',
        '--dialogue-teacher-file',
        dial,
        '--rec-teacher-file',
        rec,
        '--init-model',
        dial,
        '-mf',
        model_file,
        '-bs',
        spec['batchsize'],
        '--max-train-steps',
        spec['train_steps'],
        '--skip-generation',
        'true',
        '--validation-max-exs',
        4 * spec['batchsize'],
        '--short-final-eval',
        'true',
        '--log-every-n-steps',
        10,
        *shape,
        *extra,
        *data,
    ]
    code, output = _run(
        cmd, os.path.join(logs, 'training.log'), budget.left(spec['limits']['training'])
    )
    seconds = time.monotonic() - started
    # JSON; the printed reports are tables when pandas is installed
    stats_file = model_file + '.trainstats'
    if code != 0 or not os.path.isfile(stats_file):
        return {
            'status': 'timeout' if code is None else 'failed',
            'seconds': round(seconds, 1),
            'log_tail': output[-3000:],
        }
    with open(stats_file, encoding='utf-8') as f:
        stats = json.load(f)
    final = stats.get('final_valid_report', {})
    values = {k: final.get(k) for k in ('loss', 'kd_loss', 'kd_gate', 'ppl')}
    train_reports = stats.get('train_reports', [])
    train_kd = [r.get('kd_loss') for r in train_reports]
    finite = all(
        v is not None and math.isfinite(float(v)) for v in [*values.values(), *train_kd]
    )
    weights_finite = _weights_finite(model_file)
    loss_scales = [
        r['fp16_loss_scalar'] for r in train_reports if 'fp16_loss_scalar' in r
    ]
    fp16_active = args.device != 'cuda' or bool(loss_scales)
    ok = (
        finite
        and weights_finite
        and fp16_active
        and values['kd_loss'] is not None
        and float(values['kd_loss']) > 0
    )
    return {
        'status': 'ok' if ok else 'failed',
        'steps': spec['train_steps'],
        'train_steps_done': stats.get('train_steps'),
        'seconds': round(seconds, 1),
        'final_valid': values,
        'train_kd_loss': train_kd,
        'fp16_loss_scales': loss_scales,
        'values_finite': finite,
        'weights_finite': weights_finite,
        'fp16_active': fp16_active,
    }


#: Qwen2.5-0.5B-Instruct's shape (the modern recipe's backbone, 494M parameters), random weights
MODERN_SHAPE = dict(
    hidden_size=896,
    intermediate_size=4864,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    tie_word_embeddings=True,
    vocab_size=151936,
)
#: in-process: train the modern recipe's dialogue teacher (LoRA, bf16) and print peak GPU memory
_MODERN_TRAIN = """
import json, sys, torch
from parlai.scripts.train_model import TrainModel
torch.cuda.reset_peak_memory_stats()
TrainModel.main(*sys.argv[1:])
print('MODERN_PEAK ' + json.dumps({'peak_gib': torch.cuda.max_memory_allocated() / 2**30}))
"""


def modern_lora(mode, args, workdir, budget, logs):
    """The modern recipe's generator options (LoRA r=16, bf16 autocast, batch 16, 256/64 tokens)
    on a random Qwen2.5-0.5B-shaped model with a tokenizer trained on the ReDial slice: a few
    dialogue-teacher steps, finite loss, the peak GPU memory (docs/gpu.md gives the estimate).
    GPU only: on CPU it is reported as skipped."""
    if args.device != 'cuda':
        return {
            'status': 'skipped',
            'reason': 'needs a GPU (bf16 autocast, the 0.5B shape)',
        }
    try:
        import peft  # noqa: F401
    except ImportError:
        return {
            'status': 'skipped',
            'reason': 'peft is not installed (requirements/lora.txt)',
        }
    from parlai_conkd.zoo.conkd import recipe

    sys.path.insert(0, ROOT)
    from tests.support import make_tiny_causal_lm

    spec = MODES[mode]
    model_dir = make_tiny_causal_lm(
        os.path.join(workdir, 'qwen2.5-0.5b-random'),
        'qwen2',
        vocab_size=2000,
        **MODERN_SHAPE,
    )
    generator = recipe.with_values(
        recipe.RECIPES['modern'].generator, {'--hf-model-path': model_dir}
    )
    model_file = os.path.join(workdir, 'modern-dialogue-teacher')
    started = time.monotonic()
    cmd = [
        sys.executable,
        '-c',
        _MODERN_TRAIN,
        *('-t', 'redial_crs', '-m', 'conkd_dialogue_teacher', '-mf', model_file),
        *('-dp', os.path.join(workdir, 'bench', 'data')),
        *('--redial-path', args.redial_path),
        *('--redial-max-dialogues', spec['dialogues']),
        *generator,
        *('--max-train-steps', spec['train_steps'], '--validation-max-exs', 32),
        *('--short-final-eval', 'true', '--log-every-n-steps', 10),
    ]
    code, output = _run(
        cmd, os.path.join(logs, 'modern.log'), budget.left(spec['limits']['training'])
    )
    peak = re.search(r'MODERN_PEAK (\{.*\})', output)
    stats_file = model_file + '.trainstats'
    if code != 0 or not peak or not os.path.isfile(stats_file):
        return {
            'status': 'timeout' if code is None else 'failed',
            'log_tail': output[-3000:],
        }
    with open(stats_file, encoding='utf-8') as f:
        final = json.load(f).get('final_valid_report', {})
    loss = final.get('loss')
    ok = loss is not None and math.isfinite(float(loss))
    return {
        'status': 'ok' if ok else 'failed',
        'steps': spec['train_steps'],
        'seconds': round(time.monotonic() - started, 1),
        'valid_loss': loss,
        'peak_gib': round(json.loads(peak.group(1))['peak_gib'], 2),
        'model_file_mib': round(os.path.getsize(model_file) / 2**20, 1),
    }


def _weights_finite(model_file):
    import parlai.utils.pickle
    import torch

    if not os.path.isfile(model_file):
        return False
    states = torch.load(
        model_file,
        map_location='cpu',
        pickle_module=parlai.utils.pickle,
        weights_only=False,
    )
    return all(
        bool(torch.isfinite(w.float()).all())
        for w in states['model'].values()
        if w.is_floating_point()
    )


#: a test's outcome line under ``pytest -v``: ``path::name OUTCOME`` (or, with pytest-xdist,
#: ``[gw0] [ 10%] OUTCOME path::name``)
_OUTCOME = re.compile(
    r'::(\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b|\b(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) \S+::(\S+)'
)


def gpu_tests(mode, args, workdir, budget, logs):
    cmd = [
        sys.executable,
        '-m',
        'pytest',
        *GPU_TEST_FILES,
        '-m',
        'gpu',
        '-v',
        '-rs',
        '-p',
        'no:cacheprovider',
        '--basetemp',
        os.path.join(workdir, 'pytest'),
    ]
    try:  # the tests are mostly CLI start-up (CPU) around small GPU work: 4 workers share the GPU
        import xdist  # noqa: F401

        cmd += ['-n', '4'] if mode == 'full' else []
    except ImportError:
        pass
    code, output = _run(
        cmd,
        os.path.join(logs, 'tests.log'),
        budget.left(MODES[mode]['limits']['tests']),
    )
    outcomes = [
        (m[0], m[1]) if m[0] else (m[3], m[2]) for m in _OUTCOME.findall(output)
    ]
    counts = {}
    for _test, outcome in outcomes:
        counts[outcome.lower()] = counts.get(outcome.lower(), 0) + 1
    reasons = sorted(set(re.findall(r'SKIPPED \[\d+\] \S+: (.+)', output)))
    failed = [t for t, o in outcomes if o in ('FAILED', 'ERROR')]
    if code is None:
        status = 'timeout'
    elif failed or code not in (0, 5):
        status = 'failed'
    elif counts.get('passed'):
        status = 'ok'
    else:
        status = 'skipped'  # no CUDA: every GPU test skipped with its reason
    return {
        'status': status,
        'counts': counts,
        'failed': failed,
        'skip_reasons': reasons,
        'tests': {t: o.lower() for t, o in outcomes},
        'exit_code': code,
    }


# --------------------------------------------------------------------------- report
def _within(value, target):
    if value is None:
        return 'n/a'
    return 'ok' if value <= target else 'MISSED'


def targets_met(result):
    """Each GPU target met (True/False), or None where the benchmark did not run on a GPU."""
    bench = result['steps'].get('benchmark', {})
    if bench.get('status') != 'ok' or result['device'] != 'cuda':
        return None
    r = bench['ratios']
    return {
        'live_soft': r['live_soft_over_nll'] <= TARGETS['live'],
        'live_hard': r['live_hard_over_nll'] <= TARGETS['live'],
        'cached': r['cached_over_nll'] <= TARGETS['cached'],
        'inference': r['student_over_base_ms_per_token'] <= TARGETS['inference'],
    }


def table(result):
    rows = []
    # the targets are for a GPU; a CPU dry run shows its ratios without judging them
    _judge = (
        _within
        if result['device'] == 'cuda'
        else (lambda value, target: 'dry run (CPU)')
    )
    env = result['steps']['environment']
    rows.append(
        (
            'environment',
            f"{env.get('gpu', 'no GPU')}, torch {env['torch']}, CPU patches "
            f"{'ACTIVE' if env['cpu_patches_active_for_a_default_worker'] else 'inactive'} for a default worker",
            '',
            env['status'],
        )
    )
    bench = result['steps'].get('benchmark', {})
    if bench.get('status') == 'ok':
        r, ms, tok = (
            bench['ratios'],
            bench['train_step_ms_median'],
            bench['generation_ms_per_token'],
        )
        rows += [
            (
                'train step, live ConKD (soft) / NLL',
                f"{r['live_soft_over_nll']:.2f} ({ms['live']:.1f} / {ms['nll']:.1f} ms)",
                f"<= {TARGETS['live']}",
                _judge(r['live_soft_over_nll'], TARGETS['live']),
            ),
            (
                'train step, live ConKD (hard) / NLL',
                f"{r['live_hard_over_nll']:.2f} ({ms['live_hard']:.1f} / {ms['nll']:.1f} ms)",
                f"<= {TARGETS['live']}",
                _judge(r['live_hard_over_nll'], TARGETS['live']),
            ),
            (
                'train step, cached / NLL',
                f"{r['cached_over_nll']:.2f} ({ms['cached']:.1f} / {ms['nll']:.1f} ms)",
                f"<= {TARGETS['cached']}",
                _judge(r['cached_over_nll'], TARGETS['cached']),
            ),
            (
                'ms/token, student / base generator',
                f"{r['student_over_base_ms_per_token']:.3f} ({tok['live']:.3f} / {tok['nll']:.3f} ms)",
                f"<= {TARGETS['inference']} (paper: 5.306 / 5.464)",
                _judge(r['student_over_base_ms_per_token'], TARGETS['inference']),
            ),
            (
                'ms/token, item-aware / plain greedy decoding',
                (
                    f"{r['item_decoding_over_greedy']:.3f}"
                    if r['item_decoding_over_greedy'] is not None
                    else bench['item_decoding']
                ),
                '',
                'ok' if r['item_decoding_over_greedy'] is not None else 'n/a',
            ),
        ]
    else:
        rows.append(
            (
                'benchmark',
                bench.get('status', 'not run'),
                '',
                bench.get('status', 'not run'),
            )
        )
    train = result['steps'].get('fp16_training', {})
    if train.get('final_valid'):
        v = train['final_valid']
        rows.append(
            (
                f"fp16 student training ({train['steps']} steps)",
                f"loss {v['loss']:.3f}, kd_loss {v['kd_loss']:.3f}, gate {v['kd_gate']:.3f}, "
                f"weights finite: {train['weights_finite']}, {train['seconds']:.0f} s",
                'finite',
                train['status'],
            )
        )
    else:
        rows.append(
            (
                'fp16 student training',
                train.get('status', 'not run'),
                'finite',
                train.get('status', 'not run'),
            )
        )
    modern = result['steps'].get('modern_lora', {})
    rows.append(
        (
            'modern recipe shape (Qwen2.5-0.5B, LoRA, bf16): dialogue teacher',
            (
                (
                    f"peak {modern['peak_gib']} GiB, valid loss {modern['valid_loss']:.3f}, "
                    f"model file {modern['model_file_mib']} MiB"
                )
                if modern.get('status') == 'ok'
                else modern.get('reason', modern.get('status', 'not run'))
            ),
            'finite; docs/gpu.md estimate',
            modern.get('status', 'not run'),
        )
    )
    tests = result['steps'].get('gpu_tests', {})
    counts = (
        ', '.join(f'{n} {k}' for k, n in sorted(tests.get('counts', {}).items()))
        or 'none ran'
    )
    rows.append(
        (
            'GPU tests (pytest -m gpu)',
            counts,
            'all pass',
            tests.get('status', 'not run'),
        )
    )
    lines = ['| check | result | target | status |', '|---|---|---|---|']
    lines += [f'| {a} | {b} | {c} | {d} |' for a, b, c, d in rows]
    return '\n'.join(lines)


def _write(result, path):
    from parlai_conkd.fileio import atomic_write

    with atomic_write(path) as f:
        json.dump(result, f, indent=2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda', choices=('cuda', 'cpu'))
    parser.add_argument(
        '--quick',
        action='store_true',
        help='tiny model and few steps (the CPU dry run)',
    )
    parser.add_argument(
        '--budget-s',
        type=float,
        default=None,
        help='all steps together, in seconds (default 420 on a GPU, where the set-up before '
        'them takes about 30 s; 2400 for --quick)',
    )
    parser.add_argument('--workdir', default=os.path.join('/tmp', 'conkd-gpu-check'))
    parser.add_argument(
        '--out', default=os.path.join(HERE, 'results', 'gpu_check.json')
    )
    parser.add_argument('--redial-path', default=os.environ.get(ENV_PATH))
    parser.add_argument('--redial-meta-path', default=os.environ.get(ENV_META_PATH))
    parser.add_argument(
        '--skip',
        default='',
        help='comma-separated steps to leave out: benchmark,training,lora,tests',
    )
    args = parser.parse_args(argv)
    if not args.redial_path:
        sys.exit(
            f'gpu_check: no ReDial: pass --redial-path or set ${ENV_PATH} (scripts/gpu_check.sh does)'
        )
    mode = 'quick' if args.quick else 'full'
    skip = {s.strip() for s in args.skip.split(',') if s.strip()}
    logs = os.path.join(args.workdir, 'logs')
    os.makedirs(logs, exist_ok=True)
    budget = Budget(
        args.budget_s if args.budget_s is not None else (2400 if args.quick else 420)
    )
    started = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())
    t0 = time.monotonic()
    result = {
        'check': 'scripts/gpu_check.sh (issue #17)',
        'started': started,
        'mode': mode,
        'device': args.device,
        'targets': TARGETS,
        'steps': {},
    }
    result['steps']['environment'] = environment(args.device)
    if args.device == 'cuda' and not result['steps']['environment']['cuda_available']:
        sys.exit(
            'gpu_check: --device cuda but no CUDA device is visible (use --device cpu --quick for the dry run)'
        )
    steps = (
        ('benchmark', benchmark),
        ('fp16_training', fp16_training),
        ('modern_lora', modern_lora),
        ('gpu_tests', gpu_tests),
    )
    for name, step in steps:
        if name.split('_')[-1] in skip or name in skip:
            result['steps'][name] = {'status': 'skipped (--skip)'}
            continue
        if budget.left(1e9) < 5:
            result['steps'][name] = {'status': 'not run: budget spent'}
            continue
        print(f'[gpu_check] {name} ...', flush=True)
        begin = time.monotonic()
        try:
            result['steps'][name] = step(mode, args, args.workdir, budget, logs)
        except Exception as exc:  # one broken step must not lose the others' results
            result['steps'][name] = {
                'status': 'failed',
                'error': f'{type(exc).__name__}: {exc}',
            }
        result['steps'][name]['step_seconds'] = round(time.monotonic() - begin, 1)
        print(
            f"[gpu_check] {name}: {result['steps'][name]['status']} "
            f"({result['steps'][name]['step_seconds']:.0f} s)",
            flush=True,
        )
    result['total_seconds'] = round(time.monotonic() - t0, 1)
    result['table'] = table(result)
    statuses = [s['status'] for s in result['steps'].values()]
    result['passed'] = all(s in ('ok', 'skipped', 'skipped (--skip)') for s in statuses)
    result['targets_met'] = targets_met(result)
    _write(result, args.out)
    print('\n' + result['table'])
    met = result['targets_met']
    verdict = (
        'targets: not judged (no GPU benchmark)'
        if met is None
        else (
            'targets: all met'
            if all(met.values())
            else f"targets MISSED: {sorted(k for k, v in met.items() if not v)}"
        )
    )
    print(
        f"\n[gpu_check] checks {'passed' if result['passed'] else 'FAILED'}; {verdict}; "
        f"{result['total_seconds']:.0f} s; wrote {args.out}"
    )
    out_dir = os.environ.get('OUT')
    # $OUT: a directory the GPU machine hands back
    if out_dir and os.path.isdir(out_dir):
        shutil.copy(args.out, os.path.join(out_dir, os.path.basename(args.out)))
        for name in sorted(os.listdir(logs)):
            shutil.copy(os.path.join(logs, name), os.path.join(out_dir, name))
    return 0 if result['passed'] else 1


if __name__ == '__main__':
    sys.exit(main())
