"""docs/zoo.md prints the default recipe exactly as the recipe module runs it."""

import re
from pathlib import Path

from parlai_conkd.zoo.conkd import recipe

README = Path(__file__).resolve().parents[2] / 'docs' / 'zoo.md'
MARKER = '<!-- default recipe: python -m parlai_conkd.zoo.conkd.recipe -->'


def test_readme_shows_the_default_recipe_as_the_recipe_prints_it():
    block = README.read_text(encoding='utf-8').split(MARKER, 1)[1]
    block = block.split('```bash', 1)[1].split('```', 1)[0]
    shown = [
        re.sub(r'\s+', ' ', line).strip()
        for line in block.replace('\\\n', ' ').strip().splitlines()
    ]
    assert shown == recipe.commands(recipe='default')


def test_wrapped_lines_keep_options_with_their_values():
    line = 'parlai train_model --alpha 1 --beta two -x --gamma 3'
    text = recipe.wrapped(line, width=24)
    assert text.replace(' \\\n    ', ' ') == line
    assert all(len(row) <= 24 or ' ' not in row.strip() for row in text.splitlines())
    assert '--beta \\' not in text and '--alpha \\' not in text
