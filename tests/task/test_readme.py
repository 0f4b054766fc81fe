"""The task README's count table must match what the teachers produce (the AutoTeacherTest files)."""

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
README = REPO / 'parlai_conkd' / 'tasks' / 'redial_crs' / 'README.md'
REGRESSIONS = Path(__file__).with_name('test_auto_teachers')
ROW = re.compile(
    r'^\| `(redial_crs(?::rec(?:_all)?)?)` \| (train|valid|test) \| ([\d,]+) \| ([\d,]+) \|$',
    re.M,
)


def test_readme_counts_match_the_committed_teacher_regressions():
    rows = ROW.findall(README.read_text())
    assert (
        len(rows) == 9
    ), 'expected one row per teacher (default, :rec, :rec_all) and fold'
    for task, fold, episodes, examples in rows:
        recorded = yaml.safe_load(
            (REGRESSIONS / f'{task.replace(":", "_")}_{fold}.yml').read_text()
        )
        assert (int(episodes.replace(',', '')), int(examples.replace(',', ''))) == (
            recorded['num_episodes'],
            recorded['num_examples'],
        ), (task, fold)
