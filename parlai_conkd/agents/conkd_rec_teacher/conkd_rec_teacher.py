"""``-m conkd_rec_teacher``: the knowledge-aware recommendation teacher (KBRD-style).

Scores every catalog item given the dialogue so far: the items mentioned (the task's
``context_items``) and, with ``--text-entities``, KG genres/people named in the text -> one
R-GCN layer over the movie KG (``--use-kg``; without it, free item embeddings) -> attention
pooling into a user vector -> ``user . item + bias`` over all N items. Model math:
:mod:`parlai_conkd.rgcn`; graph: :mod:`parlai_conkd.knowledge_graph`; metrics:
:mod:`parlai_conkd.ranking`.

Train / evaluate (see projects/conkd/README.md, "Recommendation teacher")::

    parlai train_model -m conkd_rec_teacher -t redial_crs:rec \\
        --redial-meta-path ../shared/data/redial-meta -mf /tmp/rec/model -bs 64 -eps 20
    parlai eval_model -mf /tmp/rec/model -t redial_crs:rec -dt test

Metrics (per (example, gold item) pair, ties by expectation; see :mod:`parlai_conkd.ranking`):
``recall@k``, ``mrr``, ``ndcg@k`` over the example's ``label_items``; ``new_recall@k``,
``new_mrr``, ``new_ndcg@k`` over its ``new_items``; ``pairs`` / ``new_pairs`` count the pairs each
family averages over. On ``redial_crs:rec`` the two families coincide; on ``redial_crs:rec_all``
they are the "all" and "new" protocols side by side (issue #15).
``--rank-exclude-context true`` removes the context items from the ranking first.

The agents' replies carry no ``text`` outside interactive mode: ParlAI's teachers would score a
top-1 item token with word-overlap metrics (``accuracy``/``f1``/``precision``/``recall``, BLEU),
and ``__item_1__`` vs ``__item_2__`` share the word "item" (``recall`` 0.5 beside
``recall@50`` 0). The ranking is in ``recommendations`` (top-10 item tokens) and
``item_ranking`` (their catalog indices).

The distillation entry point is :meth:`ItemRankingAgent.item_log_probs`.
"""
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from parlai.core.dict import DictionaryAgent
from parlai.core.metrics import AverageMetric, SumMetric
from parlai.core.torch_agent import Batch, History, Output, TorchAgent
from parlai.utils import logging
from parlai.utils.torch import total_parameters, trainable_parameters

from parlai_conkd import ranking
from parlai_conkd.calibration import fit_temperature, sharpness, sharpness_rows
from parlai_conkd.items import DISPLAY_METADATA, CatalogError, Item, ItemCatalog
from parlai_conkd.knowledge_graph import (
    EntityLinker,
    KnowledgeGraph,
    load_knowledge_graph,
    text_entities,
)
from parlai_conkd.rgcn import KnowledgeRecommender, cooccurrence_counts, leave_one_out
from parlai_conkd.seeding import add_seed_args, seed_from_opt

#: checkpoint keys next to ParlAI's 'model' / 'optimizer'
CATALOG_KEY = 'item_catalog'
GRAPH_KEY = 'knowledge_graph'
LINKER_KEY = 'entity_linker'
CONFIG_KEY = 'rec_model_config'
COOCCURRENCE_KEY = 'item_cooccurrence'
#: conversation id -> catalog indices of each training dialogue (leave-one-out co-occurrence)
TRAIN_DIALOGUES_KEY = 'train_dialogue_items'


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
    file alone can describe its recommendations; plots and the rest are left out (large)."""
    items = [
        {'index': i.index, 'movie_id': i.movie_id, 'title': i.title, 'year': i.year,
         'mentions': i.mentions, 'kg_entity': i.kg_entity,
         'metadata': {k: i.metadata[k] for k in DISPLAY_METADATA if i.metadata and i.metadata.get(k)}}
        for i in catalog
    ]
    return {'fingerprint': catalog.fingerprint, 'items': items}


def _catalog_from_state(state: Dict, path: str) -> ItemCatalog:
    try:
        catalog = ItemCatalog([Item(**entry) for entry in state['items']])
    except (KeyError, TypeError) as exc:
        raise CatalogError(f'{path}: stored item catalog is unreadable ({exc})') from exc
    if catalog.fingerprint != state.get('fingerprint'):
        raise CatalogError(f'{path}: stored item catalog does not match its own fingerprint')
    return catalog


def _peek_checkpoint(path: str) -> Dict:
    import parlai.utils.pickle

    with open(path, 'rb') as f:
        return torch.load(f, map_location='cpu', pickle_module=parlai.utils.pickle)


def _data_catalog(opt) -> Optional[ItemCatalog]:
    """The catalog of the redial_crs data in use, or None when no redial_crs task is set."""
    if 'redial_crs' not in (opt.get('task') or ''):
        return None
    from parlai_conkd.redial.build import load_catalog

    return load_catalog(opt)


def _data_meta_path(opt) -> Optional[str]:
    from parlai_conkd.redial.build import meta_path

    return meta_path(opt)


def _training_dialogue_items(opt) -> Dict[str, List[int]]:
    """conversation id -> the items named in that training dialogue (both speakers, in order)."""
    from parlai_conkd.items import dedupe
    from parlai_conkd.redial.build import load_episodes

    return {
        str(episode['conversation_id']): dedupe(i for turn in episode['turns'] for i in turn['items'])
        for episode in load_episodes(opt, 'train')
    }


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
            '--rank-exclude-context', type='bool', default=False,
            help='Remove the items already mentioned in the dialogue from the ranking before '
            'computing recall/MRR/NDCG (and from item_log_probs by default).',
        )
        group.add_argument(
            '--rank-ks', type=str, default='1,10,50', help='Cut-offs k of recall@k (comma-separated).'
        )
        group.add_argument(
            '--ndcg-ks', type=str, default='10,50', help='Cut-offs k of ndcg@k (comma-separated).'
        )
        group.add_argument(
            '--rec-seed', type=int, default=None,
            help='Older name of --seed for this agent; when given it wins over --seed.',
        )
        add_seed_args(parser)
        parser.set_defaults(validation_metric='recall@10', validation_metric_mode='max')
        return parser

    # ------------------------------------------------------------------ set-up
    def __init__(self, opt, shared=None):
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
        batch['context'] = _pad_ids([ex['context_ids'] for ex in exs])
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
        return ranking.exclusion_mask(batch.context_items, len(self.catalog), device=batch.context.device)

    def record_ranking_metrics(self, scores: torch.Tensor, batch: Batch) -> None:
        """recall@k / mrr / ndcg@k over label items, and the same with ``new_`` over new items;
        ``pairs`` / ``new_pairs``: the number of (example, gold item) pairs behind each."""
        exclude = self._exclusion(batch)
        for prefix, gold in (('', batch.label_items), ('new_', batch.new_items)):
            sums = ranking.ranking_sums(scores, gold, self.rank_ks, exclude, self.ndcg_ks)
            count = sums.pop('count').tolist()
            for name, values in sums.items():
                self.record_local_metric(
                    prefix + name,
                    [AverageMetric(v, c) if c else None for v, c in zip(values.tolist(), count)],
                )
            self.record_local_metric(prefix + 'pairs', [SumMetric(int(c)) for c in count])

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
        recommendations = [[self.catalog[i].token for i in row] for row in top]
        if self.opt.get('interactive_mode'):
            return Output(text=[row[0] for row in recommendations], recommendations=recommendations,
                          item_ranking=top)
        # no 'text': teachers would score it with word-overlap metrics (see the module docstring)
        return Output(recommendations=recommendations, item_ranking=top)

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
        device = _module_device(self.model)
        texts = texts if texts is not None else [''] * len(context_items)
        if len(texts) != len(context_items):
            raise ValueError(f'{len(texts)} texts for {len(context_items)} contexts')
        context = _pad_ids(
            [self._context_ids(items, text) for items, text in zip(context_items, texts)]
        ).to(device)
        if exclude_context is None:
            exclude_context = self.opt['rank_exclude_context']
        exclude = (
            ranking.exclusion_mask(context_items, len(self.catalog), device=device)
            if exclude_context else None
        )
        return self.model_log_probs(context, exclude, context_items, conversation_ids)

    def model_log_probs(self, context, exclude, context_items, conversation_ids):
        """The model's ``item_log_probs`` (subclasses pass what their model needs besides)."""
        return self.model.item_log_probs(context, exclude)


class ConkdRecTeacherAgent(ItemRankingAgent):
    """KBRD-style recommender: R-GCN over the movie KG + attention pooling (or no KG)."""

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('ConKD recommendation teacher')
        group.add_argument(
            '--use-kg', type='bool', default=True,
            help='Relational graph convolution over the movie KG (needs --redial-meta-path when '
            'training); false: a free embedding per item.',
        )
        group.add_argument(
            '--text-entities', type='bool', default=True,
            help='Also pool KG genres / people named in the dialogue text (KG models only).',
        )
        group.add_argument(
            '--text-entity-min-movies', type=int, default=3,
            help='Link only people with at least this many movies in the KG (genres always).',
        )
        group.add_argument('--rec-dim', type=int, default=128, help='Entity/item embedding size.')
        group.add_argument(
            '--num-bases', type=int, default=8,
            help='R-GCN basis matrices shared by the relations (0: one full matrix per relation).',
        )
        group.add_argument('--rec-dropout', type=float, default=0.0, help='Dropout on pooled inputs.')
        group.add_argument(
            '--cooccurrence', type='bool', default=True,
            help='Add w * log(1 + co-occurrence counts of the context items) to every item\'s '
            'score (counts of items named in the same training dialogue; w learned). Training '
            'examples leave their own dialogue out.',
        )
        group.add_argument(
            '--item-bias-init', type=str, default='popularity', choices=('zero', 'popularity'),
            help='Initial item biases (training from scratch): zero, or log(1 + number of training '
            'dialogues naming the item), a popularity prior the model then adjusts.',
        )
        group.add_argument(
            '--calibrate', type='bool', default=True,
            help='Fit the temperature of item_log_probs on the validation fold at every '
            'validation of train_model (minimum gold-item NLL); saved with the model.',
        )
        group.add_argument(
            '--rec-temperature', type=float, default=None,
            help='Temperature T of the distribution softmax(scores / T) that item_log_probs '
            'returns (what a student distils); default: the one fitted on the validation fold.',
        )
        parser.set_defaults(optimizer='adam', learningrate=1e-3)
        return parser

    def __init__(self, opt, shared=None):
        self._calibration = []  # (scores, gold) of validation examples since the last fit
        super().__init__(opt, shared)
        if shared:
            self.train_dialogues = shared['train_dialogues']

    # ------------------------------------------------------------------ co-occurrence
    def _leave_out(self, context_items, conversation_ids) -> Optional[torch.Tensor]:
        """``[B, N]`` own-dialogue co-occurrence counts for contexts from training dialogues."""
        if self.model.cooccurrence is None or not conversation_ids:
            return None
        rows = []
        for items, conversation in zip(context_items, conversation_ids):
            dialogue = self.train_dialogues.get(str(conversation)) if conversation is not None else None
            rows.append(leave_one_out(items, dialogue or [], len(self.catalog)))
        if not any(bool(r.any()) for r in rows):
            return None
        return torch.stack(rows).to(_module_device(self.model))

    def score(self, batch: Batch) -> torch.Tensor:
        return self.model(batch.context, leave_out=self._leave_out(batch.context_items, batch.conversation_ids))

    def model_log_probs(self, context, exclude, context_items, conversation_ids):
        return self.model.item_log_probs(
            context, exclude, temperature=self.opt.get('rec_temperature'),
            leave_out=self._leave_out(context_items, conversation_ids),
        )

    # ------------------------------------------------------------------ calibration
    @torch.no_grad()
    def record_ranking_metrics(self, scores: torch.Tensor, batch: Batch) -> None:
        """Ranking metrics, and ``gold_nll`` / ``top1_prob`` / ``entropy`` of the distribution
        item_log_probs gives (at the fitted or ``--rec-temperature`` T) for the new items; while
        train_model validates, the scores are kept for the next temperature fit."""
        super().record_ranking_metrics(scores, batch)
        if not any(batch.new_items):
            return
        scores = scores.detach().float()
        rows = [b for b, items in enumerate(batch.new_items) for _ in items]
        gold = torch.tensor([i for items in batch.new_items for i in items], device=scores.device)
        temperature = self.opt.get('rec_temperature') or float(self.model.temperature)
        per_pair = sharpness_rows(scores[rows], gold, temperature)
        for name, values in per_pair.items():
            sums = torch.zeros(batch.batchsize).index_add_(0, torch.tensor(rows), values.cpu())
            counts = [len(items) for items in batch.new_items]
            self.record_local_metric(name, [AverageMetric(v, c) if c else None for v, c in zip(sums.tolist(), counts)])
        validating = not self.model.training and self.opt.get('datatype', '').startswith('train')
        if self.opt.get('calibrate') and validating:
            self._calibration.append((scores[rows].cpu(), gold.cpu()))

    def receive_metrics(self, metrics_dict):
        """train_model calls this after each validation: fit the temperature on that pass."""
        super().receive_metrics(metrics_dict)
        if not self._calibration:
            return
        scores = torch.cat([s for s, _ in self._calibration])
        gold = torch.cat([g for _, g in self._calibration])
        self._calibration = []
        before = sharpness(scores, gold, 1.0)
        temperature = fit_temperature(scores, gold)
        after = sharpness(scores, gold, temperature)
        self.model.temperature.fill_(temperature)
        logging.info(
            f'conkd_rec_teacher: temperature {temperature:.3f} fitted on {len(gold)} validation '
            f'items: gold NLL {before.gold_nll:.3f} -> {after.gold_nll:.3f}, top-1 probability '
            f'{before.top1_prob:.4f} -> {after.top1_prob:.4f}, entropy {before.entropy:.2f} -> '
            f'{after.entropy:.2f} nats'
        )

    def load_state_dict(self, state_dict):
        # model files from before the temperature existed: T = 1 (uncalibrated)
        state_dict.setdefault('temperature', torch.ones(()))
        return super().load_state_dict(state_dict)

    def build_model_from(self, saved: Dict, path: Optional[str]):
        opt = self.opt
        text_entities_on = bool(opt['use_kg'] and opt['text_entities'])
        config = {
            'use_kg': bool(opt['use_kg']),
            'text_entities': text_entities_on,
            'text_entity_min_movies': opt['text_entity_min_movies'] if text_entities_on else None,
            'rec_dim': opt['rec_dim'],
            'num_bases': opt['num_bases'],
            'cooccurrence': bool(opt.get('cooccurrence')),
        }
        if CONFIG_KEY in saved:
            stored = saved[CONFIG_KEY]
            differing = {k: (stored.get(k), v) for k, v in config.items() if stored.get(k) != v}
            if differing:
                mismatch = '; '.join(
                    f'--{k.replace("_", "-")}: model {saved_value}, options {value}'
                    for k, (saved_value, value) in differing.items()
                )
                raise ValueError(
                    f'{path} has another architecture than the options ask for ({mismatch}): '
                    'pass the model\'s values or retrain.'
                )
        self.model_config = config
        num_items = len(self.catalog)
        counts = None
        self.train_dialogues: Dict[str, List[int]] = {}
        from_scratch = 'model' not in saved
        if config['cooccurrence']:
            if COOCCURRENCE_KEY in saved:
                stored = saved[COOCCURRENCE_KEY]
                counts = torch.sparse_coo_tensor(stored['indices'], stored['values'], tuple(stored['size']),
                                                 check_invariants=True)
                self.train_dialogues = dict(saved.get(TRAIN_DIALOGUES_KEY) or {})
            else:
                self.train_dialogues = _training_dialogue_items(opt)
                counts = cooccurrence_counts(self.train_dialogues.values(), num_items)
                logging.info(
                    f'item co-occurrence: {counts.values().numel()} item pairs from '
                    f'{len(self.train_dialogues)} training dialogues'
                )
        model = self._build_recommender(config, counts, num_items, saved)
        if from_scratch and opt.get('item_bias_init') == 'popularity':
            dialogues = self.train_dialogues or _training_dialogue_items(opt)
            naming = torch.zeros(num_items)
            for items in dialogues.values():
                naming[list(set(items))] += 1
            with torch.no_grad():
                model.item_bias.copy_(torch.log1p(naming))
        return model

    def _build_recommender(self, config, counts, num_items, saved: Dict):
        """The R-GCN recommender (graph from ``saved`` when loading, else from the KG files)."""
        opt = self.opt
        if not config['use_kg']:
            return KnowledgeRecommender(num_items, dim=config['rec_dim'], dropout=opt['rec_dropout'],
                                        cooccurrence=counts)
        if GRAPH_KEY in saved:
            graph = KnowledgeGraph(**saved[GRAPH_KEY])
            linker_state = saved.get(LINKER_KEY)
            self.linker = EntityLinker.from_state(linker_state) if linker_state else None
            extra_nodes = saved.get('extra_nodes', torch.zeros(0, dtype=torch.long))
        else:
            meta = _data_meta_path(opt)
            if meta is None:
                raise CatalogError(
                    '--use-kg true needs the movie KG: pass --redial-meta-path (or set '
                    'CONKD_REDIAL_META_PATH) to the redial-meta directory, or --use-kg false.'
                )
            if not self.catalog.has_kg:
                raise CatalogError(
                    'the redial_crs item catalog has no KG entities: it was built without the '
                    'metadata directory; pass --redial-meta-path so the task rebuilds with it.'
                )
            graph = load_knowledge_graph(meta, self.catalog)
            extra_nodes = torch.zeros(0, dtype=torch.long)
            if config['text_entities']:
                extra_nodes, self.linker = text_entities(
                    meta, graph, num_items, config['text_entity_min_movies']
                )
            logging.info(
                f'movie KG: {graph.num_nodes} nodes, {graph.num_edges} edges, relations '
                f'{graph.relations}; {extra_nodes.numel()} text entities'
            )
        self.graph = graph
        self.extra_nodes = extra_nodes
        return KnowledgeRecommender(
            num_items,
            item_nodes=graph.item_nodes,
            graph={
                'src': graph.src, 'dst': graph.dst, 'edge_type': graph.edge_type,
                'edge_norm': graph.edge_norm, 'num_nodes': graph.num_nodes,
                'num_relations': graph.num_relations,
            },
            extra_nodes=extra_nodes,
            dim=config['rec_dim'],
            num_bases=config['num_bases'],
            dropout=opt['rec_dropout'],
            cooccurrence=counts,
        )

    def share(self):
        shared = super().share()
        shared['model_config'] = self.model_config
        shared['train_dialogues'] = self.train_dialogues
        return shared

    def state_dict(self):
        states = super().state_dict()
        states[CONFIG_KEY] = self.model_config
        if self.model_config['use_kg']:
            graph = self.graph
            states[GRAPH_KEY] = {
                'num_nodes': graph.num_nodes, 'src': graph.src, 'dst': graph.dst,
                'edge_type': graph.edge_type, 'edge_norm': graph.edge_norm,
                'relations': graph.relations, 'item_nodes': graph.item_nodes,
            }
            states['extra_nodes'] = self.extra_nodes
            if self.linker is not None:
                states[LINKER_KEY] = self.linker.state()
        if self.model.cooccurrence is not None:
            counts = self.model.cooccurrence.counts
            states[COOCCURRENCE_KEY] = {
                'indices': counts.indices(), 'values': counts.values(), 'size': list(counts.size()),
            }
            states[TRAIN_DIALOGUES_KEY] = self.train_dialogues
        return states

    def train_step(self, batch):
        if batch.batchsize == 0:
            return None
        self.model.train()
        self.zero_grad()
        scores = self.score(batch)
        targets = batch.new_items
        rows = [b for b, items in enumerate(targets) for _ in items]
        if not rows:
            return None
        gold = torch.tensor([i for items in targets for i in items], device=scores.device)
        # one cross-entropy term per (example, new item) pair, as in redial_crs:rec
        losses = F.cross_entropy(scores[rows], gold, reduction='none')
        per_example = torch.zeros(batch.batchsize, device=scores.device).index_add_(
            0, torch.tensor(rows, device=scores.device), losses.detach()
        )
        counts = [len(items) for items in targets]
        self.record_local_metric(
            'loss', [AverageMetric(v, c) if c else None for v, c in zip(per_example.tolist(), counts)]
        )
        self.backward(losses.mean())
        self.update_params()
        with torch.no_grad():
            self.record_ranking_metrics(scores.detach(), batch)
        return None


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return torch.device('cpu')


def _pad_ids(lists: Sequence[Sequence[int]]) -> torch.Tensor:
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
        raise ValueError(f'{option} {text!r}: expected comma-separated integers') from exc
    if not values or any(v <= 0 for v in values):
        raise ValueError(f'{option} {text!r}: expected positive integers')
    return values
