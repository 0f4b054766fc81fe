"""Fixtures for the dialogue-teacher tests: a tiny catalog, a tiny random GPT-2 on disk, agents."""

import pytest
import torch

from parlai_conkd.items import Item, ItemCatalog
from tests.support import TINY_DIALOGUE_TRANSFORMER, TINY_ITEMS, make_tiny_gpt2


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
        *TINY_DIALOGUE_TRANSFORMER,
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


@pytest.fixture(params=['transformer', 'hf'])
def agent(request, tiny_catalog_file, tmp_path, make_dialogue_agent):
    """An untrained tiny dialogue teacher in-process, on each backbone."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    if request.param == 'hf':
        hf_dir = request.getfixturevalue('tiny_gpt2_dir')
        # byte-level pieces: long enough targets to reach the items
        longer = ['--label-truncate', '64', '--text-truncate', '64', '--truncate', '64']
        return make_dialogue_agent(tiny_catalog_file, tmp_path, 'hf', hf_dir, longer)
    return make_dialogue_agent(tiny_catalog_file, tmp_path)
