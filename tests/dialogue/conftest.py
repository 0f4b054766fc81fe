"""Fixtures for the dialogue-teacher tests: a tiny catalog, a tiny random GPT-2 on disk, agents."""

import json
import os

import pytest

from parlai_conkd.items import Item, ItemCatalog

TINY_ITEMS = [
    ('111', 'The Matrix', 1999),
    ('222', 'Heat', 1995),
    ('333', 'Alien', 1979),
    ('444', 'Up', 2009),
    ('555', 'Jaws', None),
]


def _bytes_to_unicode():
    """GPT-2's byte -> printable-character table (the tokenizer's alphabet)."""
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


def make_tiny_gpt2(directory: str) -> str:
    """A random 1-layer GPT-2 (16-d) with a byte-level tokenizer (256 bytes + a few merges).

    transformers 5 ignores vocab_file/merges_file given to the tokenizer's constructor, so the
    files are written first and loaded with ``from_pretrained(dir)``.
    """
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    os.makedirs(directory, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    merges = ['Ġ t', 'h e', 'Ġt he', 'i n', 'o u', 'e r', 'Ġ a', 'Ġ i']
    for merge in merges:
        vocab[merge.replace(' ', '')] = len(vocab)
    eos = len(vocab)
    vocab['<|endoftext|>'] = eos
    with open(os.path.join(directory, 'vocab.json'), 'w', encoding='utf-8') as f:
        json.dump(vocab, f)
    with open(os.path.join(directory, 'merges.txt'), 'w', encoding='utf-8') as f:
        f.write('#version: 0.2\n' + '\n'.join(merges) + '\n')
    GPT2Tokenizer.from_pretrained(directory).save_pretrained(directory)
    config = GPT2Config(
        vocab_size=len(vocab),
        n_positions=512,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope='session')
def tiny_catalog():
    return ItemCatalog(
        [
            Item(index=i, movie_id=mid, title=title, year=year)
            for i, (mid, title, year) in enumerate(TINY_ITEMS)
        ]
    )


@pytest.fixture(scope='session')
def tiny_catalog_file(tmp_path_factory, tiny_catalog):
    path = tmp_path_factory.mktemp('catalog') / 'catalog.json'
    tiny_catalog.save(str(path))
    return str(path)


@pytest.fixture(scope='session')
def tiny_gpt2_dir(tmp_path_factory):
    pytest.importorskip('transformers')
    return make_tiny_gpt2(str(tmp_path_factory.mktemp('tiny-gpt2')))


TINY_TRANSFORMER = [
    '--n-layers',
    '1',
    '--embedding-size',
    '16',
    '--ffn-size',
    '32',
    '--n-heads',
    '2',
    '--text-truncate',
    '48',
    '--label-truncate',
    '12',
    '--truncate',
    '48',
]


def _make_agent(catalog_file, tmp_path, backbone='transformer', hf_dir=None, extra=()):
    """An untrained agent built in-process (no task: its dictionary is special + item tokens)."""
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    args = [
        '-m',
        'conkd_dialogue_teacher',
        '--item-catalog',
        catalog_file,
        '--dict-file',
        str(tmp_path / 'dict'),
        '--backbone',
        backbone,
        *TINY_TRANSFORMER,
        '--inference',
        'greedy',
        *extra,
    ]
    if hf_dir:
        args += ['--hf-model-path', hf_dir]
    parser = ParlaiParser(True, True)
    opt = parser.parse_args(args)
    return create_agent(opt)


@pytest.fixture
def make_dialogue_agent():
    return _make_agent
