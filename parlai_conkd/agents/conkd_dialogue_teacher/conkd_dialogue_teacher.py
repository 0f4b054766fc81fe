"""``-m conkd_dialogue_teacher``: a generator over words + item tokens (ConKD's dialogue teacher).

Trained with NLL alone it is also the paper's "no distillation" baseline. The student
(``conkd_student``) subclasses this agent; the hooks it relies on are:

* ``item_token_ids``: ``LongTensor[N]``, the vocabulary id of catalog item i at position i, on the
  model's device; ``item_index_of_token``: the inverse map (vocab id -> catalog index);
  ``rec_token_id`` / ``gen_token_id``: the [REC]/[GEN] flag ids.
* ``teacher_forced_scores(batch)`` / ``teacher_forced_log_probs(batch)``: no-grad, eval-mode
  per-step logits / log-probabilities over the full vocabulary (the latter with the per-step item
  mass, the ConKD gate), aligned with ``batch.label_vec``.
* ``compute_loss(batch, return_output=True)`` is ParlAI's at the real label steps only
  (:mod:`.real_steps`, issue #26): ``model_output[0]`` are the logits of the non-padding steps of
  ``batch.label_vec`` (flag token first), packed ``[n, V]`` in row-major order. A subclass adds a
  loss term by calling ``super().compute_loss(batch, return_output=True)`` and adding to the
  returned loss.
* ``record_response_metrics(batch, preds)``: ReR@k (new and all items), item precision/recall/F1,
  item ratio, Dist-n; called from ``_add_generation_metrics`` for every generator of this project.
  Outside interactive mode it also puts the per-example log (``world_log.py``) in the replies.
* ``rec_teacher_log_probs(batch)``: ``[B, N]`` item log-probabilities of the recommender at hand
  (here the ``--fill-items-from`` one; the student: its loaded rec teacher), or None.

Backbones (``--backbone``): ``transformer`` = ParlAI's TransformerGeneratorModel from scratch over
a word dictionary; ``hf`` = any Hugging Face causal LM (``AutoModelForCausalLM`` + ``AutoTokenizer``
of ``--hf-model-path``: GPT-2/DialoGPT, Llama, Qwen2, Mistral, GPT-NeoX, ...), embeddings resized
for the added tokens, optionally with LoRA (``causal_lm.py``, issue #25).
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from parlai.agents.transformer.transformer import (
    TransformerGeneratorAgent,
    _check_positional_embeddings,
)
from parlai.utils.torch import padded_tensor

from parlai_conkd.distill import item_mass
from parlai_conkd.errors import ModelFileError, OptionError, remedy
from parlai_conkd.item_embeddings import freeze_rows
from parlai_conkd.item_vocab import ItemVocab
from parlai_conkd.items import GEN_TOKEN, ITEM_TOKEN_RE, REC_TOKEN, CatalogError
from parlai_conkd.model_files import check_model_file, check_model_file_given
from parlai_conkd.seeding import add_seed_args, seed_from_opt

from .causal_lm import (
    CausalLMError,
    add_causal_lm_args,
    build_causal_lm,
    is_lora,
    load_saved_state,
    saved_state,
)
from .dictionary import (
    ConkdDictionaryAgent,
    build_hf_dictionary,
    model_catalog_path,
    resolve_catalog,
)
from .hf_model import resolve_hf_model_path
from .item_embedding_init import ItemEmbeddingsMixin
from .item_search import ItemAwareDecodingMixin, context_items_of, greedy_beam_size
from .real_steps import (
    RealStepLossMixin,
    RealStepsTransformerGeneratorModel,
    at_real_steps,
    scoring_real_steps,
)
from .response_metrics import ResponseMetricsMixin

BACKBONES = ('transformer', 'hf')


@dataclass
class TeacherForcedOutput:
    """What the student distils. All aligned with ``batch.label_vec`` ([B, T])."""

    #: log-probabilities over the full vocabulary, ``[B, T, V]`` (float32)
    log_probs: torch.Tensor
    #: total probability of the item tokens per step, ``[B, T]`` (the ConKD gate lambda_t)
    item_mass: torch.Tensor
    #: True at real target tokens, False at padding, ``[B, T]``
    mask: torch.Tensor


class ConkdDialogueTeacherAgent(
    ResponseMetricsMixin,
    ItemAwareDecodingMixin,
    ItemEmbeddingsMixin,
    RealStepLossMixin,
    TransformerGeneratorAgent,
):
    """The generator itself: backbone, vocabulary with item tokens and the [REC]/[GEN] flag,
    targets, teacher-forced scores (what the student distils). By job, in sibling modules:
    response metrics and the per-example log (:class:`ResponseMetricsMixin`), item-aware decoding
    and the pipeline (:class:`ItemAwareDecodingMixin`), item embeddings from the rec teacher
    (:class:`ItemEmbeddingsMixin`), the teacher-forced loss at the real label steps
    (:class:`RealStepLossMixin`)."""

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
            'hf: any Hugging Face causal LM and its tokenizer (--hf-model-path; GPT-2/DialoGPT, '
            'Llama, Qwen2, Mistral, GPT-NeoX, ...), optionally with LoRA (--lora-r).',
        )
        group.add_argument(
            '--hf-model-path',
            type=str,
            default=None,
            help='A HF causal LM and its tokenizer (--backbone hf): a local directory, or a '
            'hub name such as microsoft/DialoGPT-small or Qwen/Qwen2.5-0.5B-Instruct (fetched once into the HF cache when online; '
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
        add_causal_lm_args(parser)
        add_seed_args(parser)
        return parser

    @staticmethod
    def dictionary_class():
        return ConkdDictionaryAgent

    def __init__(self, opt, shared=None):
        if shared is None:
            check_model_file_given(opt)  # not an untrained model under a mistyped -mf
        # before the model is built: its initialisation is seeded too
        seed_from_opt(opt, shared)
        greedy_beam_size(opt)  # before ParlAI's generator reads --beam-size
        if opt.get('backbone') == 'hf':
            # a bad value fails here, naming the option (a hub name: fetched or found in the cache)
            resolve_hf_model_path(opt.get('hf_model_path'))
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
        return shared

    def _unwrapped_model(self):
        model = self.model
        return model.module if hasattr(model, 'module') else model

    # ------------------------------------------------------------------ model
    def build_model(self, states=None):
        if self.is_hf:
            init_model, _ = self._get_init_model(self.opt, None)
            item_rows = None
            if self.opt.get('item_embeddings_from') and init_model is None:
                item_rows = self._hf_item_rows()
            model = build_causal_lm(self.opt, self.dict, item_rows)
            if self.opt.get('freeze_item_embeddings'):
                if is_lora(model):
                    raise CatalogError(
                        '--freeze-item-embeddings: with --lora-r the item rows are trained; '
                        'drop one of the two options'
                    )
                freeze_rows(
                    model.lm.get_input_embeddings().weight, self._catalog_token_ids()
                )
            return model
        # ParlAI's TransformerGeneratorAgent.build_model, with the class that can score the real
        # label steps alone (same parameters and state dict)
        _check_positional_embeddings(self.opt)
        model = RealStepsTransformerGeneratorModel(self.opt, self.dict)
        if self.opt['embedding_type'] != 'random':
            self._copy_embeddings(
                model.encoder.embeddings.weight, self.opt['embedding_type']
            )
        init_model, _ = self._get_init_model(self.opt, None)
        if self.opt.get('item_embeddings_from') and init_model is None:
            # from scratch only: saved weights win otherwise
            self._init_item_embeddings(model)
        if self.opt.get('freeze_item_embeddings'):
            freeze_rows(model.embeddings.weight, self._catalog_token_ids())
        return model

    def _pad_tensor(self, items, is_label=False):
        if self.is_hf:
            # GPT-2 reads context and label as one left-padded stream (ParlAI's Gpt2Agent rule)
            return padded_tensor(
                items, pad_idx=self.NULL_IDX, left_padded=True, fp16friendly=False
            )
        return super()._pad_tensor(items, is_label=is_label)

    def load(self, path):
        # a one-line error for a missing, empty or truncated file
        check_model_file(path)
        self._loading = path
        try:
            return super().load(path)
        finally:
            self._loading = None

    def state_dict(self):
        states = super().state_dict()
        if self.is_hf and 'model' in states and is_lora(self._unwrapped_model()):
            # LoRA: the adapters, the token rows' deltas and starting values; the frozen base
            # weights are re-read from --hf-model-path
            states['model'] = saved_state(self._unwrapped_model())
        return states

    def _check_lora_state(self, state_dict):
        """A LoRA model file holds adapters over --hf-model-path's weights, a full one the whole
        model: one cannot start the other (``--init-model`` of the other kind); say so, naming the
        option, instead of a list of missing and unexpected keys."""
        saved_lora = any('lora_' in key for key in state_dict)
        lora = is_lora(self._unwrapped_model())
        if saved_lora == lora:
            return
        path = getattr(self, '_loading', None) or 'the model file'
        if lora:
            raise CausalLMError(
                f'{path} holds a fully fine-tuned model, but --lora-r {self.opt["lora_r"]} trains '
                'LoRA adapters over the weights of --hf-model-path (the model file then holds '
                'only the adapters and the added token rows): start from a model trained with '
                '--lora-r, or train without --lora-r'
            )
        raise CausalLMError(
            f'{path} holds LoRA adapters (a model trained with --lora-r), but this model has '
            '--lora-r 0: give the --lora-r, --lora-alpha and --lora-target-modules it was '
            'trained with'
        )

    def load_state_dict(self, state_dict):
        if self.is_hf:
            self._check_lora_state(state_dict)
        try:
            if self.is_hf and is_lora(self._unwrapped_model()):
                return load_saved_state(self._unwrapped_model(), state_dict)
            return super().load_state_dict(state_dict)
        except RuntimeError as exc:
            if 'size mismatch' not in str(exc):
                raise
            shapes = self._shape_mismatches(state_dict)
            if shapes:
                # not the vocabulary: the model was built with other shape options than the
                # weights (e.g. --truncate, which sets the positions, when starting a student from
                # its teacher with --init-model)
                name, saved, here = shapes[0]
                path = getattr(self, '_loading', None) or self.opt.get('init_model')
                raise OptionError(
                    f'{path or "the model file"}: its weights do not fit the shape options of this '
                    f'run: {name} is {list(saved)} there and {list(here)} here'
                    + (f' ({len(shapes) - 1} more differ)' if len(shapes) > 1 else '')
                    + '; give the options it was trained with (its .opt: --truncate, '
                    '--n-positions, --embedding-size, --ffn-size, --n-layers, --n-heads)'
                ) from None
            # the embeddings are sized by the dictionary: a .dict cut at a line boundary, or another
            # model's, loads as a smaller or larger vocabulary than the weights were trained with
            dict_file = self.opt.get('dict_file') or ''
            model_file = self.opt.get('model_file') or ''
            raise ModelFileError(
                f'{dict_file}: the dictionary holds {len(self.dict)} tokens but the weights of '
                f'{model_file or "the model"} were trained with another number (the .dict is '
                f'damaged or belongs to another model); {remedy(model_file or dict_file)}'
            ) from None

    def _shape_mismatches(self, state_dict):
        """``[(name, saved shape, this model's shape)]`` of the weights whose shapes differ for a
        reason other than the vocabulary (tables whose rows are the dictionary, padded up to 8).
        """
        current = self._unwrapped_model().state_dict()
        vocab = len(self.dict)
        found = []
        for name, saved in state_dict.items():
            here = current.get(name)
            if here is None or tuple(saved.shape) == tuple(here.shape):
                continue
            rows_only = saved.shape[1:] == here.shape[1:]
            if rows_only and vocab <= here.shape[0] < vocab + 8:
                continue
            found.append((name, tuple(saved.shape), tuple(here.shape)))
        return found

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
        """ParlAI's batch + ``context_items`` (catalog indices named in the dialogue before the
        reply), ``context_texts`` and ``conversation_ids``, one per valid example."""
        batch = super().batchify(obs_batch, sort=sort)
        valid = batch.valid_indices if batch.valid_indices is not None else []
        batch['context_items'] = context_items_of(
            batch, self.catalog, [obs_batch[i] for i in valid]
        )
        batch['context_texts'] = [
            obs_batch[i].get('full_text') or obs_batch[i].get('text') or ''
            for i in valid
        ]
        batch['conversation_ids'] = [obs_batch[i].get('conversation_id') for i in valid]
        return batch

    # ------------------------------------------------------------------ distillation hook
    @torch.no_grad()
    def teacher_forced_scores(
        self, batch, only: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Per-step logits ``[B, T, V]`` for ``batch.label_vec`` (flag token first), teacher-forced,
        in eval mode (no dropout) and without gradients: ``scores[b, t]`` predicts ``label_vec[b, t]``.

        With ``only`` (bool ``[B, T]``, e.g. the non-padding steps) the logits of those steps alone,
        packed ``[n, V]`` in row-major order; on the transformer backbone the output layer, the
        largest single cost of a small model's forward, then runs on those steps only
        (:mod:`.real_steps`).
        """
        if batch.label_vec is None:
            raise ValueError('teacher_forced_scores needs a batch with labels')
        model = self._unwrapped_model()
        was_training = model.training
        model.eval()
        try:
            if only is None:
                scores, *_ = model(*self._model_input(batch), ys=batch.label_vec)
            else:
                with scoring_real_steps(model, only):
                    scores, *_ = model(*self._model_input(batch), ys=batch.label_vec)
                scores = at_real_steps(scores, only)
        finally:
            model.train(was_training)
        return scores

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
