"""A chat needs only the model files: the rec teacher stores what people are shown, and a frozen
teacher loads without the task data it was trained on (issue #14)."""

import os

from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import ConkdRecTeacherAgent
from parlai_conkd.agents.frozen import load_frozen_teacher
from parlai_conkd.agents.item_ranking import _catalog_from_state, _catalog_state
from parlai_conkd.items import Item, ItemCatalog
from tests.support import SHARED_REDIAL


def test_rec_teacher_catalog_state_keeps_the_display_metadata_only():
    catalog = ItemCatalog(
        [
            Item(
                0,
                '10',
                'Frozen',
                2013,
                3,
                metadata={
                    'genre': ['animation'],
                    'director': ['Chris Buck'],
                    'star': ['Kristen Bell'],
                    'plot': 'long ...',
                    'writer': ['W'],
                },
                kg_entity=7,
            ),
            Item(1, '20', 'Heat', None, 1),
        ]
    )
    restored = _catalog_from_state(_catalog_state(catalog), 'model')
    assert restored.fingerprint == catalog.fingerprint
    assert restored[0].metadata == {
        'genre': ['animation'],
        'director': ['Chris Buck'],
        'star': ['Kristen Bell'],
    }
    assert restored[0].kg_entity == 7 and restored[1].metadata == {}


def test_frozen_rec_teacher_loads_from_its_file_alone(
    small_rec_teacher, tmp_path, monkeypatch
):
    for name in ('CONKD_REDIAL_PATH', 'CONKD_REDIAL_META_PATH'):
        monkeypatch.delenv(name, raising=False)
    datapath = tmp_path / 'dp'
    datapath.mkdir()
    catalog = ItemCatalog.from_redial(str(SHARED_REDIAL / 'movies_with_mentions.csv'))
    opt = {
        'datapath': str(datapath),
        'rec_teacher_file': str(small_rec_teacher),
        'no_cuda': True,
    }
    rec, _ = load_frozen_teacher(
        opt, '--rec-teacher-file', ConkdRecTeacherAgent, {'conkd_rec_teacher'}, catalog
    )
    assert os.listdir(datapath) == []  # nothing built, nothing downloaded
    shining = next(item for item in rec.catalog if item.display == 'The Shining (1980)')
    assert 'horror' in shining.metadata['genre'] and shining.metadata['director'] == [
        'Stanley Kubrick'
    ]
    assert 'plot' not in shining.metadata
    assert rec.linker is not None and rec.linker('a scary horror movie with tom hanks')
