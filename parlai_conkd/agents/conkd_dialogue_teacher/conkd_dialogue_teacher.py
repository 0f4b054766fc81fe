"""``-m conkd_dialogue_teacher``: a generator over words + item tokens (ConKD's dialogue teacher).

Trained with NLL alone it is also the paper's "no distillation" baseline. The student
(``conkd_student``) subclasses this agent; the hooks it relies on are:

* ``item_token_ids``: ``LongTensor[N]``, the vocabulary id of catalog item i at position i, on the
  model's device; ``item_index_of_token``: the inverse map (vocab id -> catalog index);
  ``rec_token_id`` / ``gen_token_id``: the [REC]/[GEN] flag ids.
* ``teacher_forced_scores(batch)`` / ``teacher_forced_log_probs(batch)``: no-grad, eval-mode
  per-step logits / log-probabilities over the full vocabulary (the latter with the per-step item
  mass, the ConKD gate), aligned with ``batch.label_vec``.
* ``compute_loss(batch, return_output=True)`` is ParlAI's: ``model_output[0]`` are the logits
  ``[B, T, V]`` aligned with ``batch.label_vec`` (flag token first). A subclass adds a loss term by
  calling ``super().compute_loss(batch, return_output=True)`` and adding to the returned loss.
* ``record_response_metrics(batch, preds)``: ReR@k (new and all items), item precision/recall/F1,
  item ratio, Dist-n; called from ``_add_generation_metrics`` for every generator of this project.
  Outside interactive mode it also puts the per-example log (``world_log.py``) in the replies.
* ``rec_teacher_log_probs(batch)``: ``[B, N]`` item log-probabilities of the recommender at hand
  (here the ``--fill-items-from`` one; the student: its loaded rec teacher), or None.

Backbones (``--backbone``): ``transformer`` = ParlAI's TransformerGeneratorModel from scratch over
a word dictionary; ``hf`` = ParlAI's HF GPT-2 model class (``parlai.agents.hugging_face.gpt2``) on
a local GPT-2/DialoGPT directory (``--hf-model-path``), embeddings resized for the added tokens.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from parlai.agents.transformer.transformer import TransformerGeneratorAgent
from parlai.core.metrics import AverageMetric, SumMetric
from parlai.utils import logging
from parlai.utils.torch import padded_tensor

from parlai_conkd.decoding import ITEM_DECODING, ITEM_NO_REPEAT, ItemVocab
from parlai_conkd.distill import item_mass
from parlai_conkd.item_embeddings import fit_to_embeddings, freeze_rows
from parlai_conkd.items import GEN_TOKEN, ITEM_TOKEN_RE, REC_TOKEN, CatalogError
from parlai_conkd.model_files import check_model_file
from parlai_conkd.metrics import (
    DIST_NS,
    RER_KS,
    distinct_tokens,
    first_item_slot,
    generated_items,
    item_overlap,
    response_recall_at_k,
)
from parlai_conkd.seeding import add_seed_args, seed_from_opt

from .dictionary import (
    ConkdDictionaryAgent,
    build_hf_dictionary,
    model_catalog_path,
    resolve_catalog,
)
from .hf_model import resolve_hf_model_path
from .item_search import (
    ItemDecodingSpec,
    context_items_of,
    greedy_beam_size,
    item_aware,
)
from .response_metrics import DistinctNgramMetric
from .world_log import ReplyItemScores, reply_logs

BACKBONES = ('transformer', 'hf')
#: ``-m`` names accepted by --fill-items-from
ITEM_RANKERS = {'conkd_rec_teacher', 'conkd_popularity', 'conkd_repeat'}


@dataclass
class TeacherForcedOutput:
    """What the student distils. All aligned with ``batch.label_vec`` ([B, T])."""

    #: log-probabilities over the full vocabulary, ``[B, T, V]`` (float32)
    log_probs: torch.Tensor
    #: total probability of the item tokens per step, ``[B, T]`` (the ConKD gate lambda_t)
    item_mass: torch.Tensor
    #: True at real target tokens, False at padding, ``[B, T]``
    mask: torch.Tensor


def _average(value: Optional[float]) -> AverageMetric:
    """An undefined per-response value (e.g. precision of a reply naming no item) counts 0/0:
    it leaves the average unchanged but keeps the metric in every report."""
    return AverageMetric(0, 0) if value is None else AverageMetric(value)


class ConkdDialogueTeacherAgent(TransformerGeneratorAgent):
    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('ConKD dialogue teacher')
        group.add_argument(
            '--backbone',
            type=str,
            default='transformer',
            choices=BACKBONES,
            help='transformer: ParlAI transformer generator trained from scratch (word vocab); '
            'hf: a local Hugging Face GPT-2/DialoGPT causal LM (--hf-model-path).',
        )
        group.add_argument(
            '--hf-model-path',
            type=str,
            default=None,
            help='A HF GPT-2-family model and its tokenizer (--backbone hf): a local directory, or a '
            'hub name such as microsoft/DialoGPT-small (fetched once into the HF cache when online; '
            'offline it must already be cached).',
        )
        group.add_argument(
            '--item-catalog',
            type=str,
            default=None,
            help='Item catalog JSON (ItemCatalog.save). Default: the model file\'s saved catalog, '
            'else the redial_crs task\'s catalog.',
        )
        group.add_argument(
            '--force-rec-flag',
            type='bool',
            default=False,
            help='Start every generated reply with [REC] instead of letting the model choose '
            '[REC]/[GEN]. A diagnostic for evaluation: ReR@k and item F1 then measure which items '
            'the model names when it recommends, separately from whether it decides to.',
        )
        group.add_argument(
            '--render-items',
            type='bool',
            default=False,
            help='Show item tokens as "Title (Year)" in the reply text (always on in interactive '
            'mode). Leave off for eval_model: text metrics compare against item-token labels.',
        )
        group = parser.add_argument_group('Item-aware decoding (parlai_conkd.decoding)')
        group.add_argument(
            '--item-decoding',
            type=str,
            default='token',
            choices=ITEM_DECODING,
            help='token: search over single tokens (ParlAI\'s plain decoding; an item is chosen '
            'only when one item token beats every word). class: at each step compare the item '
            'class\'s total probability (the ConKD gate lambda_t) with the words, and when the class '
            'wins name the model\'s best allowed item (greedy/beam), or draw one within the class '
            '(top-k/nucleus). Formula and reasons: parlai_conkd/decoding.py.',
        )
        group.add_argument(
            '--item-no-repeat',
            type=str,
            default='dialogue',
            choices=ITEM_NO_REPEAT,
            help='Items a reply may not name: none; reply (already named in this reply); dialogue '
            '(also those named earlier in the dialogue: a recommendation names new films). Item '
            'tokens are exempt from --beam-block-ngram/--beam-context-block-ngram; this rule '
            'decides their repeats instead.',
        )
        group.add_argument(
            '--rec-flag-threshold',
            type=float,
            default=None,
            help='Start the reply with [REC] when P([REC]) / (P([REC]) + P([GEN])) exceeds this, '
            'else [GEN] (default: the model\'s own argmax). Fitted on the validation fold by '
            'projects/conkd/decoding_search.py and saved with the model.',
        )
        group.add_argument(
            '--rec-flag-gates-items',
            type='bool',
            default=False,
            help='--item-decoding class: a reply that starts with [GEN] names no item.',
        )
        group.add_argument(
            '--item-embeddings-from',
            type=str,
            default=None,
            help='A conkd_rec_teacher model file or zoo: path whose item vectors initialise the '
            'item token embeddings when training from scratch (transformer backbone; see '
            'parlai_conkd/item_embeddings.py).',
        )
        group.add_argument(
            '--freeze-item-embeddings',
            type='bool',
            default=False,
            help='Keep the item token embeddings fixed while training (with --item-embeddings-from: '
            'the rec teacher\'s geometry stays; the model learns where in it to point).',
        )
        group.add_argument(
            '--fill-items-from',
            type=str,
            default=None,
            help='The pipeline baseline: a recommender model file or zoo: path (conkd_rec_teacher '
            'or another item ranker). The generator decides where a reply names an item; this '
            'recommender decides which (its best item the reply may name, see --item-no-repeat); '
            'ReR@k then ranks by the recommender\'s scores.',
        )
        add_seed_args(parser)
        return parser

    @staticmethod
    def dictionary_class():
        return ConkdDictionaryAgent

    def __init__(self, opt, shared=None):
        seed_from_opt(
            opt, shared
        )  # before the model is built: its initialisation is seeded too
        greedy_beam_size(opt)  # before ParlAI's generator reads --beam-size
        if opt.get('backbone') == 'hf':
            # what ParlAI's GPT-2 classes read: fixed here, not user options (a hub name becomes
            # the directory of its cached snapshot; a bad value fails here, naming the option)
            opt['model_name'] = resolve_hf_model_path(opt.get('hf_model_path'))
            opt['add_special_tokens'] = True
            opt['add_start_token'] = False
            opt.setdefault('gpt2_size', 'small')
        super().__init__(opt, shared)
        if shared:
            self.catalog = shared['catalog']
        else:
            self.catalog = resolve_catalog(self.opt)
        self._init_item_tokens()
        if shared:
            self.item_filler = shared.get('item_filler')
        else:
            self.item_filler = self._load_item_filler()
        if self.is_hf:
            # ParlAI's GPT-2 model keeps its own copies of the special ids
            model = self._unwrapped_model()
            self.START_IDX, self.END_IDX, self.NULL_IDX = (
                model.START_IDX,
                model.END_IDX,
                model.NULL_IDX,
            )

    # ------------------------------------------------------------------ vocabulary
    @property
    def is_hf(self) -> bool:
        return self.opt.get('backbone') == 'hf'

    def build_dictionary(self):
        if self.is_hf:
            # special and item tokens are added inside the tokenizer (see dictionary.py)
            self.special_toks = []
            return build_hf_dictionary(self.opt)
        return super().build_dictionary()

    def _get_special_tokens(self) -> List[str]:
        return [REC_TOKEN, GEN_TOKEN] + super()._get_special_tokens()

    def _init_item_tokens(self):
        tokens = self.catalog.tokens()
        ids = [self.dict.tok2ind.get(token) for token in tokens]
        missing = [tok for tok, i in zip(tokens, ids) if i is None]
        if missing:
            raise CatalogError(
                f'{len(missing)} catalog item tokens are not in the vocabulary (e.g. {missing[0]}): '
                'the dictionary was built for another catalog'
            )
        device = next(self._unwrapped_model().parameters()).device
        self.item_token_ids = torch.tensor(ids, dtype=torch.long, device=device)
        self.item_index_of_token: Dict[int, int] = {
            vocab_id: index for index, vocab_id in enumerate(ids)
        }
        self.item_vocab = ItemVocab.of(
            self.item_token_ids, max(len(self.dict), max(ids) + 1)
        )
        self.rec_token_id = self.dict.tok2ind[REC_TOKEN]
        self.gen_token_id = self.dict.tok2ind[GEN_TOKEN]
        self._flag_ids = {self.rec_token_id, self.gen_token_id}

    def share(self):
        shared = super().share()
        shared['catalog'] = self.catalog
        shared['item_filler'] = self.item_filler
        return shared

    def _load_item_filler(self):
        """The ``--fill-items-from`` recommender (frozen), or None."""
        if not self.opt.get('fill_items_from'):
            return None
        from parlai_conkd.agents.item_ranking import ItemRankingAgent
        from parlai_conkd.agents.frozen import load_frozen_teacher

        agent, _ = load_frozen_teacher(
            self.opt, '--fill-items-from', ItemRankingAgent, ITEM_RANKERS, self.catalog
        )
        return agent

    def _unwrapped_model(self):
        model = self.model
        return model.module if hasattr(model, 'module') else model

    # ------------------------------------------------------------------ model
    def build_model(self, states=None):
        if self.is_hf:
            if self.opt.get('item_embeddings_from'):
                raise CatalogError(
                    '--item-embeddings-from needs --backbone transformer'
                )
            from parlai.agents.hugging_face.gpt2 import HFGPT2Model

            return HFGPT2Model(self.opt, self.dict)
        model = super().build_model(states)
        init_model, _ = self._get_init_model(self.opt, None)
        if self.opt.get('item_embeddings_from') and init_model is None:
            self._init_item_embeddings(
                model
            )  # from scratch only: saved weights win otherwise
        if self.opt.get('freeze_item_embeddings'):
            freeze_rows(model.embeddings.weight, self._catalog_token_ids())
        return model

    def _catalog_token_ids(self) -> torch.Tensor:
        """Vocabulary ids of the catalog's item tokens (before ``item_token_ids`` exists)."""
        return torch.tensor(
            [self.dict.tok2ind[token] for token in resolve_catalog(self.opt).tokens()]
        )

    @torch.no_grad()
    def _init_item_embeddings(self, model) -> None:
        """Item rows of the token embeddings from the ``--item-embeddings-from`` recommender's
        item vectors (see parlai_conkd/item_embeddings.py)."""
        from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import (
            ConkdRecTeacherAgent,
        )
        from parlai_conkd.agents.frozen import load_frozen_teacher

        catalog = resolve_catalog(self.opt)
        recommender, path = load_frozen_teacher(
            self.opt,
            '--item-embeddings-from',
            ConkdRecTeacherAgent,
            {'conkd_rec_teacher'},
            catalog,
        )
        vectors = recommender.model.context_representations()[: len(catalog)].cpu()
        table = model.embeddings.weight
        ids = torch.tensor(
            [self.dict.tok2ind[token] for token in catalog.tokens()],
            device=table.device,
        )
        rows = fit_to_embeddings(
            vectors,
            table.size(1),
            std=table.size(1) ** -0.5,
            seed=self.opt.get('seed') or 0,
        )
        table[ids] = rows.to(table)
        logging.info(
            f'item token embeddings initialised from {path} ({vectors.size(1)}-d item vectors)'
        )

    def _pad_tensor(self, items, is_label=False):
        if self.is_hf:
            # GPT-2 reads context and label as one left-padded stream (ParlAI's Gpt2Agent rule)
            return padded_tensor(
                items, pad_idx=self.NULL_IDX, left_padded=True, fp16friendly=False
            )
        return super()._pad_tensor(items, is_label=is_label)

    def load(self, path):
        check_model_file(
            path
        )  # a one-line error for a missing, empty or truncated file
        return super().load(path)

    def load_state_dict(self, state_dict):
        if self.is_hf:
            # checkpoints from older transformers lack attn.masked_bias (as in Gpt2Agent)
            current = self.model.state_dict()
            for key in set(current) - set(state_dict):
                if 'masked_bias' in key:
                    state_dict[key] = current[key]
        return super().load_state_dict(state_dict)

    def save(self, path=None):
        super().save(path)
        path = self.opt.get('model_file', None) if path is None else path
        if path and hasattr(self, 'catalog'):
            self.catalog.save(model_catalog_path(path))

    # ------------------------------------------------------------------ targets
    def _is_rec(self, obs, label: str) -> bool:
        if obs.get('is_rec') is not None:
            return bool(obs['is_rec'])
        return ITEM_TOKEN_RE.search(label) is not None

    def _set_label_vec(self, obs, add_start, add_end, truncate):
        """Prefix the target with [REC]/[GEN] (from the example's ``is_rec``)."""
        obs = super()._set_label_vec(obs, add_start, add_end, truncate)
        if obs is None:
            return obs
        key = (
            'labels_vec'
            if 'labels_vec' in obs
            else 'eval_labels_vec' if 'eval_labels_vec' in obs else None
        )
        if key is None:
            return obs
        vec = obs[key]
        vec = vec.tolist() if torch.is_tensor(vec) else list(vec)
        if vec and vec[0] in self._flag_ids:
            return obs
        label = obs.get(key[: -len('_vec')], [''])
        label = label[0] if label else ''
        flag = self.rec_token_id if self._is_rec(obs, label) else self.gen_token_id
        vec = [flag] + vec
        if truncate is not None and len(vec) > truncate:
            vec = vec[:truncate]
        obs.force_set(key, torch.LongTensor(vec))
        return obs

    def _v2t(self, vec):
        """Token ids -> reply text without the flag token; titles when rendering for people."""
        ids = [
            int(i)
            for i in (vec.cpu() if hasattr(vec, 'cpu') else vec)
            if int(i) not in self._flag_ids
        ]
        text = super()._v2t(ids)
        if self.opt.get('render_items') or self.in_interactive_mode():
            text = self.catalog.render(text)
        return text

    def get_prefix_tokens(self, batch):
        """ParlAI's hook for forced decoding prefixes: [REC] for every reply with --force-rec-flag."""
        if not self.opt.get('force_rec_flag'):
            return super().get_prefix_tokens(batch)
        rows = (
            batch.text_vec.size(0)
            if batch.text_vec is not None
            else len(batch.valid_indices)
        )
        return torch.full(
            (rows, 1),
            self.rec_token_id,
            dtype=torch.long,
            device=self.item_token_ids.device,
        )

    def set_interactive_mode(self, mode, shared=False):
        super().set_interactive_mode(mode, shared)
        self._interactive = bool(mode)

    def in_interactive_mode(self) -> bool:
        """True in a person's chat: ``parlai interactive`` / ``interactive_web`` (ParlAI's
        ``set_interactive_mode``) or an agent created with ``interactive_mode: True``.
        """
        return bool(
            getattr(self, '_interactive', False) or self.opt.get('interactive_mode')
        )

    def batchify(self, obs_batch, sort=False):
        """ParlAI's batch + ``gold_new_items`` and ``gold_label_items`` (one list per valid
        example, None when unknown), ``context_items`` (catalog indices named in the dialogue
        before the reply), ``context_texts`` and ``conversation_ids``."""
        batch = super().batchify(obs_batch, sort=sort)
        valid = batch.valid_indices if batch.valid_indices is not None else []
        batch['gold_new_items'] = [self._gold_new_items(obs_batch[i]) for i in valid]
        batch['gold_label_items'] = [
            self._gold_label_items(obs_batch[i]) for i in valid
        ]
        batch['context_items'] = context_items_of(
            batch, self.catalog, [obs_batch[i] for i in valid]
        )
        batch['context_texts'] = [
            obs_batch[i].get('full_text') or obs_batch[i].get('text') or ''
            for i in valid
        ]
        batch['conversation_ids'] = [obs_batch[i].get('conversation_id') for i in valid]
        return batch

    # ------------------------------------------------------------------ item-aware decoding
    def item_decoding_spec(self, batch) -> ItemDecodingSpec:
        """The item-aware decoding settings for one batch (see item_search.py)."""
        return ItemDecodingSpec(
            items=self.item_vocab,
            mode=self.opt.get('item_decoding') or 'token',
            no_repeat=self.opt.get('item_no_repeat') or 'none',
            rec_id=self.rec_token_id,
            gen_id=self.gen_token_id,
            rec_threshold=self.opt.get('rec_flag_threshold'),
            flag_gate=bool(self.opt.get('rec_flag_gates_items')),
            context_items=batch.get('context_items') or [],
            item_scores=self._filler_scores(batch),
        )

    def _filler_scores(self, batch) -> Optional[torch.Tensor]:
        """``[B, N]`` item log-probabilities of the ``--fill-items-from`` recommender, or None."""
        if self.item_filler is None or batch.get('context_items') is None:
            return None
        # computed once per batch, kept on it: decoding, ReR@k and the log read it
        if batch.get('filler_log_probs') is None:
            batch['filler_log_probs'] = self.item_filler.item_log_probs(
                batch.context_items, batch.get('context_texts'), exclude_context=False
            ).to(self.item_token_ids.device)
        return batch['filler_log_probs']

    def rec_teacher_log_probs(self, batch) -> Optional[torch.Tensor]:
        """``[B, N]`` item log-probabilities of the recommender this agent has loaded for the
        batch's contexts (the ``--fill-items-from`` one), or None; never loads one."""
        return self._filler_scores(batch)

    def _generate(self, batch, beam_size, max_ts, prefix_tokens=None):
        self._item_spec = self.item_decoding_spec(batch)
        try:
            return super()._generate(
                batch, beam_size, max_ts, prefix_tokens=prefix_tokens
            )
        finally:
            self._item_spec = None

    def _treesearch_factory(self, device, verbose=False):
        search = super()._treesearch_factory(device, verbose=verbose)
        spec = getattr(self, '_item_spec', None)
        return item_aware(search, spec) if spec is not None else search

    # ------------------------------------------------------------------ distillation hook
    @torch.no_grad()
    def teacher_forced_scores(
        self, batch, only: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Per-step logits ``[B, T, V]`` for ``batch.label_vec`` (flag token first), teacher-forced,
        in eval mode (no dropout) and without gradients: ``scores[b, t]`` predicts ``label_vec[b, t]``.

        With ``only`` (bool ``[B, T]``, e.g. the non-padding steps) the logits of those steps alone,
        packed ``[n, V]`` in row-major order; on the transformer backbone the output layer, the
        largest single cost of a small model's forward, then runs on those steps only.
        """
        if batch.label_vec is None:
            raise ValueError('teacher_forced_scores needs a batch with labels')
        model = self._unwrapped_model()
        was_training = model.training
        model.eval()
        try:
            if only is not None and not self.is_hf:
                return self._transformer_scores_at(model, batch, only)
            scores, *_ = model(*self._model_input(batch), ys=batch.label_vec)
        finally:
            model.train(was_training)
        return scores if only is None else scores[only]

    def _transformer_scores_at(self, model, batch, only):
        """ParlAI's ``decode_forced``, built from the same model hooks, with the output layer
        applied at the ``only`` steps."""
        labels = batch.label_vec
        encoder_states = model.encoder(*self._model_input(batch))
        inputs = model._get_initial_forced_decoder_input(
            labels.size(0), labels.narrow(1, 0, labels.size(1) - 1)
        )
        latent, _ = model.decoder(inputs, encoder_states)
        return model.output(latent[only].unsqueeze(0)).squeeze(0)

    @torch.no_grad()
    def teacher_forced_log_probs(self, batch) -> TeacherForcedOutput:
        """Per-step log p(y_t | y_<t, context) over the full vocabulary (:meth:`teacher_forced_scores`
        normalised); ``item_mass[b, t] = sum_i exp(log_probs[b, t, item_token_ids[i]])``.
        """
        log_probs = F.log_softmax(self.teacher_forced_scores(batch).float(), dim=-1)
        return TeacherForcedOutput(
            log_probs=log_probs,
            item_mass=item_mass(log_probs, self.item_token_ids),
            mask=batch.label_vec.ne(self.NULL_IDX),
        )

    # ------------------------------------------------------------------ teacher-forced item recall
    def compute_loss(self, batch, return_output=False):
        """ParlAI's NLL; in evaluation also ``tf_rer@k`` from the same teacher-forced scores."""
        loss, model_output = super().compute_loss(batch, return_output=True)
        if (
            not self._unwrapped_model().training
            and batch.get('gold_new_items') is not None
        ):
            self.record_teacher_forced_item_recall(batch, model_output[0])
        return (loss, model_output) if return_output else loss

    @torch.no_grad()
    def record_teacher_forced_item_recall(self, batch, scores):
        """``tf_rer@k``: ReR@k at the gold reply's first item slot, teacher-forced on the gold prefix.

        It isolates *which* items the model ranks when it is about to name one from *whether*
        it generates an item at all (free-running ReR@k is 0 for a model that never does);
        no extra forward pass: the scores are the ones the NLL was computed from.
        """
        labels = batch.label_vec
        is_item = torch.isin(labels, self.item_token_ids)
        has_slot = is_item.any(dim=1)
        first = is_item.float().argmax(dim=1)
        rows = torch.arange(labels.size(0), device=labels.device)
        slot_scores = scores[rows, first].float().index_select(-1, self.item_token_ids)
        gold = [g or [] for g in batch.gold_new_items]
        recall = response_recall_at_k(slot_scores, has_slot.tolist(), gold, ks=RER_KS)
        for k in RER_KS:
            # replies whose gold text names no new item at a slot carry no signal here
            self.record_local_metric(
                f'tf_rer@{k}',
                [
                    None if v is None or not has_slot[b] else AverageMetric(v)
                    for b, v in enumerate(recall[k])
                ],
            )

    # ------------------------------------------------------------------ response metrics
    def _add_generation_metrics(self, batch, preds):
        super()._add_generation_metrics(batch, preds)
        self.record_response_metrics(batch, preds)

    def _response_ids(self, pred) -> List[int]:
        """Generated ids of the reply: no start/flag tokens, stop at the end token."""
        out = []
        for token in pred.tolist():
            if token == self.END_IDX:
                break
            if (
                token == self.START_IDX
                or token in self._flag_ids
                or token == self.NULL_IDX
            ):
                continue
            out.append(token)
        return out

    def _gold_new_items(self, obs) -> Optional[List[int]]:
        """``new_items`` from the task, else label items not mentioned in the history."""
        if obs.get('new_items') is not None:
            return list(obs['new_items'])
        labels = obs.get('labels', obs.get('eval_labels'))
        if not labels:
            return None
        seen = set(
            self.catalog.items_in_text(obs.get('full_text', obs.get('text', '')))
        )
        return [i for i in self.catalog.items_in_text(labels[0]) if i not in seen]

    def _gold_label_items(self, obs) -> Optional[List[int]]:
        """``label_items`` from the task (every item of the gold reply, mentioned before or not),
        else the items named in the label."""
        if obs.get('label_items') is not None:
            return list(obs['label_items'])
        labels = obs.get('labels', obs.get('eval_labels'))
        if not labels:
            return None
        return self.catalog.items_in_text(labels[0])

    def _reply_targets(self, preds) -> List[torch.Tensor]:
        """Each prediction without its start token (step 0: the [REC]/[GEN] flag, if generated)."""
        return [p[1:] if len(p) and int(p[0]) == self.START_IDX else p for p in preds]

    @torch.no_grad()
    def _reply_item_scores(self, batch, preds, item_mass=True) -> ReplyItemScores:
        """The item-token logits at every step of each generated reply: one teacher-forced pass
        over the generated tokens (row t: the distribution from which token t was chosen), with the
        item mass per step; the pipeline: the recommender's log-probs at every step, no pass.
        """
        targets = self._reply_targets(preds)
        filler = self._filler_scores(batch)
        if (
            filler is not None
        ):  # the pipeline: the recommender's ranking filled the slots
            return ReplyItemScores(
                [
                    filler[b].float().expand(max(len(t), 1), -1)
                    for b, t in enumerate(targets)
                ]
            )
        model = self._unwrapped_model()
        ys, _ = self._pad_tensor(
            [t.tolist() or [self.END_IDX] for t in targets], is_label=True
        )
        ys = ys.to(self.item_token_ids.device)
        encoder_states = model.encoder(*self._encoder_input(batch))
        logits, _ = model.decode_forced(encoder_states, ys)
        items = logits.index_select(-1, self.item_token_ids).float()
        mass = None
        if item_mass:
            mass = (items.logsumexp(-1) - logits.float().logsumexp(-1)).exp()
        rows, masses = [], []
        for b, target in enumerate(targets):
            length = max(len(target), 1)
            offset = ys.size(1) - length if self.is_hf else 0  # left padding
            rows.append(items[b, offset : offset + length])
            if mass is not None:
                masses.append(mass[b, offset : offset + length])
        return ReplyItemScores(rows, masses if mass is not None else None)

    def _slot_item_scores(
        self, batch, preds, slots, reply_scores: Optional[ReplyItemScores] = None
    ) -> torch.Tensor:
        """Item-token logits at each response's first item slot, ``[B, N]`` (zeros without slot).

        From :meth:`_reply_item_scores` (given, or computed): the distribution from which the model
        chose its first item, over all N items (the pipeline: the recommender's log-probs).
        """
        if reply_scores is None:
            reply_scores = self._reply_item_scores(batch, preds, item_mass=False)
        out = torch.zeros(
            len(preds), len(self.item_token_ids), device=self.item_token_ids.device
        )
        for b, slot in enumerate(slots):
            if slot is not None:
                out[b] = reply_scores.item_logits[b][slot]
        return out

    def eval_step(self, batch):
        """ParlAI's, with the per-example log fields (``world_log.py``) in each reply."""
        output = super().eval_step(batch)
        logs = batch.get('reply_logs')
        if output is not None and logs:
            for key, values in logs.items():
                output[key] = values
        return output

    @torch.no_grad()
    def record_response_metrics(self, batch, preds):
        """ReR@k under both protocols, item precision/recall/F1, item ratio, Dist-n (both
        conventions) for generated replies, and ``rec_flag_acc`` (the generated [REC]/[GEN] flag
        equals the gold one).

        ``rer@k`` ranks the gold *new* items (not mentioned before), ``rer_all@k`` *all* items of
        the gold reply (repeats of earlier mentions included), both at the reply's first item
        slot; ``rer_responses`` / ``rer_all_responses`` count the responses each averages over.
        Definitions: parlai_conkd/metrics.py and projects/conkd/README.md.
        """
        responses = [self._response_ids(p) for p in preds]
        gen_items = [generated_items(r, self.item_index_of_token) for r in responses]
        gold_new = batch.get('gold_new_items') or [None] * len(preds)
        gold_all = batch.get('gold_label_items') or [None] * len(preds)
        # slot positions are taken in the raw prediction (after the start token, flag included)
        targets = self._reply_targets(preds)
        slots = [first_item_slot(t.tolist(), self.item_index_of_token) for t in targets]
        has_slot = [s is not None for s in slots]
        # the per-example log (not in a person's chat) reads the same teacher-forced pass
        reply_scores = (
            None
            if self.in_interactive_mode()
            else self._reply_item_scores(batch, preds, item_mass=not all(has_slot))
        )
        if reply_scores is not None:
            batch['reply_logs'] = reply_logs(
                self.catalog,
                reply_scores,
                [t.tolist() for t in targets],
                slots,
                self.item_index_of_token,
                self.END_IDX,
                self._flag_ids,
                batch.get('context_items') or [[] for _ in preds],
                gold_new,
                self.rec_teacher_log_probs(batch),
            )
        if any(has_slot[b] and (gold_new[b] or gold_all[b]) for b in range(len(preds))):
            scores = self._slot_item_scores(batch, preds, slots, reply_scores)
        else:
            scores = torch.zeros(len(preds), len(self.item_token_ids))
        for name, gold in (('rer', gold_new), ('rer_all', gold_all)):
            gold = [g or [] for g in gold]
            recall = response_recall_at_k(scores, has_slot, gold, ks=RER_KS)
            for k in RER_KS:
                self.record_local_metric(
                    f'{name}@{k}', [_average(v) for v in recall[k]]
                )
            self.record_local_metric(
                f'{name}_responses', [SumMetric(int(bool(g))) for g in gold]
            )
        overlaps = [
            item_overlap(gen, gold or []) for gen, gold in zip(gen_items, gold_new)
        ]
        for name in ('precision', 'recall', 'f1'):
            self.record_local_metric(
                f'item_{name}', [_average(o[name]) for o in overlaps]
            )
        self.record_local_metric(
            'item_ratio', [AverageMetric(bool(g)) for g in gen_items]
        )
        if batch.label_vec is not None:
            gold_flags = [
                row[row.ne(self.NULL_IDX)][:1].tolist() for row in batch.label_vec
            ]
            self.record_local_metric(
                'rec_flag_acc',
                [
                    AverageMetric(t[:1].tolist() == g)
                    for t, g in zip(targets, gold_flags)
                ],
            )
        tokens = [distinct_tokens(self.dict.vec2txt(r)) if r else [] for r in responses]
        for n in DIST_NS:
            self.record_local_metric(
                f'dist-{n}',
                [
                    DistinctNgramMetric.of_response(t, n, per_response=False)
                    for t in tokens
                ],
            )
            self.record_local_metric(
                f'dist_crs-{n}',
                [
                    DistinctNgramMetric.of_response(t, n, per_response=True)
                    for t in tokens
                ],
            )
