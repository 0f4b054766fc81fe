"""The word dictionary's item block and where the catalog comes from."""

import pytest

from parlai_conkd.items import CatalogError

pytest.importorskip('parlai')

from parlai_conkd.agents.conkd_dialogue_teacher.dictionary import (  # noqa: E402
    ConkdDictionaryAgent,
    model_catalog_path,
    resolve_catalog,
)


def _opt(**kwargs):
    from parlai.core.params import ParlaiParser

    parser = ParlaiParser(False, False)
    ConkdDictionaryAgent.add_cmdline_args(parser)
    opt = parser.parse_args([])
    opt.update(kwargs)
    return opt


def test_item_block_stays_in_catalog_order_after_counting_and_sorting(
    tiny_catalog, tiny_catalog_file, tmp_path
):
    d = ConkdDictionaryAgent(
        _opt(item_catalog=tiny_catalog_file, dict_file=str(tmp_path / 'd'))
    )
    # training text where some items are frequent and words more frequent still
    for _ in range(50):
        d.add_to_dict(
            d.tokenize('you should watch __item_555__ and __item_333__ tonight')
        )
    d.sort(trim=True)
    ids = [d.tok2ind[t] for t in tiny_catalog.tokens()]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # one block, catalog order
    assert ids[0] == 4  # right after __null__ __start__ __end__ __unk__
    assert d.tok2ind['watch'] > ids[-1]


def test_catalog_comes_from_the_model_file_first(
    tiny_catalog, tiny_catalog_file, tmp_path
):
    model_file = str(tmp_path / 'model')
    assert len(resolve_catalog({'item_catalog': tiny_catalog_file})) == len(
        tiny_catalog
    )
    smaller = type(tiny_catalog)(tiny_catalog.items[:2])
    smaller.save(model_catalog_path(model_file))
    opt = {'model_file': model_file, 'item_catalog': tiny_catalog_file}
    assert resolve_catalog(opt).fingerprint == smaller.fingerprint


def test_missing_catalog_file_is_named(tmp_path):
    missing = str(tmp_path / 'nope.json')
    with pytest.raises(CatalogError, match='--item-catalog .*nope.json'):
        resolve_catalog({'item_catalog': missing})
