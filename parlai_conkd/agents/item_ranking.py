"""The base of every agent that ranks all catalog items from the dialogue so far (``-m
conkd_rec_teacher``, ``conkd_popularity``, ``conkd_repeat``): the catalog bookkeeping, batching of
the task's item fields, ranking metrics, the replies' ``recommendations`` and the model-file extras.

Metrics (per (example, gold item) pair, ties by expectation; see :mod:`parlai_conkd.ranking`):
``recall@k``, ``mrr``, ``ndcg@k`` over the example's ``label_items``; ``new_recall@k``,
``new_mrr``, ``new_ndcg@k`` over its ``new_items``; ``pairs`` / ``new_pairs`` count the pairs each
family averages over. On ``redial_crs:rec`` the two families coincide; on ``redial_crs:rec_all``
they are the "all" and "new" protocols side by side (issue #15).
``--rank-exclude-context true`` removes the context items from the ranking first.

The agents' replies carry no ``text`` outside interactive mode: ParlAI's teachers would score a
top-1 item token with word-overlap metrics (``accuracy``/``f1``/``precision``/``recall``, BLEU),
and ``__item_1__`` vs ``__item_2__`` share the word "item" (``recall`` 0.5 beside
``recall@50`` 0). The ranking is in ``recommendations`` (the top 10 as item records, the one
shape every reply that carries recommendations uses: see :func:`parlai_conkd.formatting.item_record`
and docs/architecture.md) and ``item_ranking`` (their catalog indices).

The distillation entry point is :meth:`ItemRankingAgent.item_log_probs`.
"""

from typing import Dict, List, Optional, Sequence

import torch
from parlai.core.dict import DictionaryAgent
from parlai.core.metrics import AverageMetric, SumMetric
from parlai.core.torch_agent import Batch, History, Output, TorchAgent
from parlai.utils import logging
from parlai.utils.torch import total_parameters, trainable_parameters

from parlai_conkd import ranking
from parlai_conkd.formatting import item_record
from parlai_conkd.items import DISPLAY_METADATA, CatalogError, Item, ItemCatalog
from parlai_conkd.model_files import check_model_file, check_model_file_given
from parlai_conkd.seeding import add_seed_args, seed_from_opt

#: checkpoint key of the item catalog, next to ParlAI's 'model' / 'optimizer'
CATALOG_KEY = 'item_catalog'


class ItemCatalogMismatch(CatalogError):
    """The data's item catalog is not the one the model was trained on."""


class NoTokenDictionary(DictionaryAgent):
    """Item rankers read item indices, not tokens: nothing to build, nothing to tokenise.

    ``is_prebuilt`` makes ``train_model`` skip its dictionary pass over the training data.
    """

    def is_prebuilt(self):
        return True


class TextOnlyHistory(History):
    """Keeps the dialogue text (for entity linking) without tokenising it."""

    def parse(self, text):
        return []


def _catalog_state(catalog: ItemCatalog) -> Dict:
    """Fingerprint + items with the metadata people are shown (genre/director/stars), so a model
    file alone can describe its recommendations; plots and the rest are left out (large).
    """
    items = [
        {
            'index': i.index,
            'movie_id': i.movie_id,
            'title': i.title,
            'year': i.year,
            'mentions': i.mentions,
            'kg_entity': i.kg_entity,
            'metadata': {
                k: i.metadata[k]
                for k in DISPLAY_METADATA
                if i.metadata and i.metadata.get(k)
            },
        }
        for i in catalog
    ]
    return {'fingerprint': catalog.fingerprint, 'items': items}


def _catalog_from_state(state: Dict, path: str) -> ItemCatalog:
    try:
        catalog = ItemCatalog([Item(**entry) for entry in state['items']])
    except (KeyError, TypeError) as exc:
        raise CatalogError(
            f'{path}: stored item catalog is unreadable ({exc})'
        ) from exc
    if catalog.fingerprint != state.get('fingerprint'):
        raise CatalogError(
            f'{path}: stored item catalog does not match its own fingerprint'
        )
    return catalog


def _peek_checkpoint(path: str) -> Dict:
    import parlai.utils.pickle

    check_model_file(path)  # a one-line error for a missing, empty or truncated file

    with open(path, 'rb') as f:
        return torch.load(f, map_location='cpu', pickle_module=parlai.utils.pickle)


def _data_catalog(opt) -> Optional[ItemCatalog]:
    """The catalog of the redial_crs data in use, or None when no redial_crs task is set."""
    if 'redial_crs' not in (opt.get('task') or ''):
        return None
    from parlai_conkd.redial.build import load_catalog

    return load_catalog(opt)


class ItemRankingAgent(TorchAgent):
    """Shared glue for agents that score all catalog items from the dialogue context.

    Subclasses provide ``build_model()`` (an ``nn.Module`` mapping a ``[B, L]`` context-id tensor
    padded with -1 to ``[B, N]`` item scores, with an ``item_log_probs(context, exclude)``
    method) and ``train_step``. This class does the catalog bookkeeping, batching of the task's
    item fields, ranking metrics and the model-file extras.
    """

    @classmethod
    def dictionary_class(cls):
        return NoTokenDictionary

    @classmethod
    def history_class(cls):
        return TextOnlyHistory

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('Item ranking (recall@k / MRR / NDCG@k)')
        group.add_argument(
            '--rank-exclude-context',
            type='bool',
            default=False,
            help='Remove the items already mentioned in the dialogue from the ranking before '
            'computing recall/MRR/NDCG (and from item_log_probs by default).',
        )
        group.add_argument(
            '--rank-ks',
            type=str,
            default='1,10,50',
            help='Cut-offs k of recall@k (comma-separated).',
        )
        group.add_argument(
            '--ndcg-ks',
            type=str,
            default='10,50',
            help='Cut-offs k of ndcg@k (comma-separated).',
        )
        group.add_argument(
            '--rec-seed',
            type=int,
            default=None,
            help='Older name of --seed for this agent; when given it wins over --seed.',
        )
        add_seed_args(parser)
        parser.set_defaults(validation_metric='recall@10', validation_metric_mode='max')
        return parser

    # ------------------------------------------------------------------ set-up
    def __init__(self, opt, shared=None):
        if shared is None:
            check_model_file_given(opt)  # not an untrained model under a mistyped -mf
        seed_from_opt(opt, shared)
        init_model, self.is_finetune = self._get_init_model(opt, shared)
        super().__init__(opt, shared)
        self.rank_ks = _int_list(self.opt['rank_ks'], '--rank-ks')
        self.ndcg_ks = _int_list(self.opt['ndcg_ks'], '--ndcg-ks')
        if shared:
            self.catalog = shared['catalog']
            self.linker = shared['linker']
            if 'optimizer' in shared:
                self.optimizer = shared['optimizer']
            return
        saved = _peek_checkpoint(init_model) if init_model else {}
        self.catalog = self._resolve_catalog(saved, init_model)
        self.linker = None
        self.model = self.build_model_from(saved, init_model)
        self.criterion = None
        states = {}
        if init_model:
            logging.info(f'Loading existing model parameters from {init_model}')
            states = self.load(init_model)
        logging.info(
            f'Total parameters: {total_parameters(self.model):,d} '
            f'({trainable_parameters(self.model):,d} trainable); {len(self.catalog)} items'
        )
        if self._should_initialize_optimizer():
            was_reset = self.init_optim(
                [p for p in self.model.parameters() if p.requires_grad],
                optim_states=states.get('optimizer'),
                saved_optim_type=states.get('optimizer_type'),
                is_finetune=self.is_finetune,
            )
            self.build_lr_scheduler(states, hard_reset=self.is_finetune or was_reset)

    def _resolve_catalog(self, saved: Dict, path: Optional[str]) -> ItemCatalog:
        """The model file's catalog when there is one; it must equal the data's."""
        data = _data_catalog(self.opt)
        if CATALOG_KEY in saved:
            catalog = _catalog_from_state(saved[CATALOG_KEY], path)
            if data is not None and data.fingerprint != catalog.fingerprint:
                raise ItemCatalogMismatch(
                    f'{path} was trained on item catalog {catalog.fingerprint} ({len(catalog)} '
                    f'items) but the task data has catalog {data.fingerprint} ({len(data)} items): '
                    'item indices would mean different movies. Use the data the model was trained '
                    'on (same movies_with_mentions.csv) or retrain.'
                )
            return catalog
        if data is None:
            raise CatalogError(
                f'{type(self).__name__} needs an item catalog: train it on a redial_crs task '
                '(e.g. -t redial_crs:rec) or load a model file that stores one (-mf).'
            )
        return data

    def build_model_from(self, saved: Dict, path: Optional[str]):
        """Build the model; ``saved`` is the init checkpoint ({} when training from scratch)."""
        return self.build_model()

    def build_model(self):
        raise NotImplementedError

    def share(self):
        shared = super().share()
        shared['catalog'] = self.catalog
        shared['linker'] = self.linker
        if hasattr(self, 'optimizer'):
            shared['optimizer'] = self.optimizer
        return shared

    def state_dict(self):
        states = super().state_dict()
        states[CATALOG_KEY] = _catalog_state(self.catalog)
        return states

    # ------------------------------------------------------------------ observations
    def vectorize(self, obs, history, **kwargs):
        """Attach the item fields the model reads; no tokenisation.

        The task gives ``context_items`` / ``label_items`` / ``new_items``; a message without
        them (interactive use) gets them from the item tokens in the history and the label.
        """
        if 'text' not in obs and 'context_items' not in obs:
            return obs
        text = history.get_history_str() or ''
        if 'context_items' not in obs:
            obs['context_items'] = self.catalog.items_in_text(text)
        labels = obs.get('labels', obs.get('eval_labels'))
        if 'label_items' not in obs and labels:
            obs['label_items'] = self.catalog.items_in_text(labels[0])
        if 'new_items' not in obs and 'label_items' in obs:
            context = set(obs['context_items'])
            obs['new_items'] = [i for i in obs['label_items'] if i not in context]
        obs['context_ids'] = self._context_ids(obs['context_items'], text)
        return obs

    def _context_ids(self, context_items: Sequence[int], text: str) -> List[int]:
        ids = [int(i) for i in context_items]
        if self.linker is not None:
            ids += self.linker(text)
        return ids

    def is_valid(self, obs):
        return not obs.is_padding() and 'context_ids' in obs

    def batchify(self, obs_batch, sort=False):
        batch = super().batchify(obs_batch, sort=False)
        if batch.batchsize == 0:
            return batch
        exs = [obs_batch[i] for i in batch.valid_indices.tolist()]
        batch['context'] = pad_ids([ex['context_ids'] for ex in exs])
        batch['context_items'] = [list(ex['context_items']) for ex in exs]
        batch['label_items'] = [list(ex.get('label_items') or []) for ex in exs]
        batch['new_items'] = [list(ex.get('new_items') or []) for ex in exs]
        batch['conversation_ids'] = [ex.get('conversation_id') for ex in exs]
        return batch

    def score(self, batch: Batch) -> torch.Tensor:
        """Item scores ``[B, N]`` for a batch (subclasses add inputs beyond the context)."""
        return self.model(batch.context)

    # ------------------------------------------------------------------ steps
    def _exclusion(self, batch: Batch) -> Optional[torch.Tensor]:
        if not self.opt['rank_exclude_context']:
            return None
        return ranking.exclusion_mask(
            batch.context_items, len(self.catalog), device=batch.context.device
        )

    def record_ranking_metrics(self, scores: torch.Tensor, batch: Batch) -> None:
        """recall@k / mrr / ndcg@k over label items, and the same with ``new_`` over new items;
        ``pairs`` / ``new_pairs``: the number of (example, gold item) pairs behind each.
        """
        exclude = self._exclusion(batch)
        for prefix, gold in (('', batch.label_items), ('new_', batch.new_items)):
            sums = ranking.ranking_sums(
                scores, gold, self.rank_ks, exclude, self.ndcg_ks
            )
            count = sums.pop('count').tolist()
            for name, values in sums.items():
                self.record_local_metric(
                    prefix + name,
                    [
                        AverageMetric(v, c) if c else None
                        for v, c in zip(values.tolist(), count)
                    ],
                )
            self.record_local_metric(
                prefix + 'pairs', [SumMetric(int(c)) for c in count]
            )

    def eval_step(self, batch):
        if batch.batchsize == 0:
            return None
        self.model.eval()
        scores = self.score(batch)
        self.record_ranking_metrics(scores, batch)
        exclude = self._exclusion(batch)
        if exclude is not None:
            scores = scores.masked_fill(exclude, float('-inf'))
        top = scores.topk(min(10, scores.size(1))).indices.tolist()
        recommendations = self.recommendation_records(top, batch, exclude)
        if self.opt.get('interactive_mode'):
            return Output(
                text=[self.catalog[row[0]].token for row in top],
                recommendations=recommendations,
                item_ranking=top,
            )
        # no 'text': teachers would score it with word-overlap metrics (see the module docstring)
        return Output(recommendations=recommendations, item_ranking=top)

    @torch.no_grad()
    def recommendation_records(
        self, top: List[List[int]], batch: Batch, exclude
    ) -> List[List[Dict]]:
        """Per row, the items ``top[row]`` as item records ``{'movie_id', 'title', 'year', 'index',
        'score', 'new'}``: ``score`` is the probability :meth:`item_log_probs` gives the item (what a
        student distils), ``new`` whether the dialogue so far has not named it."""
        log_probs = self.model_log_probs(
            batch.context, exclude, batch.context_items, batch.conversation_ids
        )
        probs = (
            log_probs.gather(1, torch.tensor(top, device=log_probs.device))
            .exp()
            .tolist()
        )
        records = []
        for items, row_probs, context in zip(top, probs, batch.context_items):
            named = set(context)
            records.append(
                [
                    item_record(self.catalog[i], p, new=i not in named)
                    for i, p in zip(items, row_probs)
                ]
            )
        return records

    # ------------------------------------------------------------------ distillation API
    @torch.no_grad()
    def item_log_probs(
        self,
        context_items: Sequence[Sequence[int]],
        texts: Optional[Sequence[str]] = None,
        exclude_context: Optional[bool] = None,
        conversation_ids: Optional[Sequence[Optional[str]]] = None,
    ) -> torch.Tensor:
        """``log p(item | context)`` for a batch of contexts: ``Tensor[B, N]`` (catalog order).

        Args:
            context_items: per context, the catalog indices mentioned so far (the task's
                ``context_items``).
            texts: per context, the dialogue text so far; used only by models with
                ``--text-entities`` (KG genres/people named in it). None: items only.
            exclude_context: give the context items probability 0 (renormalising the rest);
                default ``--rank-exclude-context``.
            conversation_ids: per context, the ReDial conversation id when the context comes
                from a training dialogue (the student's own batches): the co-occurrence term
                then leaves that dialogue out, so a distilled target never peeks at its own
                answer. None or unknown ids: nothing left out.

        No gradient, no dropout; the graph pass is cached while the parameters do not change,
        so one call costs a pooling and a ``[B, dim] x [dim, N]`` product. Runs on the model's
        device; the result is on that device.
        """
        device = module_device(self.model)
        texts = texts if texts is not None else [''] * len(context_items)
        if len(texts) != len(context_items):
            raise ValueError(f'{len(texts)} texts for {len(context_items)} contexts')
        context = pad_ids(
            [
                self._context_ids(items, text)
                for items, text in zip(context_items, texts)
            ]
        ).to(device)
        if exclude_context is None:
            exclude_context = self.opt['rank_exclude_context']
        exclude = (
            ranking.exclusion_mask(context_items, len(self.catalog), device=device)
            if exclude_context
            else None
        )
        return self.model_log_probs(context, exclude, context_items, conversation_ids)

    def model_log_probs(self, context, exclude, context_items, conversation_ids):
        """The model's ``item_log_probs`` (subclasses pass what their model needs besides)."""
        return self.model.item_log_probs(context, exclude)


def module_device(module: torch.nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device('cpu')


def pad_ids(lists: Sequence[Sequence[int]]) -> torch.Tensor:
    """Lists of ids -> ``LongTensor[B, L]`` padded with -1 (L >= 1 so empty batches work)."""
    width = max([len(ids) for ids in lists] + [1])
    out = torch.full((len(lists), width), -1, dtype=torch.long)
    for row, ids in enumerate(lists):
        if ids:
            out[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
    return out


def _int_list(text: str, option: str) -> List[int]:
    try:
        values = [int(part) for part in str(text).split(',') if part.strip()]
    except ValueError as exc:
        raise ValueError(
            f'{option} {text!r}: expected comma-separated integers'
        ) from exc
    if not values or any(v <= 0 for v in values):
        raise ValueError(f'{option} {text!r}: expected positive integers')
    return values
