"""A randomly initialised GPT-2 and a byte-level BPE tokenizer, written to a directory: no download.

For speed measurements that need DialoGPT's *shape*, not its weights (``student_benchmark.py``,
``scripts/gpu_check.sh``), on machines that cannot reach the hub. Shapes:

- ``dialogpt-small``: DialoGPT-small's architecture (GPT-2 small: 12 layers, 768-d, 12 heads, 1024
  positions) and vocabulary size (50,257 tokens): 124M parameters;
- ``tiny``: 1 layer, 16-d, 512 tokens (tests and the CPU dry run of the GPU check).

The tokenizer is GPT-2's byte alphabet (256 symbols), then merges of two symbols up to the vocabulary
size, then ``<|endoftext|>``. Its merges are not GPT-2's (those are the download this avoids), so a
text splits into more, shorter pieces than DialoGPT's tokenizer would make; the vocabulary size, which
sets the cost of the output layer and of the loss, is DialoGPT-small's.

    python projects/conkd/random_gpt2.py --shape dialogpt-small --out /tmp/dialogpt-small-random
"""

import argparse
import json
import os

SHAPES = {
    'dialogpt-small': dict(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12
    ),
    'tiny': dict(vocab_size=512, n_positions=512, n_embd=16, n_layer=1, n_head=2),
}


def byte_alphabet():
    """GPT-2's byte -> printable-character table (the tokenizer's 256 base symbols), byte order."""
    printable = (
        list(range(ord('!'), ord('~') + 1))
        + list(range(ord('¡'), ord('¬') + 1))
        + list(range(ord('®'), ord('ÿ') + 1))
    )
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _merge_order(alphabet):
    """Symbols by how useful a merge of them is for English text: lower-case letters, the space marker,
    upper-case letters, digits, punctuation, then the rest of the bytes."""

    def rank(byte):
        ch = chr(byte)
        if ch.islower():
            return 0
        if ch == ' ':
            return 1
        if ch.isupper():
            return 2
        if ch.isdigit():
            return 3
        return 4 if 33 <= byte < 127 else 5

    return [alphabet[b] for b in sorted(alphabet, key=lambda b: (rank(b), b))]


def make_random_gpt2(
    directory: str, shape: str = 'dialogpt-small', seed: int = 0
) -> str:
    """Write ``config.json``, random weights and the tokenizer files of ``shape`` into ``directory``;
    returns it. Reuses a directory this function completed before (``.random_gpt2.json``).
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    if shape not in SHAPES:
        raise ValueError(f'unknown shape {shape!r}; choose one of {sorted(SHAPES)}')
    stamp = os.path.join(directory, '.random_gpt2.json')
    record = {'shape': shape, 'seed': seed, **SHAPES[shape]}
    if os.path.isfile(stamp):
        with open(stamp, encoding='utf-8') as f:
            if json.load(f) == record:
                return directory
    os.makedirs(directory, exist_ok=True)
    size = SHAPES[shape]['vocab_size']
    symbols = list(byte_alphabet().values())
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    merges = []
    order = _merge_order(byte_alphabet())
    for left in order:  # two-symbol merges until one slot is left for <|endoftext|>
        for right in order:
            if len(vocab) >= size - 1:
                break
            merges.append(f'{left} {right}')
            vocab[left + right] = len(vocab)
    eos = len(vocab)
    vocab['<|endoftext|>'] = eos
    with open(os.path.join(directory, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(vocab, f)
    with open(os.path.join(directory, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n' + '\n'.join(merges) + '\n')
    GPT2Tokenizer.from_pretrained(directory).save_pretrained(directory)
    torch.manual_seed(seed)
    config = GPT2Config(**SHAPES[shape], bos_token_id=eos, eos_token_id=eos)
    GPT2LMHeadModel(config).save_pretrained(directory)
    with open(stamp, 'w', encoding='utf-8') as f:
        json.dump(record, f)
    return directory


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--shape', default='dialogpt-small', choices=sorted(SHAPES))
    parser.add_argument('--out', required=True)
    args = parser.parse_args()
    print(make_random_gpt2(args.out, args.shape))


if __name__ == '__main__':
    main()
