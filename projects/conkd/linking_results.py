#!/usr/bin/env python
"""Measure the title linker (parlai_conkd/linking.py) on ReDial seeker messages; print a table, write JSON.

ReDial marks every movie mention as ``@<movieId>``. For each seeker message with mentions, every
mention is replaced by the title as a person would type it, in four forms:

* ``year``:       "The Shining (1980)"  (items without a year in ReDial's list: the title alone)
* ``no_year``:    "The Shining"
* ``lower``:      "the shining"          (lower-cased, no year: how people type in chat)
* ``lower_year``: "the shining (1980)"

and the linker runs on the result. A link is correct when it covers a replaced mention and names
that mention's movie. Per form: precision = correct links / all links in those messages (a link on
any other words counts against it); recall = mentions linked correctly / mentions. Seeker messages
without any ``@`` mention give the false-link rate: the share of them in which anything is linked
(some are true titles typed without ``@``: the most frequent linked spans are listed in the JSON).

Three parameters of the linker are chosen on the train fold (the shared train file minus the
task's validation dialogues) over a grid: ``common_zipf``, the English word frequency (wordfreq's
Zipf scale) from which a one-word title is a common word and needs a cue; ``phrase_zipf``, the
same for every word of a longer title; and ``dominance``, the ambiguity rule's margin (the
override list ``FILM_CHAT_WORDS`` of parlai_conkd/linking.py is part of every setting).
Goals: precision >= 0.95 for every form, recall >= 0.9 with the year and >= 0.6 without (issue
#14), and a false-link rate of at most 0.035 (issue #22: no more false links than the guard that
ranked words by a model dictionary's counts had, 0.0356 on this train fold). Chosen: among the
settings that meet every goal on the train fold, the largest recall of the worse no-year form (to
2 decimals), ties to the lower false-link rate; the choice is reported on the test fold, next to
the unguarded linker. The chosen values are the defaults in parlai_conkd/linking.py (a test
checks that they agree).

    python projects/conkd/linking_results.py --redial-path ../shared/data/redial \\
        --json projects/conkd/results/linking.json
"""

import argparse
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Sequence

from parlai_conkd.fileio import atomic_write
from parlai_conkd.items import ItemCatalog
from parlai_conkd.linking import MENTION_RE, TitleLinker, words
from parlai_conkd.redial.build import ENV_PATH
from parlai_conkd.redial.preprocess import is_valid_fold

FORMS = ('year', 'no_year', 'lower', 'lower_year')
COMMON_ZIPF_GRID = (3.0, 3.5, 4.0, 4.5, 5.0)
PHRASE_ZIPF_GRID = (4.5, 5.0, 5.5, 6.0)
DOMINANCE_GRID = (1.0, 3.0, 10.0)
GOALS = {
    'precision': 0.95,
    'recall': {'year': 0.9, 'lower_year': 0.9, 'no_year': 0.6, 'lower': 0.6},
    'false_link_rate': 0.035,
}


def typed(item, form: str) -> str:
    title = item.title
    if form in ('lower', 'lower_year'):
        title = title.lower()
    if form in ('year', 'lower_year') and item.year:
        title = f'{title} ({item.year})'
    return title


def read_fold(path: Path, fold: str) -> List[Dict]:
    """Dialogues of the shared file for ``fold`` ('train': train file minus valid, 'test')."""
    out = []
    with open(path, encoding='utf-8') as f:
        for line in f:
            if line.strip():
                dialogue = json.loads(line)
                if fold == 'test' or not is_valid_fold(dialogue['conversationId']):
                    out.append(dialogue)
    return out


def seeker_messages(dialogues: Sequence[Dict]) -> List[str]:
    out = []
    for d in dialogues:
        seeker = str(d['initiatorWorkerId'])
        for m in d['messages']:
            text = ' '.join(str(m.get('text') or '').split())
            if text and str(m.get('senderWorkerId')) == seeker:
                out.append(text)
    return out


def make_cases(messages: Sequence[str], catalog: ItemCatalog, form: str):
    """(typed text, [(start, end, gold index)]) per message with mentions, all of them known."""
    cases = []
    for text in messages:
        mentions = list(MENTION_RE.finditer(text))
        if not mentions:
            continue
        items = [catalog.by_movie_id(m.group(1)) for m in mentions]
        if any(item is None or not words(item.title) for item in items):
            continue
        out, gold, cursor = [], [], 0
        for match, item in zip(mentions, items):
            out.append(text[cursor : match.start()])
            start = sum(len(p) for p in out)
            surface = typed(item, form)
            out.append(surface)
            gold.append((start, start + len(surface), item.index))
            cursor = match.end()
        out.append(text[cursor:])
        cases.append((''.join(out), gold))
    return cases


def score(linker: TitleLinker, cases) -> Dict:
    links = correct = found = mentions = 0
    for text, gold in cases:
        result = linker(text)
        mentions += len(gold)
        links += len(result.links)
        hit = set()
        for link in result.links:
            for g, (start, end, index) in enumerate(gold):
                if (
                    link.start < end
                    and start < link.end
                    and link.index == index
                    and g not in hit
                ):
                    hit.add(g)
                    correct += 1
                    break
        found += len(hit)
    return {
        'messages': len(cases),
        'mentions': mentions,
        'links': links,
        'correct_links': correct,
        'precision': correct / links if links else None,
        'recall': found / mentions if mentions else None,
    }


def false_links(linker: TitleLinker, messages: Sequence[str], top: int = 0) -> Dict:
    plain = [m for m in messages if '@' not in m]
    with_link, spans = 0, Counter()
    for text in plain:
        result = linker(text)
        if result.links:
            with_link += 1
            spans.update(linker.catalog[link.index].display for link in result.links)
    out = {
        'messages': len(plain),
        'messages_with_a_link': with_link,
        'false_link_rate': with_link / len(plain) if plain else None,
    }
    if top:
        out['most_linked'] = spans.most_common(top)
    return out


def evaluate(catalog, messages, top_show: int = 0, **params) -> Dict:
    linker = TitleLinker(catalog, **params)
    forms = {form: score(linker, make_cases(messages, catalog, form)) for form in FORMS}
    return {'forms': forms, 'no_mention': false_links(linker, messages, top_show)}


def meets_precision(result: Dict) -> bool:
    return all(
        (f['precision'] or 0) >= GOALS['precision'] for f in result['forms'].values()
    )


def meets_goals(result: Dict) -> bool:
    """Precision, recall per form and the false-link rate all meet :data:`GOALS`."""
    rate = result['no_mention']['false_link_rate']
    return (
        meets_precision(result)
        and all(
            (r['recall'] or 0) >= GOALS['recall'][form]
            for form, r in result['forms'].items()
        )
        and rate is not None
        and rate <= GOALS['false_link_rate']
    )


def table(title: str, result: Dict) -> str:
    lines = [
        title,
        f'  {"form":<11} {"messages":>8} {"mentions":>8} {"links":>6} {"precision":>9} {"recall":>7}  goal',
    ]
    for form, r in result['forms'].items():
        goal = f'P>={GOALS["precision"]} R>={GOALS["recall"][form]}'
        ok = (r['precision'] or 0) >= GOALS['precision'] and (
            r['recall'] or 0
        ) >= GOALS['recall'][form]
        lines.append(
            f'  {form:<11} {r["messages"]:>8} {r["mentions"]:>8} {r["links"]:>6} '
            f'{_num(r["precision"]):>9} {_num(r["recall"]):>7}  {goal} {"met" if ok else "MISSED"}'
        )
    n = result['no_mention']
    rate_ok = (n['false_link_rate'] or 0) <= GOALS['false_link_rate']
    lines.append(
        f'  messages without a mention: {n["messages"]}, with a link: {n["messages_with_a_link"]} '
        f'(false-link rate {_num(n["false_link_rate"], 4)}; goal <= {GOALS["false_link_rate"]} '
        f'{"met" if rate_ok else "MISSED"})'
    )
    return '\n'.join(lines)


def _num(value, digits: int = 3) -> str:
    return 'n/a' if value is None else f'{value:.{digits}f}'


def write_json(path: Path, payload: Dict) -> None:
    with atomic_write(str(path)) as f:
        f.write(json.dumps(payload, indent=1) + '\n')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--redial-path',
        default=os.environ.get(ENV_PATH),
        help='ReDial directory (train_data.jsonl, test_data.jsonl, movies_with_mentions.csv); '
        f'default ${ENV_PATH}',
    )
    parser.add_argument(
        '--json', default=str(Path(__file__).parent / 'results' / 'linking.json')
    )
    args = parser.parse_args(argv)
    if not args.redial_path:
        parser.error(f'pass --redial-path or set {ENV_PATH}')
    root = Path(args.redial_path)
    for name in ('train_data.jsonl', 'test_data.jsonl', 'movies_with_mentions.csv'):
        if not (root / name).is_file():
            parser.error(f'--redial-path {root}: {name} not found')
    started = time.time()
    catalog = ItemCatalog.from_redial(str(root / 'movies_with_mentions.csv'))
    train = read_fold(root / 'train_data.jsonl', 'train')
    test = read_fold(root / 'test_data.jsonl', 'test')
    train_messages, test_messages = seeker_messages(train), seeker_messages(test)

    grid = [
        (z, p, d)
        for z in COMMON_ZIPF_GRID
        for p in PHRASE_ZIPF_GRID
        for d in DOMINANCE_GRID
    ]
    selection = {}
    for common_zipf, phrase_zipf, dominance in grid:
        params = {
            'common_zipf': common_zipf,
            'phrase_zipf': phrase_zipf,
            'dominance': dominance,
        }
        result = evaluate(catalog, train_messages, **params)
        result['params'] = params
        selection[(common_zipf, phrase_zipf, dominance)] = result
        f = result['forms']
        print(
            f'train, common zipf {common_zipf:>3} phrase zipf {phrase_zipf:>3} '
            f'dominance {dominance:>4}: '
            + '; '.join(
                f'{form} P {_num(f[form]["precision"])} R {_num(f[form]["recall"])}'
                for form in FORMS
            )
            + f'; false-link rate {_num(result["no_mention"]["false_link_rate"], 4)}',
            file=sys.stderr,
        )
    chosen = choose(grid, selection)
    params = selection[chosen]['params']
    test_result = evaluate(catalog, test_messages, top_show=25, **params)
    name = (
        f'common zipf {params["common_zipf"]:g}, phrase zipf {params["phrase_zipf"]:g}, '
        f'dominance {params["dominance"]:g}'
    )
    print(table(f'train fold ({len(train)} dialogues), {name}', selection[chosen]))
    print(table(f'test fold ({len(test)} dialogues), {name}', test_result))
    unguarded = TitleLinker(catalog, guard=False, dominance=params['dominance'])
    test_unguarded = {
        'no_mention': false_links(unguarded, test_messages, 10),
        'forms': {
            f: score(unguarded, make_cases(test_messages, catalog, f)) for f in FORMS
        },
    }
    print(table('test fold without the guard (for comparison)', test_unguarded))
    payload = {
        'what': 'title linker (parlai_conkd/linking.py) on ReDial seeker messages; see the script docstring',
        'command': 'python projects/conkd/linking_results.py --redial-path '
        + str(root),
        'data': {
            'redial_path': str(root.resolve()),
            'train_dialogues': len(train),
            'test_dialogues': len(test),
            'train_seeker_messages': len(train_messages),
            'test_seeker_messages': len(test_messages),
            'items': len(catalog),
        },
        'goals': GOALS,
        'chosen': {
            'params': params,
            'train': selection[chosen],
            'test': test_result,
        },
        'test_without_guard': test_unguarded,
        'selection_on_train': list(selection.values()),
        'seconds': round(time.time() - started, 1),
    }
    write_json(Path(args.json), payload)
    print(f'wrote {args.json}')
    return 0


def choose(pool, selection):
    """Among configurations that meet every goal on train (:func:`meets_goals`; failing that, the
    precision goal; failing that, all), the largest recall of the worse no-year form (to 2
    decimals); ties to the lower false-link rate."""
    eligible = (
        [g for g in pool if meets_goals(selection[g])]
        or [g for g in pool if meets_precision(selection[g])]
        or pool
    )
    return max(
        eligible,
        key=lambda g: (
            round(
                min(
                    selection[g]['forms'][f]['recall'] or 0
                    for f in ('no_year', 'lower')
                ),
                2,
            ),
            -(selection[g]['no_mention']['false_link_rate'] or 0),
        ),
    )


if __name__ == '__main__':
    sys.exit(main())
