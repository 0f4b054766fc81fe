"""ParlAI tree search with item-aware decoding (the math: :mod:`parlai_conkd.decoding`).

Every ParlAI search (greedy, beam, top-k, nucleus, delayed beam) gets the same three changes by
one mixin in front of its class, so the agent keeps ParlAI's own ``_treesearch_factory`` and all
its options:

* ``select_paths`` searches the collapsed distribution (``--item-decoding class``) or the plain one
  with excluded items removed (``token``); a sampler that drew the item class then draws the item
  within the class with its own top-k / nucleus truncation;
* at the first step, ``--rec-flag-threshold`` decides [REC]/[GEN] on P(REC) / (P(REC) + P(GEN));
* item tokens are exempt from ``--beam-block-ngram`` / ``--beam-context-block-ngram``: whether an
  item may be named again is the job of ``--item-no-repeat`` (n-gram blocking would also block a
  new film after a repeated word pair such as "you like", and an item repeated from the context
  is a deliberate policy, not an n-gram accident).

ParlAI runs one search per example and advances them one by one, so the item/word decision
(exclusions, class mass, best allowed item, the masked distribution: about 15 small tensor
operations) made inside ``select_paths`` was paid per example and per step. Inside the agent's
``_generate`` it is taken once per step for every hypothesis of every example instead
(:class:`BatchedItemDecision`, issue #26): ParlAI's score hook ``_generation_activation`` (the
log-softmax, called once per step before the searches advance) rewrites the item columns of the
whole ``[B, beam, V]`` score tensor, and ``select_paths`` then only does what depends on its own
draw (the flag at the first step, the item within a sampled class, the pipeline's filler in token
mode). The per-example path stays for searches used alone and for steps the batch cannot decide
(forced prefix tokens, a ``--beam-block-list``); both give the same tokens.
"""

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn.functional as F
from parlai.core.torch_generator_agent import (
    DelayedBeamSearch,
    DelayedNucleusBeamSearch,
    NucleusSampling,
    TopKSampling,
    TreeSearch,
)

from parlai_conkd.decoding import (
    ITEM_DECODING,
    ITEM_NO_REPEAT,
    best_allowed,
    context_item_index,
    exclude_,
    excluded_index,
    excluded_items,
    excluded_mask,
    flag_choice,
    item_class_log_probs,
    sample_item,
    sample_within,
)
from parlai_conkd.item_vocab import ItemVocab


@dataclass
class ItemDecodingSpec:
    """What the searches of one batch need to know (built by the agent per ``_generate``)."""

    items: ItemVocab
    #: 'token' or 'class'
    mode: str
    #: 'none', 'reply' or 'dialogue' (see ``parlai_conkd.decoding.ITEM_NO_REPEAT``)
    no_repeat: str
    rec_id: int
    gen_id: int
    #: P(REC)/(P(REC)+P(GEN)) above which the reply starts with [REC]; None: the model's argmax
    rec_threshold: Optional[float] = None
    #: class mode: a reply that started with [GEN] names no item
    flag_gate: bool = False
    #: catalog indices named in the dialogue before the reply, one list per batch row
    context_items: Sequence[Sequence[int]] = field(default_factory=list)
    #: ``[B, N]`` scores choosing which item fills an item slot, one row per batch row (the
    #: pipeline baseline's recommender); None: the generator's own item probabilities
    item_scores: Optional[torch.Tensor] = None

    @property
    def active(self) -> bool:
        return (
            self.mode == 'class'
            or self.no_repeat != 'none'
            or self.rec_threshold is not None
            or self.item_scores is not None
        )


class ItemAwareSearch:
    """Mixin placed before a ParlAI ``TreeSearch`` subclass (see :func:`item_aware`)."""

    spec: ItemDecodingSpec
    row: int = 0

    def set_batch_context(self, batch_context_list, batch_idx, gpu_beam_blocking):
        self.row = batch_idx
        return super().set_batch_context(
            batch_context_list, batch_idx, gpu_beam_blocking
        )

    def _block_ngrams(self, ngram_size, logprobs, step=0, if_context_blocking=False):
        saved = self.spec.items.take(logprobs).clone()
        logprobs = super()._block_ngrams(
            ngram_size, logprobs, step, if_context_blocking
        )
        self.spec.items.put(logprobs, saved)
        return logprobs

    def _sampling(
        self, current_length: int
    ) -> Optional[Tuple[Optional[int], Optional[float]]]:
        """(top_k, top_p) when this step samples, else None."""
        if (
            isinstance(self, (DelayedBeamSearch, DelayedNucleusBeamSearch))
            and current_length >= self.delay
        ):
            return None
        if isinstance(self, (TopKSampling, DelayedBeamSearch)):
            return self.k, None
        if isinstance(self, (NucleusSampling, DelayedNucleusBeamSearch)):
            return None, self.p
        return None

    def select_paths(self, logprobs, prior_scores, current_length):
        batch = getattr(self, 'batch_decision', None)
        if batch is None or not batch.decided(current_length):
            return self._select_paths_per_example(
                logprobs, prior_scores, current_length
            )
        # the item columns were decided for the whole batch (BatchedItemDecision.apply)
        spec = self.spec
        if current_length == 0 and spec.rec_threshold is not None:
            # keeps only [REC]/[GEN]: applied after the item columns changes nothing there
            logprobs = flag_choice(
                logprobs, spec.rec_id, spec.gen_id, spec.rec_threshold
            )
        selection = super().select_paths(logprobs, prior_scores, current_length)
        rows = batch.rows(self.row)
        excluded = None if batch.excluded is None else batch.excluded[rows]
        if spec.mode == 'token':
            if batch.ranking is not None:
                self._fill_from_ranking(selection, batch.ranking[rows], excluded)
            return selection
        if batch.item_log_probs is not None:
            self._sample_item_within(
                selection, batch.item_log_probs[rows], excluded, current_length
            )
        return selection

    def _sample_item_within(self, selection, item_log_probs, excluded, current_length):
        """A sampler that drew the item class draws the item within it (batched path)."""
        sampling = self._sampling(current_length)
        if sampling is None:
            return
        chose_item = self.spec.items.index_of(selection.token_ids) >= 0
        if bool(chose_item.any()):
            rows = selection.hypothesis_ids[chose_item]
            token_ids = selection.token_ids.clone()
            token_ids[chose_item] = sample_item(
                item_log_probs[rows],
                self.spec.items,
                None if excluded is None else excluded[rows],
                *sampling,
            )
            selection.token_ids = token_ids

    def _select_paths_per_example(self, logprobs, prior_scores, current_length):
        """The whole item/word decision for this example alone (a search used outside a batch)."""
        spec = self.spec
        if current_length == 0 and spec.rec_threshold is not None:
            logprobs = flag_choice(
                logprobs, spec.rec_id, spec.gen_id, spec.rec_threshold
            )
        hyps = self.partial_hyps.to(logprobs.device)
        context = (
            spec.context_items[self.row] if self.row < len(spec.context_items) else ()
        )
        excluded = excluded_items(spec.items, hyps, context, spec.no_repeat)
        ranking = None
        if spec.item_scores is not None:
            ranking = (
                spec.item_scores[self.row]
                .to(logprobs)
                .unsqueeze(0)
                .expand(hyps.size(0), -1)
            )
        if spec.mode == 'token':
            if excluded is not None:
                logprobs = logprobs.clone()
                spec.items.put(
                    logprobs,
                    spec.items.take(logprobs).masked_fill(excluded, float('-inf')),
                )
            selection = super().select_paths(logprobs, prior_scores, current_length)
            if ranking is not None:
                self._fill_from_ranking(selection, ranking, excluded)
            return selection
        allow = None
        if spec.flag_gate and hyps.size(1) > 1:
            allow = hyps[:, 1] != spec.gen_id  # hyps[:, 0] is the start token
        selection = super().select_paths(
            item_class_log_probs(logprobs, spec.items, excluded, allow, ranking),
            prior_scores,
            current_length,
        )
        sampling = self._sampling(current_length)
        if sampling is not None and ranking is None:
            chose_item = spec.items.index_of(selection.token_ids) >= 0
            if bool(chose_item.any()):
                rows = selection.hypothesis_ids[chose_item]
                token_ids = selection.token_ids.clone()
                token_ids[chose_item] = sample_within(
                    logprobs, spec.items, rows, excluded, *sampling
                )
                selection.token_ids = token_ids
        return selection

    def _fill_from_ranking(self, selection, ranking, excluded) -> None:
        """Token mode with an external ranking: an item the search chose is replaced by the
        ranking's best allowed item for that hypothesis."""
        chose_item = self.spec.items.index_of(selection.token_ids) >= 0
        if not bool(chose_item.any()):
            return
        rows = selection.hypothesis_ids[chose_item]
        best, usable = best_allowed(
            ranking[rows], None if excluded is None else excluded[rows]
        )
        token_ids = selection.token_ids.clone()
        token_ids[chose_item] = torch.where(
            usable,
            self.spec.items.ids.to(token_ids.device)[best],
            token_ids[chose_item],
        )
        selection.token_ids = token_ids


class BatchedItemDecision:
    """The item/word decision of one ``_generate`` call, taken once per step for all ``B x beam``
    hypotheses (issue #26, item 2): the same operations as the per-example path of
    :class:`ItemAwareSearch`, on every row at once, so they cost a handful of tensor operations
    per step instead of a handful per example per step.

    ParlAI's ``_generate`` calls ``apply`` (through the agent's ``_generation_activation``) with the
    step's ``[B, beam, V]`` log-probabilities before it advances the searches; ``apply`` writes the
    decided item columns into them in place, and keeps what the searches' ``select_paths`` still
    need per example: ``excluded`` ``[B * beam, N]`` items, the filler's ``ranking``, the
    original item log-probabilities for a draw within the class. Searches read their rows with
    :meth:`rows`. Steps it does not decide (``skip_steps``: forced prefix tokens, which ParlAI
    applies after the hook) leave every decision to the per-example path.
    """

    def __init__(self, spec: ItemDecodingSpec, beam_size: int, skip_steps: int = 0):
        self.spec = spec
        self.beam_size = beam_size
        self.skip_steps = skip_steps
        #: the searches of the batch, in batch order (ParlAI makes one per row)
        self.searches: List[TreeSearch] = []
        #: the step ``apply`` last ran for, and whether it decided that step
        self.step = -1
        self._decided = False
        self.excluded: Optional[torch.Tensor] = None
        self.ranking: Optional[torch.Tensor] = None
        self.item_log_probs: Optional[torch.Tensor] = None
        self._context: Optional[torch.Tensor] = None

    def decided(self, step: int) -> bool:
        return self._decided and step == self.step

    def rows(self, row: int) -> slice:
        """The hypotheses of batch row ``row`` in the ``[B * beam, ...]`` tensors."""
        return slice(row * self.beam_size, (row + 1) * self.beam_size)

    def _hypotheses(self, device) -> torch.Tensor:
        """``[B * beam, t]`` every search's ``partial_hyps``. A finished search is not advanced
        any more and may be shorter: its rows are padded (nothing reads them)."""
        hyps = [search.partial_hyps for search in self.searches]
        length = max(h.size(1) for h in hyps)
        hyps = [
            h if h.size(1) == length else F.pad(h, (0, length - h.size(1)))
            for h in hyps
        ]
        return torch.cat(hyps).to(device)

    def apply(self, scores: torch.Tensor) -> torch.Tensor:
        """Decide the step's item columns of ``scores`` (``[B, beam, V]`` log-probabilities, changed
        in place and returned)."""
        self.step += 1
        spec = self.spec
        bsz = scores.size(0)
        self._decided = False
        self.item_log_probs = None
        if self.step < self.skip_steps or len(self.searches) != bsz:
            return scores
        flat = scores.view(bsz * self.beam_size, -1)
        items = spec.items
        hyps = index = None
        if spec.no_repeat != 'none' or (spec.mode == 'class' and spec.flag_gate):
            hyps = self._hypotheses(flat.device)
        if spec.no_repeat != 'none':
            if spec.no_repeat == 'dialogue' and self._context is None:
                self._context = context_item_index(
                    spec.context_items, bsz, self.beam_size, flat.device
                )
            # the sparse form: a few listed items per row instead of an [R, N] mask
            index = excluded_index(
                items, hyps, self._context if spec.no_repeat == 'dialogue' else None
            )
        if spec.item_scores is not None and self.ranking is None:
            self.ranking = (
                spec.item_scores.to(flat)
                .repeat_interleave(self.beam_size, dim=0)
                .contiguous()
            )
        sampling = (
            spec.mode == 'class'
            and self.ranking is None
            and bool(self.searches)
            and self.searches[0]._sampling(self.step) is not None
        )
        # the dense mask where it is read: per example (the filler, a draw within the class)
        # and for an item layout without a contiguous block
        dense = index is not None and (
            self.ranking is not None or sampling or items.block is None
        )
        self.excluded = excluded_mask(index, len(items)) if dense else None
        if spec.mode == 'token':
            if index is not None:
                if items.block is not None:  # a view: excluded in place
                    exclude_(items.take(flat), index)
                else:
                    items.put(
                        flat,
                        items.take(flat).masked_fill(self.excluded, float('-inf')),
                    )
        else:
            if sampling:
                # a sampler that draws the class then draws within it from these
                self.item_log_probs = items.take(flat).clone()
            allow = None
            if spec.flag_gate and hyps.size(1) > 1:
                allow = hyps[:, 1] != spec.gen_id  # hyps[:, 0] is the start token
            sparse = items.block is not None and self.ranking is None
            item_class_log_probs(
                flat,
                items,
                None if sparse else self.excluded,
                allow,
                self.ranking,
                inplace=True,
                excluded_index=index if sparse else None,
            )
        self._decided = True
        return scores


_CLASSES: Dict[Type[TreeSearch], Type[TreeSearch]] = {}


def item_aware(
    search: TreeSearch,
    spec: ItemDecodingSpec,
    batch: Optional[BatchedItemDecision] = None,
) -> TreeSearch:
    """Give a search made by ParlAI's ``_treesearch_factory`` the item-aware behaviour.

    The instance's class is swapped for a subclass ``ItemAware<Search>`` (made once per search
    class) instead of constructing a new object, so every argument the factory passed (beam size,
    blocking, length penalty, min length, ...) is kept without repeating the factory here.
    ``batch``: the batch's decision the search joins (the next row), or None (per example).
    """
    if not spec.active:
        return search
    base = type(search)
    if base not in _CLASSES:
        _CLASSES[base] = type(f'ItemAware{base.__name__}', (ItemAwareSearch, base), {})
    search.__class__ = _CLASSES[base]
    search.spec = spec
    search.batch_decision = batch
    if batch is not None:
        search.row = len(batch.searches)
        batch.searches.append(search)
    return search


def context_items_of(batch, catalog, valid_obs: List[dict]) -> List[List[int]]:
    """Per batch row, the catalog indices named in the dialogue so far: the task's
    ``context_items`` when present, else the item tokens in the full history text."""
    out = []
    for obs in valid_obs:
        items = obs.get('context_items')
        if items is None:
            items = catalog.items_in_text(obs.get('full_text') or obs.get('text') or '')
        out.append([int(i) for i in items])
    return out


def greedy_beam_size(opt) -> None:
    """Make ``--inference greedy`` usable on a model saved with a beam (issue #22).

    ParlAI's greedy search refuses any beam size but 1, and a model file keeps the beam size it was
    saved with (the zoo's generators: 5, for delayed beam), so ``--inference greedy`` alone on such
    a model ended in "Greedy search can only be run with beam size 1". Greedy follows one
    hypothesis by definition: when the command asks for greedy and does not set ``--beam-size``,
    the saved beam size gives way to 1. Asking for both is refused, naming the two options.

    ``opt``: the agent's options as ParlAI loaded them, ``opt['override']`` holding what this
    command set; changed in place. Raises OptionError (a ValueError) for ``--inference greedy`` with an explicit
    ``--beam-size`` other than 1.
    """
    beam_size = opt.get('beam_size', 1)
    if opt.get('inference') != 'greedy' or beam_size in (None, 1):
        return
    if 'beam_size' in (opt.get('override') or {}):
        from parlai_conkd.errors import OptionError

        raise OptionError(
            f'--inference greedy follows one hypothesis, but --beam-size {beam_size} was given: '
            'drop --beam-size (or set it to 1), or use --inference beam / delayedbeam'
        )
    from parlai.utils import logging

    logging.info(
        f'--inference greedy: beam size 1 (the model was saved with --beam-size {beam_size})'
    )
    opt['beam_size'] = 1


#: ``-m`` names accepted by --fill-items-from
ITEM_RANKERS = {'conkd_rec_teacher', 'conkd_popularity', 'conkd_repeat'}


class ItemAwareDecodingMixin:
    """The generators' decoding options and ParlAI hooks: item-aware search over every ParlAI
    search (:func:`item_aware`) and the pipeline baseline's recommender (``--fill-items-from``).

    Needs from the agent: ``catalog``, ``item_vocab``, ``item_token_ids``, ``rec_token_id`` /
    ``gen_token_id``; the agent sets ``item_filler`` (:meth:`_load_item_filler`) once its catalog is
    known.
    """

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
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
            'projects/conkd/flag_threshold.py and saved with the model.',
        )
        group.add_argument(
            '--rec-flag-gates-items',
            type='bool',
            default=False,
            help='--item-decoding class: a reply that starts with [GEN] names no item.',
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
        return parser

    def share(self):
        shared = super().share()
        shared['item_filler'] = self.item_filler
        return shared

    def _load_item_filler(self):
        """The ``--fill-items-from`` recommender (frozen), or None."""
        if not self.opt.get('fill_items_from'):
            return None
        from parlai_conkd.agents.frozen import load_frozen_teacher
        from parlai_conkd.agents.item_ranking import ItemRankingAgent

        agent, _ = load_frozen_teacher(
            self.opt, '--fill-items-from', ItemRankingAgent, ITEM_RANKERS, self.catalog
        )
        return agent

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

    #: private switch: False makes every search decide its items alone, per example (the path
    #: before issue #26; kept for the equivalence tests and the benchmark's side-by-side run)
    _batched_item_decoding = True

    def _generate(self, batch, beam_size, max_ts, prefix_tokens=None):
        spec = self.item_decoding_spec(batch)
        self._item_spec = spec
        self._item_batch = None
        if (
            spec.active
            and self._batched_item_decoding
            # a block list is applied after the hook, before select_paths: per example
            and not getattr(self, 'beam_block_list', None)
        ):
            self._item_batch = BatchedItemDecision(
                spec,
                beam_size,
                skip_steps=0 if prefix_tokens is None else prefix_tokens.size(1),
            )
        try:
            return super()._generate(
                batch, beam_size, max_ts, prefix_tokens=prefix_tokens
            )
        finally:
            self._item_spec = None
            self._item_batch = None

    def _treesearch_factory(self, device, verbose=False):
        search = super()._treesearch_factory(device, verbose=verbose)
        spec = getattr(self, '_item_spec', None)
        if spec is None:
            return search
        return item_aware(search, spec, getattr(self, '_item_batch', None))

    def _generation_activation(self, score):
        """ParlAI's per-step score hook in ``_generate`` (after the output layer, before the
        searches advance): the batch's item/word decision, once for all hypotheses."""
        score = super()._generation_activation(score)
        batch = getattr(self, '_item_batch', None)
        return score if batch is None else batch.apply(score)
