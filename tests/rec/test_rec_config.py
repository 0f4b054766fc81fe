"""The rec teacher's architecture config: built from the options, saved as the plain dict older
model files hold (checkpoint key ``rec_model_config``), differences refused by option name.
"""

import pytest

from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import RecModelConfig

OPT = {
    'use_kg': True,
    'text_entities': True,
    'text_entity_min_movies': 3,
    'rec_dim': 128,
    'num_bases': 8,
    'cooccurrence': True,
}
#: what a model file written before the dataclass stores under 'rec_model_config'
OLDER_FILE = {
    'use_kg': True,
    'text_entities': True,
    'text_entity_min_movies': 3,
    'rec_dim': 128,
    'num_bases': 8,
    'cooccurrence': True,
}


def test_config_is_saved_as_the_dict_older_model_files_hold():
    config = RecModelConfig.from_opt(OPT)
    assert config.state() == OLDER_FILE
    config.check_saved(OLDER_FILE, 'old/model')  # loads: no error


def test_text_entity_options_count_only_with_the_kg():
    config = RecModelConfig.from_opt(dict(OPT, use_kg=False, text_entity_min_movies=9))
    assert config.text_entities is False and config.text_entity_min_movies is None


def test_a_different_saved_architecture_is_refused_naming_the_options():
    config = RecModelConfig.from_opt(OPT)
    with pytest.raises(
        ValueError,
        match=r'm/model has another architecture .*--rec-dim: model 64, options 128',
    ):
        config.check_saved(dict(OLDER_FILE, rec_dim=64), 'm/model')
    with pytest.raises(ValueError, match='--cooccurrence: model None, options True'):
        config.check_saved(
            {k: v for k, v in OLDER_FILE.items() if k != 'cooccurrence'}, 'm/model'
        )
