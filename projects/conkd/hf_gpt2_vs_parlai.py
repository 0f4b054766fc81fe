"""GPT-2 on this project's causal-LM path vs ParlAI's own ``HFGPT2Model`` (issue #25: "keep GPT-2 on
the one code path unless measured slower"), same random GPT-2 weights, CPU, no download.

Times (process CPU time, medians, interleaved) a teacher-forced forward + backward and 20 greedy
steps with the incremental cache, and checks that both give the same teacher-forced logits and the
same greedy tokens. ParlAI's model gets a start token distinct from padding (as its own agent adds).

    python projects/conkd/hf_gpt2_vs_parlai.py --out projects/conkd/results/hf_gpt2_vs_parlai.json
"""

import argparse
import json
import statistics
import tempfile
import time
import types


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--hidden', type=int, default=256)
    parser.add_argument('--layers', type=int, default=4)
    parser.add_argument('--vocab', type=int, default=8000)
    parser.add_argument('--repeats', type=int, default=9)
    parser.add_argument('--out', default=None)
    args = parser.parse_args(argv)
    import torch
    from parlai.agents.hugging_face.gpt2 import HFGPT2Model
    from transformers import GPT2Config, GPT2LMHeadModel

    import parlai_conkd.compat  # noqa: F401  (ParlAI's GPT-2 cache reordering on transformers 5)
    from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import CausalLMGenerator

    torch.manual_seed(0)
    torch.set_num_threads(1)
    vocab = args.vocab
    pad, end, start = vocab - 1, vocab - 2, vocab - 3
    directory = tempfile.mkdtemp(prefix='gpt2-vs-parlai-')
    config = GPT2Config(
        vocab_size=vocab,
        n_embd=args.hidden,
        n_layer=args.layers,
        n_head=max(args.hidden // 64, 1),
        n_positions=512,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    ours = CausalLMGenerator(GPT2LMHeadModel.from_pretrained(directory), pad, pad, end)
    fake_dict = types.SimpleNamespace(
        hf_tokenizer=[0] * vocab, start_idx=start, null_idx=pad, end_idx=end
    )
    opt = {
        'model_name': directory,
        'add_special_tokens': False,
        'add_start_token': False,
        'no_cuda': True,
        'gpt2_size': 'small',
    }
    theirs = HFGPT2Model(opt, fake_dict)
    batch, context, reply = 8, 96, 32
    ctx = torch.randint(0, vocab - 10, (batch, context))
    ctx[: batch // 2, :20] = pad
    ys = torch.randint(0, vocab - 10, (batch, reply))
    ys[: batch // 2, :10] = pad

    def train(model):
        logits, _ = model.decode_forced(model.encoder(ctx), ys)
        torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), ys.flatten(), ignore_index=pad
        ).backward()

    def generate(model, steps=20):
        with torch.no_grad():
            enc = model.encoder(ctx)
            tokens = torch.full((batch, 1), model.START_IDX)
            cache = None
            for _ in range(steps):
                score, cache = model.decoder(tokens, enc, cache)
                nxt = model.output(score[:, -1:]).argmax(-1)
                cache = model.reorder_decoder_incremental_state(
                    cache, torch.arange(batch)
                )
                tokens = torch.cat([tokens, nxt], 1)
        return tokens[:, 1:]

    with torch.no_grad():
        forced = (
            (
                ours.decode_forced(ours.encoder(ctx), ys)[0]
                - theirs.decode_forced(theirs.encoder(ctx), ys)[0]
            )[ys.ne(pad)]
            .abs()
            .max()
            .item()
        )
    result = {
        'benchmark': 'projects/conkd/hf_gpt2_vs_parlai.py (issue #25)',
        'model': {'hidden': args.hidden, 'layers': args.layers, 'vocab': vocab},
        'setup': {'batch': batch, 'context': context, 'reply': reply, 'threads': 1},
        'same_greedy_tokens': bool(torch.equal(generate(ours), generate(theirs))),
        'teacher_forced_logits_max_abs_diff': forced,
    }
    for name, fn in (
        ('train_fwd_bwd_cpu_ms', train),
        ('greedy_20_tokens_cpu_ms', generate),
    ):
        times = {'causal_lm': [], 'parlai_hfgpt2': []}
        fn(ours), fn(theirs)  # warm-up
        for _ in range(args.repeats):
            for label, model in (('causal_lm', ours), ('parlai_hfgpt2', theirs)):
                begin = time.process_time()
                fn(model)
                times[label].append(1000 * (time.process_time() - begin))
        medians = {k: round(statistics.median(v), 1) for k, v in times.items()}
        medians['ratio_causal_lm_over_parlai'] = round(
            medians['causal_lm'] / medians['parlai_hfgpt2'], 3
        )
        result[name] = medians
    print(json.dumps(result, indent=2))
    if args.out:
        from parlai_conkd.fileio import atomic_write

        with atomic_write(args.out) as f:
            json.dump(result, f, indent=2)


if __name__ == '__main__':
    main()
