"""Are two zoo builds the same models? Compares every weight of two ``-dp`` data folders' ConKD zoos.

A refactor must not change what the recipe trains (issue #23: "two builds before/after give
identical weights"). Build the zoo from two checkouts with the same recipe, then:

    git worktree add /tmp/before <commit>
    (cd /tmp/before && CONKD_ZOO_RECIPE=smoke PYTHONPATH=$PWD \\
        python -m parlai_conkd.zoo.conkd.builder ensure -dp /tmp/zoo-before)
    CONKD_ZOO_RECIPE=smoke python -m parlai_conkd.zoo.conkd.builder ensure -dp /tmp/zoo-after
    python projects/conkd/same_zoo_weights.py /tmp/zoo-before /tmp/zoo-after --json same.json

Prints one row per model (tensors, weights, the largest absolute difference) and exits 1 when any
tensor differs (names, shapes or values, compared exactly).
"""

import argparse
import json
import os
import sys
from typing import Dict

import torch

from parlai_conkd.fileio import atomic_write

MODELS = ('rec_teacher', 'dialogue_teacher', 'soft', 'hard')


def weights(datapath: str, model: str) -> Dict[str, torch.Tensor]:
    """The state dict ParlAI saved for zoo model ``model`` under ``datapath``."""
    path = os.path.join(datapath, 'models', 'conkd', model)
    if not os.path.isfile(path):
        raise SystemExit(
            f'{path}: no such model file (build the zoo under {datapath} first)'
        )
    return torch.load(path, map_location='cpu', weights_only=False)['model']


def compare(before: Dict[str, torch.Tensor], after: Dict[str, torch.Tensor]) -> dict:
    """``{'tensors', 'weights', 'identical', 'max_abs_diff'}`` of two state dicts (diff: None
    when names or shapes differ)."""
    same_form = before.keys() == after.keys() and all(
        before[k].shape == after[k].shape for k in before
    )
    diff = (
        max(
            (
                (before[k].double() - after[k].double()).abs().max().item()
                if before[k].numel()
                else 0.0
            )
            for k in before
        )
        if same_form
        else None
    )
    return {
        'tensors': len(before),
        'weights': sum(v.numel() for v in before.values()),
        'identical': same_form
        and all(torch.equal(before[k], after[k]) for k in before),
        'max_abs_diff': diff,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('before', help='the -dp data folder of the first build')
    parser.add_argument('after', help='the -dp data folder of the second build')
    parser.add_argument('--json', help='also write the table here')
    parser.add_argument('--note', default='', help='what was built, kept in the JSON')
    args = parser.parse_args(argv)
    rows = {m: compare(weights(args.before, m), weights(args.after, m)) for m in MODELS}
    print(f'{"model":18} {"tensors":>7} {"weights":>9} identical max|diff|')
    for model, row in rows.items():
        print(
            f'{model:18} {row["tensors"]:>7} {row["weights"]:>9} {str(row["identical"]):9} '
            f'{row["max_abs_diff"]}'
        )
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(
                {'before': args.before, 'after': args.after, 'models': rows},
                f,
                indent=1,
            )
    return 0 if all(row['identical'] for row in rows.values()) else 1


if __name__ == '__main__':
    sys.exit(main())
