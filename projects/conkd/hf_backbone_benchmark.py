"""Cost of ConKD on a Hugging Face causal-LM backbone (issue #25), side by side in one run, CPU.

On a small random model of one architecture (``--model-type``, built with its tokenizer by
``tests/support.py``'s ``make_tiny_causal_lm`` at ``--hidden``/``--layers``: no download) with the
same data and batches, round-robin, medians (the pattern of ``student_benchmark.py``, whose helpers
it reuses):

- train step: live ConKD (soft gate, both teachers running) / NLL-only, with full fine-tuning and
  with LoRA (``--lora-r``); LoRA step / full step; both teachers' forward alone / NLL step (the
  floor of a live step);
- issue #26's real-step head: the NLL step / the same with ParlAI's loss over every padded label
  step, and the teachers' forward / the same with the LM head at every label position;
- peak RSS growth over a few training steps in a fresh process, LoRA / full (gradients and AdamW
  state of the trainable weights only);
- generation ms per token: the distilled student / the NLL-only model (same network: ~1).

Targets from the issue: live / NLL <= 1.3; student / NLL ms per token <= 1.02.

    python projects/conkd/hf_backbone_benchmark.py --redial-path ../shared/data/redial \
        --out projects/conkd/results/hf_backbone_benchmark.json
"""

import argparse
import functools
import json
import os
import platform
import random
import statistics
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import student_benchmark as sb  # noqa: E402

from parlai_conkd.redial.build import ENV_META_PATH, ENV_PATH  # noqa: E402

TARGETS = {'live_over_nll': 1.3, 'student_over_nll_ms_per_token': 1.02}
TRUNCATION = ['--truncate', '128', '--text-truncate', '128', '--label-truncate', '40']


def build_model(workdir, model_type, hidden, layers):
    from tests.support import make_tiny_causal_lm

    heads = max(hidden // 64, 2)
    config = dict(num_hidden_layers=layers, max_position_embeddings=1024)
    if model_type == 'gpt2':
        config = dict(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=1024)
    else:
        config.update(
            hidden_size=hidden,
            intermediate_size=4 * hidden,
            num_attention_heads=heads,
        )
        if model_type in ('llama', 'qwen2', 'mistral'):
            config['num_key_value_heads'] = max(heads // 2, 1)
    return make_tiny_causal_lm(
        os.path.join(workdir, f'{model_type}-{hidden}x{layers}'),
        model_type,
        vocab_size=4000,
        **config,
    )


def time_with_padded_head(student, batch):
    """Both teachers' forward with the dialogue teacher's LM head at every label position, the
    real steps' rows taken afterwards (what the real-step head replaced, issue #26)."""
    model = student.dialogue_teacher.model
    model._packed_head = False
    try:
        return sb.time_teacher_forward(student, batch)
    finally:
        model._packed_head = None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--redial-path', default=os.environ.get(ENV_PATH))
    parser.add_argument('--redial-meta-path', default=os.environ.get(ENV_META_PATH))
    parser.add_argument('--model-type', default='qwen2')
    parser.add_argument('--hidden', type=int, default=256)
    parser.add_argument('--layers', type=int, default=4)
    parser.add_argument('--lora-r', type=int, default=8)
    parser.add_argument('--batchsize', type=int, default=8)
    parser.add_argument('--batches', type=int, default=3)
    parser.add_argument('--rounds', type=int, default=6)
    parser.add_argument('--max-dialogues', type=int, default=60)
    parser.add_argument('--skip-rss', action='store_true')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)
    if not args.redial_path:
        sys.exit('no ReDial: pass --redial-path or set ' + ENV_PATH)
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(2)
    workdir = args.workdir or tempfile.mkdtemp(prefix='conkd-hf-bench-')
    data = [
        *('-dp', os.path.join(workdir, 'data'), '--redial-path', args.redial_path),
        *('--redial-max-dialogues', args.max_dialogues),
    ]
    if args.redial_meta_path:
        data += ['--redial-meta-path', args.redial_meta_path]
    model_dir = build_model(workdir, args.model_type, args.hidden, args.layers)
    shape = [
        *('--backbone', 'hf', '--hf-model-path', model_dir, '--dropout', '0'),
        *TRUNCATION,
        '--no-cuda',
    ]
    lora = ['--lora-r', str(args.lora_r), '--lora-alpha', str(2 * args.lora_r)]
    env = dict(os.environ)
    print(f'[hf-bench] teachers in {workdir}', flush=True)
    rec, dial = sb.build_teachers(os.path.join(workdir, 'full'), data, shape, env)
    rec_l, dial_l = sb.build_teachers(
        os.path.join(workdir, 'lora'), data, [*shape, *lora], env
    )
    agent = functools.partial(sb.make_agent, batchsize=args.batchsize)
    agents = {
        'nll': agent(workdir, data, shape, 'none', rec, dial),
        # issue #26: the same model with ParlAI's loss over every padded label step
        'nll_padded': agent(workdir, data, shape, 'none', rec, dial),
        'live': agent(workdir, data, shape, 'soft', rec, dial),
        'nll_lora': agent(workdir, data, [*shape, *lora], 'none', rec_l, dial_l),
        'live_lora': agent(workdir, data, [*shape, *lora], 'soft', rec_l, dial_l),
    }
    agents['nll_padded'].real_step_loss = False
    batches = sb.make_batches(agents['nll'], data, args.batchsize, args.batches)
    order = random.Random(0)
    gen_timers = {
        name: functools.partial(sb.time_generation, agents[name])
        for name in ('nll', 'live')
    }
    gen = {name: [] for name in gen_timers}
    for timer in gen_timers.values():
        timer(batches[0])  # warm-up
    for _ in range(args.rounds * 2):
        for batch in batches[:2]:
            names = list(gen)
            order.shuffle(names)
            for name in names:
                elapsed, tokens = gen_timers[name](batch)
                gen[name].append(elapsed / max(tokens, 1))
    for batch in batches:  # warm-up of every training configuration
        for one in agents.values():
            sb.train_step(one, batch)
    timers = {
        name: functools.partial(sb.time_train_step, agents[name]) for name in agents
    }
    # what any live distillation adds before its loss math: both teachers' forward pass
    timers['teacher_forward'] = functools.partial(
        sb.time_teacher_forward, agents['live']
    )
    # the same with the teacher's head at every label position (before issue #26)
    timers['teacher_forward_padded_head'] = functools.partial(
        time_with_padded_head, agents['live']
    )
    times = {name: [] for name in timers}
    for _ in range(args.rounds):
        for batch in batches:
            names = list(timers)
            order.shuffle(names)
            for name in names:
                times[name].append(timers[name](batch))
    step_ms = {k: round(1000 * statistics.median(v), 2) for k, v in times.items()}
    ms_token = {k: round(1000 * statistics.median(v), 4) for k, v in gen.items()}
    parameters = {
        'total': sum(p.numel() for p in agents['nll'].model.parameters()),
        'trainable_lora': sum(
            p.numel() for p in agents['nll_lora'].model.parameters() if p.requires_grad
        ),
        'vocabulary': len(agents['nll'].dict),
    }
    del agents
    rss = {}
    if not args.skip_rss:
        for name, extra in (('full', []), ('lora', lora)):
            before, after = sb.measure_peak_rss(
                workdir,
                data,
                [*shape, *extra],
                'soft',
                rec if name == 'full' else rec_l,
                dial if name == 'full' else dial_l,
                args.batchsize,
                None,
                3,
            )
            rss[name] = {
                'built_mb': round(before, 1),
                'trained_mb': round(after, 1),
                'training_growth_mb': round(after - before, 1),
            }
    ratios = {
        'live_over_nll': round(step_ms['live'] / step_ms['nll'], 3),
        # the floor of a live step with a same-size teacher: 1 + this share
        'teacher_forward_over_nll': round(
            step_ms['teacher_forward'] / step_ms['nll'], 3
        ),
        'distillation_work_over_nll': round(
            (step_ms['live'] - step_ms['nll'] - step_ms['teacher_forward'])
            / step_ms['nll'],
            3,
        ),
        'nll_real_steps_over_padded': round(step_ms['nll'] / step_ms['nll_padded'], 3),
        'teacher_forward_real_steps_over_padded_head': round(
            step_ms['teacher_forward'] / step_ms['teacher_forward_padded_head'], 3
        ),
        'live_lora_over_nll_lora': round(step_ms['live_lora'] / step_ms['nll_lora'], 3),
        'lora_over_full_step_nll': round(step_ms['nll_lora'] / step_ms['nll'], 3),
        'lora_over_full_step_live': round(step_ms['live_lora'] / step_ms['live'], 3),
        'student_over_nll_ms_per_token': round(ms_token['live'] / ms_token['nll'], 3),
    }
    if rss:
        ratios['lora_over_full_peak_rss'] = round(
            rss['lora']['trained_mb'] / rss['full']['trained_mb'], 3
        )
        ratios['lora_over_full_training_growth'] = round(
            rss['lora']['training_growth_mb']
            / max(rss['full']['training_growth_mb'], 1e-9),
            3,
        )
    result = {
        'benchmark': 'projects/conkd/hf_backbone_benchmark.py (issue #25)',
        'model': {
            'model_type': args.model_type,
            'hidden': args.hidden,
            'layers': args.layers,
            'lora_r': args.lora_r,
            **parameters,
        },
        'setup': {
            'batchsize': args.batchsize,
            'batches': args.batches,
            'rounds': args.rounds,
            'truncation': TRUNCATION,
            'device': 'cpu',
            'threads': torch.get_num_threads(),
        },
        'hardware': {
            'cpu_cores': os.cpu_count(),
            'machine': platform.machine(),
            'load_average_at_end': os.getloadavg(),
        },
        'train_step_ms_median': step_ms,
        'generation_ms_per_token': ms_token,
        'peak_rss': rss,
        'ratios': ratios,
        'targets': TARGETS,
        'targets_met': {
            'live_over_nll': ratios['live_over_nll'] <= TARGETS['live_over_nll'],
            'student_over_nll_ms_per_token': ratios['student_over_nll_ms_per_token']
            <= TARGETS['student_over_nll_ms_per_token'],
        },
    }
    print(json.dumps(result, indent=2))
    if args.out:
        from parlai_conkd.fileio import atomic_write

        with atomic_write(args.out) as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()
