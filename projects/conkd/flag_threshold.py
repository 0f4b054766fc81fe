#!/usr/bin/env python
"""Fit ``--rec-flag-threshold`` on the validation fold: does a threshold on P([REC]) beat argmax?

For every recommender turn of the fold, teacher-forced (no generation), the model's
``P([REC]) / (P([REC]) + P([GEN]))`` at the reply's first step and whether the gold reply
recommends. Prints accuracy, the share of turns predicted [REC] and the [REC] F1 for a grid of
thresholds (0.5 = the model's own argmax) and writes them as JSON with the threshold of best
accuracy::

    python projects/conkd/flag_threshold.py -mf zoo:conkd/soft -dp data --json flag.json

The zoo passes the fitted value to its students' ``--rec-flag-threshold`` only where it also
wins in the decoding search on the same fold (projects/conkd/README.md, "Item-aware decoding").
"""

import argparse
import json

import torch


def flag_probabilities(model_file, datapath, fold, extra=()):
    """(P(REC | first step) per turn, gold is-[REC] per turn) over ``fold`` of redial_crs."""
    from parlai.core.agents import create_agent
    from parlai.core.worlds import create_task
    from parlai.scripts.eval_model import setup_args

    opt = setup_args().parse_args(
        [
            '-mf',
            model_file,
            '-t',
            'redial_crs',
            '-dt',
            fold,
            '-bs',
            '64',
            '--skip-generation',
            'true',
            '-dp',
            datapath,
            *extra,
        ]
    )
    agent = create_agent(opt, requireModelExists=True)
    world = create_task(opt, agent)
    probs, gold = [], []
    original = agent.eval_step

    def eval_step(batch):
        if batch.label_vec is not None:
            first = agent.teacher_forced_scores(batch)[:, 0].float().log_softmax(-1)
            pair = torch.stack(
                [first[:, agent.rec_token_id], first[:, agent.gen_token_id]], -1
            )
            probs.extend(torch.softmax(pair, -1)[:, 0].tolist())
            gold.extend((batch.label_vec[:, 0] == agent.rec_token_id).tolist())
        return original(batch)

    agent.eval_step = eval_step
    while not world.epoch_done():
        world.parley()
    return torch.tensor(probs), torch.tensor(gold)


def threshold_table(probs, gold, thresholds):
    rows = []
    for t in thresholds:
        pred = probs > t
        tp = int((pred & gold).sum())
        fp = int((pred & ~gold).sum())
        fn = int((~pred & gold).sum())
        rows.append(
            {
                'threshold': t,
                'accuracy': float((pred == gold).float().mean()),
                'predicted_rec': float(pred.float().mean()),
                'rec_f1': 2 * tp / max(1, 2 * tp + fp + fn),
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('-mf', '--model-file', required=True)
    parser.add_argument('-dp', '--datapath', default='data')
    parser.add_argument('--fold', default='valid')
    parser.add_argument('--json', default=None)
    args = parser.parse_args()
    probs, gold = flag_probabilities(args.model_file, args.datapath, args.fold)
    rows = threshold_table(probs, gold, [round(0.2 + 0.05 * i, 2) for i in range(13)])
    best = max(rows, key=lambda r: (r['accuracy'], -abs(r['threshold'] - 0.5)))
    argmax = next(r for r in rows if r['threshold'] == 0.5)
    print(
        f'{len(gold)} turns of {args.fold}, {float(gold.float().mean()):.3f} recommend'
    )
    print('| threshold | accuracy | predicted [REC] | [REC] F1 |\n|---|---|---|---|')
    for r in rows:
        mark = ' (argmax)' if r['threshold'] == 0.5 else ' (best)' if r is best else ''
        print(
            f'| {r["threshold"]:.2f}{mark} | {r["accuracy"]:.3f} | {r["predicted_rec"]:.3f} | {r["rec_f1"]:.3f} |'
        )
    result = {
        'model_file': args.model_file,
        'fold': args.fold,
        'turns': len(gold),
        'gold_rec_share': float(gold.float().mean()),
        'rows': rows,
        'best_threshold': best['threshold'],
        'argmax_accuracy': argmax['accuracy'],
        'best_accuracy': best['accuracy'],
    }
    if args.json:
        from parlai_conkd.fileio import atomic_write

        with atomic_write(args.json) as f:
            json.dump(result, f, indent=1)


if __name__ == '__main__':
    main()
