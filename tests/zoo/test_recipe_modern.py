"""The modern recipe (issue #25): Qwen2.5-0.5B-Instruct with LoRA under bf16 on one GPU, chosen like
the others, valid train_model arguments, docs/zoo.md prints exactly what it runs; the paper and
default recipes are untouched by it. (Running it needs a GPU and the model: not here.)
"""

import re
from pathlib import Path

import pytest

from parlai_conkd.zoo.conkd import recipe

ZOO_MD = Path(__file__).resolve().parents[2] / 'docs' / 'zoo.md'
TEACHERS = {
    'dialogue_teacher': 'data/models/conkd/dialogue_teacher',
    'rec_teacher': 'data/models/conkd/rec_teacher',
}


def test_modern_recipe_is_chosen_with_the_environment_variable(monkeypatch):
    monkeypatch.setenv(recipe.ENV_RECIPE, 'modern')
    assert recipe.train_args('soft', 'mf', 'data', TEACHERS) == recipe.train_args(
        'soft', 'mf', 'data', TEACHERS, recipe='modern'
    )


@pytest.mark.parametrize('model', ['dialogue_teacher', 'soft', 'hard'])
def test_every_modern_generator_command_parses_with_lora_and_bf16(model):
    from parlai.scripts.train_model import setup_args

    args = recipe.train_args(
        model, f'data/models/conkd/{model}', 'data', TEACHERS, recipe='modern'
    )
    opt = setup_args().parse_args(args)
    assert (opt['backbone'], opt['hf_model_path']) == (
        'hf',
        'Qwen/Qwen2.5-0.5B-Instruct',
    )
    assert opt['lora_r'] == 16 and opt['hf_bf16'] and not opt.get('fp16')
    if model == 'dialogue_teacher':
        assert opt['item_embeddings_from'] == TEACHERS['rec_teacher']
    else:
        assert opt['init_model'] == TEACHERS['dialogue_teacher']


def test_the_other_recipes_do_not_use_lora():
    for name in ('default', 'paper', 'smoke', 'tiny'):
        for model in recipe.MODELS:
            args = recipe.train_args(model, 'mf', 'data', TEACHERS, recipe=name)
            assert '--lora-r' not in args and '--hf-bf16' not in args


def test_zoo_md_shows_the_modern_recipe_as_the_recipe_prints_it():
    text = ZOO_MD.read_text(encoding='utf-8')
    block = text.split(
        '<!-- modern recipe: python -m parlai_conkd.zoo.conkd.recipe --recipe modern -->',
        1,
    )[1]
    block = block.split('```bash', 1)[1].split('```', 1)[0]
    shown = [
        re.sub(r'\s+', ' ', line).strip()
        for line in block.replace('\\\n', ' ').strip().splitlines()
    ]
    assert shown == recipe.commands(recipe='modern')
