"""Processed episodes -> example dicts (the field contract in docs/architecture.md).

Pure functions over the episode JSON written by build.py, so the teachers stay thin and the
contract is unit-testable without ParlAI.
"""

from typing import Dict, List

from parlai_conkd.items import dedupe
from parlai_conkd.redial.preprocess import RECOMMENDER

#: ``text`` of the first example when the recommender opens the dialogue (ParlAI's convention for
#: "the other side said nothing yet").
SILENCE = '__SILENCE__'


def dialogue_examples(episode: Dict) -> List[Dict]:
    """One example per recommender turn; ``text`` = seeker turn(s) since the previous one."""
    examples: List[Dict] = []
    pending: List[str] = []
    mentioned: List[int] = []
    for turn in episode['turns']:
        if turn['role'] != RECOMMENDER:
            pending.append(turn['text'])
            mentioned = dedupe(mentioned + turn['items'])
            continue
        context = list(mentioned)
        label_items = list(turn['items'])
        new_items = [i for i in label_items if i not in set(context)]
        examples.append(
            {
                'text': '\n'.join(pending) if pending else SILENCE,
                'labels': [turn['text']],
                'context_items': context,
                'label_items': label_items,
                'new_items': new_items,
                'is_rec': bool(label_items),
                'conversation_id': episode['conversation_id'],
                'episode_done': False,
            }
        )
        pending = []
        mentioned = dedupe(mentioned + turn['items'])
    if examples:
        examples[-1]['episode_done'] = True
    return examples


def rec_examples(episode: Dict, catalog_tokens: List[str]) -> List[Dict]:
    """One example per new item a recommender turn mentions (KBRD/CRSLab convention, new items).

    Each is its own episode (``episode_done`` True) whose ``text`` is the whole dialogue so far,
    turns joined by newlines: one response can recommend several items, and repeating its seeker
    text inside one ParlAI episode would duplicate it in every agent's history.
    """
    return _item_examples(episode, catalog_tokens, new_only=True)


def rec_all_examples(episode: Dict, catalog_tokens: List[str]) -> List[Dict]:
    """One example per item a recommender turn names, items already mentioned kept (the "all"
    protocol; repeats count, as in KBRD's and CRSLab's ``:rec`` data).

    Same shape as :func:`rec_examples`; ``label_items`` = [that item], ``new_items`` = [that
    item] when it was not mentioned before in the dialogue, else []. So one evaluation reports
    ``recall@k`` over all pairs and ``new_recall@k`` over the new ones (the pairs of
    :func:`rec_examples`, with the same text and context).
    """
    return _item_examples(episode, catalog_tokens, new_only=False)


def _item_examples(
    episode: Dict, catalog_tokens: List[str], new_only: bool
) -> List[Dict]:
    examples: List[Dict] = []
    history: List[str] = []
    for example in dialogue_examples(episode):
        if example['text'] != SILENCE:
            history.append(example['text'])
        new = set(example['new_items'])
        for index in example['new_items'] if new_only else example['label_items']:
            examples.append(
                {
                    'text': '\n'.join(history) if history else SILENCE,
                    'labels': [catalog_tokens[index]],
                    'context_items': list(example['context_items']),
                    'label_items': [index],
                    'new_items': [index] if index in new else [],
                    'is_rec': True,
                    'conversation_id': example['conversation_id'],
                    'episode_done': True,
                }
            )
        history.append(example['labels'][0])
    return examples


def seeker_mention_examples(episode: Dict, catalog_tokens: List[str]) -> List[Dict]:
    """One example per item the *seeker* names first in the dialogue (same fields as
    :func:`rec_examples`; ``is_rec`` True).

    Training data for a recommender beyond the recommender's own suggestions: what the seeker
    brings up next is also "the item this dialogue leads to" (about as many mentions as the
    recommender's on ReDial). ``redial_crs:rec`` adds these to its *train* fold with
    ``--redial-rec-seeker-mentions true``; evaluation folds never have them.
    """
    examples: List[Dict] = []
    history: List[str] = []
    mentioned: List[int] = []
    for turn in episode['turns']:
        if turn['role'] != RECOMMENDER:
            for index in dedupe(turn['items']):
                if index in mentioned:
                    continue
                examples.append(
                    {
                        'text': '\n'.join(history) if history else SILENCE,
                        'labels': [catalog_tokens[index]],
                        'context_items': list(mentioned),
                        'label_items': [index],
                        'new_items': [index],
                        'is_rec': True,
                        'conversation_id': episode['conversation_id'],
                        'episode_done': True,
                    }
                )
        history.append(turn['text'])
        mentioned = dedupe(mentioned + turn['items'])
    return examples
