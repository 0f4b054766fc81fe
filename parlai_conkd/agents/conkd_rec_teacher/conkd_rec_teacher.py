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

Metrics, replies and the distillation entry point (:meth:`ItemRankingAgent.item_log_probs`)
come from the shared base, :mod:`parlai_conkd.agents.item_ranking`.
"""

from dataclasses import asdict, dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from parlai.core.metrics import AverageMetric
from parlai.core.torch_agent import Batch
from parlai.utils import logging

from parlai_conkd.agents.item_ranking import ItemRankingAgent, module_device
from parlai_conkd.calibration import fit_temperature, sharpness, sharpness_rows
from parlai_conkd.items import CatalogError
from parlai_conkd.knowledge_graph import (
    EntityLinker,
    KnowledgeGraph,
    load_knowledge_graph,
    text_entities,
)
from parlai_conkd.rgcn import KnowledgeRecommender, cooccurrence_counts, leave_one_out

#: checkpoint keys next to ParlAI's 'model' / 'optimizer' (and the base's 'item_catalog')
GRAPH_KEY = 'knowledge_graph'
LINKER_KEY = 'entity_linker'
CONFIG_KEY = 'rec_model_config'
COOCCURRENCE_KEY = 'item_cooccurrence'
#: conversation id -> catalog indices of each training dialogue (leave-one-out co-occurrence)
TRAIN_DIALOGUES_KEY = 'train_dialogue_items'


@dataclass(frozen=True)
class RecModelConfig:
    """The rec teacher's architecture, from its options: what its model file is rebuilt with.

    Saved with the model as a plain dict (checkpoint key ``rec_model_config``; model files do not
    depend on this class, and older ones load). Loading refuses a model whose saved config differs
    from the options, naming each option.
    """

    use_kg: bool
    text_entities: bool
    #: None when text entities are off (the option then changes nothing)
    text_entity_min_movies: Optional[int]
    rec_dim: int
    num_bases: int
    cooccurrence: bool

    @classmethod
    def from_opt(cls, opt) -> 'RecModelConfig':
        text_entities_on = bool(opt['use_kg'] and opt['text_entities'])
        return cls(
            use_kg=bool(opt['use_kg']),
            text_entities=text_entities_on,
            text_entity_min_movies=(
                opt['text_entity_min_movies'] if text_entities_on else None
            ),
            rec_dim=opt['rec_dim'],
            num_bases=opt['num_bases'],
            cooccurrence=bool(opt.get('cooccurrence')),
        )

    def state(self) -> Dict:
        return asdict(self)

    def check_saved(self, saved: Dict, path: Optional[str]) -> None:
        """Raise ValueError when the saved config ``saved`` (a dict) is not this one."""
        differing = {
            k: (saved.get(k), v) for k, v in self.state().items() if saved.get(k) != v
        }
        if differing:
            mismatch = '; '.join(
                f'--{k.replace("_", "-")}: model {saved_value}, options {value}'
                for k, (saved_value, value) in differing.items()
            )
            raise ValueError(
                f'{path} has another architecture than the options ask for ({mismatch}): '
                'pass the model\'s values or retrain.'
            )


def _data_meta_path(opt) -> Optional[str]:
    from parlai_conkd.redial.build import meta_path

    return meta_path(opt)


def _training_dialogue_items(opt) -> Dict[str, List[int]]:
    """conversation id -> the items named in that training dialogue (both speakers, in order)."""
    from parlai_conkd.items import dedupe
    from parlai_conkd.redial.build import load_episodes

    return {
        str(episode['conversation_id']): dedupe(
            i for turn in episode['turns'] for i in turn['items']
        )
        for episode in load_episodes(opt, 'train')
    }


def add_rec_temperature_arg(group) -> None:
    """``--rec-temperature``, the one definition: the rec teacher's own option, and the student's
    for the rec teacher it distils from."""
    group.add_argument(
        '--rec-temperature',
        type=float,
        default=None,
        help='Temperature T of the rec teacher\'s item distribution softmax(scores / T), what '
        'item_log_probs returns and a student distils; default: the one fitted on the validation '
        'fold and saved with the rec teacher.',
    )


class ConkdRecTeacherAgent(ItemRankingAgent):
    """KBRD-style recommender: R-GCN over the movie KG + attention pooling (or no KG)."""

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('ConKD recommendation teacher')
        group.add_argument(
            '--use-kg',
            type='bool',
            default=True,
            help='Relational graph convolution over the movie KG (needs --redial-meta-path when '
            'training); false: a free embedding per item.',
        )
        group.add_argument(
            '--text-entities',
            type='bool',
            default=True,
            help='Also pool KG genres / people named in the dialogue text (KG models only).',
        )
        group.add_argument(
            '--text-entity-min-movies',
            type=int,
            default=3,
            help='Link only people with at least this many movies in the KG (genres always).',
        )
        group.add_argument(
            '--rec-dim', type=int, default=128, help='Entity/item embedding size.'
        )
        group.add_argument(
            '--num-bases',
            type=int,
            default=8,
            help='R-GCN basis matrices shared by the relations (0: one full matrix per relation).',
        )
        group.add_argument(
            '--rec-dropout', type=float, default=0.0, help='Dropout on pooled inputs.'
        )
        group.add_argument(
            '--cooccurrence',
            type='bool',
            default=True,
            help='Add w * log(1 + co-occurrence counts of the context items) to every item\'s '
            'score (counts of items named in the same training dialogue; w learned). Training '
            'examples leave their own dialogue out.',
        )
        group.add_argument(
            '--item-bias-init',
            type=str,
            default='popularity',
            choices=('zero', 'popularity'),
            help='Initial item biases (training from scratch): zero, or log(1 + number of training '
            'dialogues naming the item), a popularity prior the model then adjusts.',
        )
        group.add_argument(
            '--calibrate',
            type='bool',
            default=True,
            help='Fit the temperature of item_log_probs on the validation fold at every '
            'validation of train_model (minimum gold-item NLL); saved with the model.',
        )
        add_rec_temperature_arg(group)
        parser.set_defaults(optimizer='adam', learningrate=1e-3)
        return parser

    def __init__(self, opt, shared=None):
        # (scores, gold) of validation examples since the last fit
        self._calibration = []
        super().__init__(opt, shared)
        if shared:
            self.model_config = shared['model_config']
            self.train_dialogues = shared['train_dialogues']

    # ------------------------------------------------------------------ co-occurrence
    def _leave_out(self, context_items, conversation_ids) -> Optional[torch.Tensor]:
        """``[B, N]`` own-dialogue co-occurrence counts for contexts from training dialogues."""
        if self.model.cooccurrence is None or not conversation_ids:
            return None
        rows = []
        for items, conversation in zip(context_items, conversation_ids):
            dialogue = (
                self.train_dialogues.get(str(conversation))
                if conversation is not None
                else None
            )
            rows.append(leave_one_out(items, dialogue or [], len(self.catalog)))
        if not any(bool(r.any()) for r in rows):
            return None
        return torch.stack(rows).to(module_device(self.model))

    def score(self, batch: Batch) -> torch.Tensor:
        return self.model(
            batch.context,
            leave_out=self._leave_out(batch.context_items, batch.conversation_ids),
        )

    def model_log_probs(self, context, exclude, context_items, conversation_ids):
        return self.model.item_log_probs(
            context,
            exclude,
            temperature=self.opt.get('rec_temperature'),
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
        gold = torch.tensor(
            [i for items in batch.new_items for i in items], device=scores.device
        )
        temperature = self.opt.get('rec_temperature') or float(self.model.temperature)
        per_pair = sharpness_rows(scores[rows], gold, temperature)
        for name, values in per_pair.items():
            sums = torch.zeros(batch.batchsize).index_add_(
                0, torch.tensor(rows), values.cpu()
            )
            counts = [len(items) for items in batch.new_items]
            self.record_local_metric(
                name,
                [
                    AverageMetric(v, c) if c else None
                    for v, c in zip(sums.tolist(), counts)
                ],
            )
        validating = not self.model.training and self.opt.get(
            'datatype', ''
        ).startswith('train')
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
        config = RecModelConfig.from_opt(opt)
        if CONFIG_KEY in saved:
            config.check_saved(saved[CONFIG_KEY], path)
        self.model_config = config
        num_items = len(self.catalog)
        counts = None
        self.train_dialogues: Dict[str, List[int]] = {}
        from_scratch = 'model' not in saved
        if config.cooccurrence:
            if COOCCURRENCE_KEY in saved:
                stored = saved[COOCCURRENCE_KEY]
                counts = torch.sparse_coo_tensor(
                    stored['indices'],
                    stored['values'],
                    tuple(stored['size']),
                    check_invariants=True,
                )
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

    def _build_recommender(
        self, config: RecModelConfig, counts, num_items, saved: Dict
    ):
        """The R-GCN recommender (graph from ``saved`` when loading, else from the KG files)."""
        opt = self.opt
        if not config.use_kg:
            return KnowledgeRecommender(
                num_items,
                dim=config.rec_dim,
                dropout=opt['rec_dropout'],
                cooccurrence=counts,
            )
        if GRAPH_KEY in saved:
            graph = KnowledgeGraph(**saved[GRAPH_KEY])
            linker_state = saved.get(LINKER_KEY)
            self.linker = (
                EntityLinker.from_state(linker_state) if linker_state else None
            )
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
            if config.text_entities:
                extra_nodes, self.linker = text_entities(
                    meta, graph, num_items, config.text_entity_min_movies
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
                'src': graph.src,
                'dst': graph.dst,
                'edge_type': graph.edge_type,
                'edge_norm': graph.edge_norm,
                'num_nodes': graph.num_nodes,
                'num_relations': graph.num_relations,
            },
            extra_nodes=extra_nodes,
            dim=config.rec_dim,
            num_bases=config.num_bases,
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
        states[CONFIG_KEY] = self.model_config.state()
        if self.model_config.use_kg:
            states[GRAPH_KEY] = self.graph.state()
            states['extra_nodes'] = self.extra_nodes
            if self.linker is not None:
                states[LINKER_KEY] = self.linker.state()
        if self.model.cooccurrence is not None:
            counts = self.model.cooccurrence.counts
            states[COOCCURRENCE_KEY] = {
                'indices': counts.indices(),
                'values': counts.values(),
                'size': list(counts.size()),
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
        gold = torch.tensor(
            [i for items in targets for i in items], device=scores.device
        )
        # one cross-entropy term per (example, new item) pair, as in redial_crs:rec
        losses = F.cross_entropy(scores[rows], gold, reduction='none')
        per_example = torch.zeros(batch.batchsize, device=scores.device).index_add_(
            0, torch.tensor(rows, device=scores.device), losses.detach()
        )
        counts = [len(items) for items in targets]
        self.record_local_metric(
            'loss',
            [
                AverageMetric(v, c) if c else None
                for v, c in zip(per_example.tolist(), counts)
            ],
        )
        self.backward(losses.mean())
        self.update_params()
        with torch.no_grad():
            self.record_ranking_metrics(scores.detach(), batch)
        return None
