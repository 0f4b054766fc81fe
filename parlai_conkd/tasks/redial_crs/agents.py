"""ReDial teachers for conversational recommendation (fields: docs/architecture.md "Example fields").

- ``-t redial_crs`` (DefaultTeacher = ResponseTeacher): one example per recommender turn, one
  episode per dialogue.
- ``-t redial_crs:rec`` (RecTeacher): one single-example episode per new item a recommender turn
  mentions (the "new" protocol).
- ``-t redial_crs:rec_all`` (RecAllTeacher): one single-example episode per item a recommender turn
  names, items mentioned before included (the "all" protocol); ``new_items`` is empty for those.
- ``-t redial_crs:readable`` / ``redial_crs:rec_readable`` / ``redial_crs:rec_all_readable``: the
  same with movie titles in place of item tokens, for ``parlai display_data``
  (``--redial-readable true`` does it for any of them).

Folds: ``train`` / ``valid`` (10% of the official train dialogues, salted hash of conversationId)
/ ``test`` (the official test file). See README.md next to this file.
"""

import copy
from typing import Dict, Iterator, List, Optional

from parlai.core.message import Message
from parlai.core.metrics import SumMetric
from parlai.core.opt import Opt
from parlai.core.params import ParlaiParser
from parlai.core.teachers import DialogTeacher
from parlai.utils.data import DatatypeHelper

from parlai_conkd.items import UNKNOWN_ITEM_TOKEN, ItemCatalog
from parlai_conkd.redial.build import (
    add_redial_args,
    fold_path,
    load_catalog,
    read_episodes,
)

from .examples import (
    dialogue_examples,
    rec_all_examples,
    rec_examples,
    seeker_mention_examples,
)


class ResponseTeacher(DialogTeacher):
    """One example per recommender turn: seeker text -> gold response, with item fields."""

    TEACHER_ID = 'redial_crs'
    #: names the stream-mode length cache: teachers that count examples differently need their own.
    EXAMPLE_KIND = 'response'
    #: the gold labels are replies (text), so unknown movies can appear in them as __item_unk__
    TEXT_TARGETS = True

    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt)
        add_redial_args(parser)
        return parser

    def __init__(self, opt, shared=None):
        opt = copy.deepcopy(opt)
        self.fold = DatatypeHelper.fold(opt['datatype'])
        self.id = self.TEACHER_ID
        self.readable = bool(opt.get('redial_readable', False))
        opt['datafile'] = fold_path(opt, self.fold)  # builds when needed
        # Stream mode caches (episodes, examples) in a file; ParlAI's default name is the datafile
        # + '.lengths', which the response and rec teachers (and every slice size) would share.
        limit = opt.get('redial_max_dialogues') or 0
        opt['length_datafile'] = (
            f'{opt["datafile"]}.{self.EXAMPLE_KIND}-max{limit}.lengths'
        )
        super().__init__(opt, shared)

    def examples_per_episode(
        self, episodes: List[Dict], catalog: ItemCatalog
    ) -> Iterator[List[Dict]]:
        for episode in episodes:
            yield dialogue_examples(episode)

    def setup_data(self, datafile: str):
        catalog = load_catalog(self.opt)
        episodes = read_episodes(datafile, self.opt.get('redial_max_dialogues') or 0)
        for examples in self.examples_per_episode(episodes, catalog):
            for position, example in enumerate(examples):
                # DialogTeacher sets episode_done itself from the new-episode flags.
                del example['episode_done']
                if self.readable:
                    example['text'] = catalog.render(example['text'])
                    example['labels'] = [
                        catalog.render(label) for label in example['labels']
                    ]
                yield Message(example), position == 0

    def custom_evaluation(self, teacher_action, labels, model_response) -> None:
        """``item_unk_targets``: movie mentions in the gold replies that are not catalog items.

        They appear as ``__item_unk__`` in the target text (a model can never name them
        correctly) and never in ``label_items``/``new_items``; reported as a count so a test set
        with many of them is visible in every report.
        """
        if self.TEXT_TARGETS and labels:
            self.metrics.add(
                'item_unk_targets', SumMetric(labels[0].count(UNKNOWN_ITEM_TOKEN))
            )


class RecTeacher(ResponseTeacher):
    """One example per new item a recommender turn mentions (KBRD/CRSLab convention)."""

    TEACHER_ID = 'redial_crs:rec'
    EXAMPLE_KIND = 'rec'
    TEXT_TARGETS = False  # the label is one catalog item's token

    @classmethod
    def add_cmdline_args(
        cls, parser: ParlaiParser, partial_opt: Optional[Opt] = None
    ) -> ParlaiParser:
        super().add_cmdline_args(parser, partial_opt)
        parser.add_argument_group('redial_crs:rec').add_argument(
            '--redial-rec-seeker-mentions',
            type='bool',
            default=False,
            help='Train fold only: also one example per item the seeker names first (more '
            'training data for a recommender); valid/test keep the recommender\'s new items only.',
        )
        return parser

    def __init__(self, opt, shared=None):
        self.seeker_mentions = bool(
            opt.get('redial_rec_seeker_mentions')
        ) and DatatypeHelper.is_training(opt['datatype'])
        if self.seeker_mentions:
            # its own stream-mode length cache: the train fold has more examples
            self.EXAMPLE_KIND = 'rec-seeker'
        super().__init__(opt, shared)

    def examples_per_episode(
        self, episodes: List[Dict], catalog: ItemCatalog
    ) -> Iterator[List[Dict]]:
        tokens = catalog.tokens()
        for episode in episodes:
            examples = rec_examples(episode, tokens)
            if self.seeker_mentions:
                examples += seeker_mention_examples(episode, tokens)
            yield examples

    def setup_data(self, datafile: str):
        # Every rec example is its own episode (its text carries the whole dialogue so far).
        for message, _ in super().setup_data(datafile):
            yield message, True


class RecAllTeacher(RecTeacher):
    """One example per item a recommender turn names, items mentioned before included ("all")."""

    TEACHER_ID = 'redial_crs:rec_all'
    EXAMPLE_KIND = 'rec_all'

    def examples_per_episode(
        self, episodes: List[Dict], catalog: ItemCatalog
    ) -> Iterator[List[Dict]]:
        tokens = catalog.tokens()
        for episode in episodes:
            yield rec_all_examples(episode, tokens)


class ReadableTeacher(ResponseTeacher):
    """The default teacher with titles instead of item tokens (``parlai display_data``)."""

    def __init__(self, opt, shared=None):
        opt = copy.deepcopy(opt)
        opt['redial_readable'] = True
        super().__init__(opt, shared)


class RecReadableTeacher(RecTeacher):
    """The ``:rec`` teacher with titles instead of item tokens."""

    def __init__(self, opt, shared=None):
        opt = copy.deepcopy(opt)
        opt['redial_readable'] = True
        super().__init__(opt, shared)


class RecAllReadableTeacher(RecAllTeacher):
    """The ``:rec_all`` teacher with titles instead of item tokens."""

    def __init__(self, opt, shared=None):
        opt = copy.deepcopy(opt)
        opt['redial_readable'] = True
        super().__init__(opt, shared)


class DefaultTeacher(ResponseTeacher):
    pass
