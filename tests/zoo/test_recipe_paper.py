"""The paper-scale recipe (issue #17): selected like the others, valid train_model arguments, and
docs/zoo.md prints exactly what the recipe runs. (Running it needs a GPU and DialoGPT-small: not
here.)
"""

import re
from pathlib import Path

import pytest

from parlai_conkd.zoo.conkd import recipe

README = Path(__file__).resolve().parents[2] / 'docs' / 'zoo.md'
TEACHERS = {
    'dialogue_teacher': 'data/models/conkd/dialogue_teacher',
    'rec_teacher': 'data/models/conkd/rec_teacher',
}


def test_paper_recipe_is_chosen_with_the_environment_variable(monkeypatch):
    monkeypatch.setenv(recipe.ENV_RECIPE, 'paper')
    assert recipe.recipe_name() == 'paper'
    assert recipe.train_args('soft', 'mf', 'data', TEACHERS) == recipe.train_args(
        'soft', 'mf', 'data', TEACHERS, recipe='paper'
    )


@pytest.mark.parametrize('model', recipe.MODELS)
def test_every_paper_command_parses_as_train_model_arguments(model):
    """ParlAI's own train_model parser (unknown options are an error): the options exist as spelled."""
    from parlai.scripts.train_model import setup_args

    args = recipe.train_args(
        model, f'data/models/conkd/{model}', 'data', TEACHERS, recipe='paper'
    )
    opt = setup_args().parse_args(args)
    # all the data, all epochs
    assert '--max-train-time' not in args and '--redial-max-dialogues' not in args
    # as in the zoo: the default recipe's rec teacher, without a time cap
    if model == 'rec_teacher':
        assert opt['model'] == 'conkd_rec_teacher'
        own = recipe.RECIPES['paper'].rec_teacher
        assert own == recipe._uncapped(recipe.RECIPES['default'].rec_teacher)
        assert not own or tuple(args[-len(own) :]) == own
    else:
        assert (opt['backbone'], opt['hf_model_path'], opt['fp16']) == (
            'hf',
            'microsoft/DialoGPT-small',
            True,
        )
        assert opt['optimizer'] == 'adamw' and opt['batchsize'] == 32
    if model in ('soft', 'hard'):
        assert (
            opt['gate'] == model and opt['init_model'] == TEACHERS['dialogue_teacher']
        )


def test_uncapped_drops_only_the_time_cap():
    assert recipe._uncapped(('--a', '1', '--max-train-time', '300', '-bs', '2')) == (
        '--a',
        '1',
        '-bs',
        '2',
    )


def test_readme_shows_the_paper_recipe_as_the_recipe_prints_it():
    text = README.read_text(encoding='utf-8')
    block = text.split(
        '<!-- paper recipe: python -m parlai_conkd.zoo.conkd.recipe --recipe paper -->',
        1,
    )[1]
    block = block.split('```bash', 1)[1].split('```', 1)[0]
    shown = [
        re.sub(r'\s+', ' ', line).strip()
        for line in block.replace('\\\n', ' ').strip().splitlines()
    ]
    assert shown == recipe.commands(recipe='paper')
