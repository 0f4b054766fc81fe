"""``-m conkd_student``: the ConKD student (Jung, Jung & Chen, EMNLP 2023).

The dialogue-teacher generator (same backbones, vocabulary, [REC]/[GEN] flag, response metrics)
whose loss adds gated distillation from two frozen teachers loaded from model files:

    loss = (1 - alpha) * NLL + alpha * tau^2 * KL(q_t || p_student)       (per target token)

with the target ``q_t`` chosen by ``--gate`` (hard / soft / static / none); the math, with every
formula, is in :mod:`parlai_conkd.distill`. Teachers run in eval mode without gradients, on the
student's device, on the student's own batch. ``--teacher-cache FILE`` stores their outputs per
training example (top-k, see :mod:`parlai_conkd.teacher_cache`) so they run once per example.
"""

from typing import List

import torch
import torch.nn.functional as F
from parlai.core.build_data import modelzoo_path
from parlai.core.metrics import AverageMetric
from parlai.core.torch_agent import Batch
from parlai.utils import logging
from parlai.utils.distributed import get_rank, is_distributed

from parlai_conkd import distill
from parlai_conkd.agents.conkd_dialogue_teacher.conkd_dialogue_teacher import (
    ConkdDialogueTeacherAgent,
)
from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import (
    add_rec_temperature_arg,
)
from parlai_conkd.agents.frozen import (
    TeacherError,
    load_frozen_teacher,
    resolve_model_file,
)
from parlai_conkd.errors import OptionError
from parlai_conkd.fast_target import DistillTarget, make_target
from parlai_conkd.fileio import sha256_file
from parlai_conkd.teacher_cache import (
    CachedTargets,
    TeacherCache,
    cache_key,
    entry_from_real_steps,
    example_key,
    stack_targets,
)

from .criterion import DistillingCrossEntropy
from .interactive import InteractiveExplainMixin

DIALOGUE_TEACHER_MODELS = {'conkd_dialogue_teacher', 'conkd_student'}
REC_TEACHER_MODELS = {'conkd_rec_teacher'}
#: ParlAI pads the vocabulary to a multiple of 8 with these tokens under ``--fp16 true``
#: (``TorchAgent.__init__``), on any device
FP16_PAD_PREFIX = '__FP16_PAD_'


def fp16_padding_hint(teacher_tok2ind, student_tok2ind) -> str:
    """The fix when two vocabularies differ only by ParlAI's --fp16 padding tokens, else ''."""

    def unpadded(tok2ind):
        return {
            token: index
            for token, index in tok2ind.items()
            if not token.startswith(FP16_PAD_PREFIX)
        }

    if unpadded(teacher_tok2ind) != unpadded(student_tok2ind):
        return ''
    padded = 'student' if len(student_tok2ind) > len(teacher_tok2ind) else 'teacher'
    return (
        f'they differ only by the padding tokens ParlAI adds under --fp16 true (here to the {padded}\'s): '
        'train the dialogue teacher and the student both with --fp16 true, or both without'
    )


def rows_of_batch(batch: Batch, rows: List[int]) -> Batch:
    """The batch's ``rows`` (indices into its B examples) as a batch of their own: every tensor
    with B rows and every list of B entries is cut down to them, everything else is kept.
    """
    size = batch.batchsize if batch.get('batchsize') else batch.text_vec.size(0)
    index = torch.tensor(rows, dtype=torch.long)
    picked = {}
    for name, value in batch.items():
        if torch.is_tensor(value) and value.dim() and value.size(0) == size:
            picked[name] = value.index_select(0, index.to(value.device))
        elif isinstance(value, (list, tuple)) and len(value) == size:
            picked[name] = [value[r] for r in rows]
        else:
            picked[name] = value
    picked['batchsize'] = len(rows)
    return Batch(**picked)


class ConkdStudentAgent(InteractiveExplainMixin, ConkdDialogueTeacherAgent):
    # InteractiveExplainMixin: --show-recs / --show-gates / --link-titles in interactive mode only
    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('ConKD student (distillation)')
        group.add_argument(
            '--gate',
            type=str,
            default='soft',
            choices=distill.GATES,
            help='hard: rec teacher where the dialogue teacher\'s item mass exceeds '
            '--hard-gate-threshold, else dialogue teacher; soft: mixture weighted by '
            'that item mass; static: fixed weight --static-gate (ablation); none: NLL only',
        )
        group.add_argument(
            '--dialogue-teacher-file',
            type=str,
            default=None,
            help='ParlAI model file (or zoo: path) of a conkd_dialogue_teacher',
        )
        group.add_argument(
            '--rec-teacher-file',
            type=str,
            default=None,
            help='ParlAI model file (or zoo: path) of a conkd_rec_teacher',
        )
        group.add_argument(
            '--kd-weight',
            type=float,
            default=0.5,
            help='alpha in (1 - alpha) * NLL + alpha * KD',
        )
        group.add_argument(
            '--kd-temperature',
            type=float,
            default=1.0,
            help='tau: teacher and student distributions are softened by tau; KD scaled by tau^2',
        )
        group.add_argument(
            '--hard-gate-threshold',
            type=float,
            default=0.5,
            help='hard gate: distil from the rec teacher where lambda_t exceeds this',
        )
        group.add_argument(
            '--static-gate', type=float, default=0.5, help='lambda for --gate static'
        )
        group.add_argument(
            '--rec-exclude-context',
            type='bool',
            default=True,
            help='the rec teacher\'s distribution gives the items already named in '
            'the dialogue probability 0 (a recommendation names new films; the NLL '
            'term still teaches repeats where the gold reply has them)',
        )
        group.add_argument(
            '--rec-item-kd-weight',
            type=float,
            default=0.0,
            help='beta: adds beta * KL(rec teacher || the student\'s distribution over the items '
            'given that it names one) at every target step, apart from the gate (issue #24, '
            '"what"; beyond the paper, which has 0)',
        )
        add_rec_temperature_arg(group)
        group.add_argument(
            '--distill-in-eval',
            type='bool',
            default=True,
            help='also compute KD metrics in validation/eval_model when the teacher files exist',
        )
        group.add_argument(
            '--teacher-cache',
            type=str,
            default=None,
            help='file caching teacher outputs per training example (built on first '
            'use, reused while teachers/data/settings match; refused when stale)',
        )
        group.add_argument(
            '--teacher-cache-topk',
            type=int,
            default=64,
            help='entries of the dialogue teacher\'s distribution kept in the cache at each step '
            '(the tail is dropped and the rest renormalised)',
        )
        group.add_argument(
            '--teacher-cache-rec-topk',
            type=int,
            default=0,
            help='entries of the rec teacher\'s distribution kept in the cache; 0: all of it '
            '(exact up to float16 rounding; a flat teacher loses most of its mass to a top-k cut)',
        )
        # The student's vocabulary must be the dialogue teacher's. train_model builds a dictionary
        # before it creates the agent, so the default has to be in place at parse time.
        if (
            partial_opt
            and partial_opt.get('dialogue_teacher_file')
            and not partial_opt.get('dict_file')
        ):
            teacher = modelzoo_path(
                partial_opt.get('datapath'), partial_opt['dialogue_teacher_file']
            )
            parser.set_defaults(dict_file=teacher + '.dict')
        return parser

    def __init__(self, opt, shared=None):
        # The student's vocabulary must be the dialogue teacher's: default to its dictionary (with
        # every gate, so a `--gate none` baseline is comparable and can --init-model from it).
        if not opt.get('dict_file') and opt.get('dialogue_teacher_file'):
            opt['dict_file'] = (
                resolve_model_file(opt, '--dialogue-teacher-file') + '.dict'
            )
        super().__init__(opt, shared)
        self.teacher_cache = None
        if shared is not None:
            self.dialogue_teacher = shared['dialogue_teacher']
            self.rec_teacher = shared['rec_teacher']
            self.teacher_cache = shared['teacher_cache']
        else:
            self.dialogue_teacher = self.rec_teacher = None
            if self._wants_teachers():
                self._load_teachers()

    def _wants_teachers(self) -> bool:
        if self.opt['gate'] == 'none' or self.opt.get('interactive_mode'):
            # chat (interactive mode, whatever its datatype) loads the teachers lazily, only for
            # --show-recs / --show-gates (interactive.py)
            return False
        if self._training_run():
            return (
                True  # training must distil: missing or wrong teachers are errors here
            )
        # eval_model / display_model of a trained student: KD metrics only if the teachers are
        # already on disk (never built or downloaded for that: issue #22)
        if not self.opt.get('distill_in_eval'):
            return False
        try:
            resolve_model_file(self.opt, '--dialogue-teacher-file', fetch=False)
            resolve_model_file(self.opt, '--rec-teacher-file', fetch=False)
        except TeacherError as exc:
            logging.info(f'conkd_student: no KD metrics in evaluation ({exc})')
            return False
        return True

    def _training_run(self) -> bool:
        datatype = self.opt.get('datatype', '')
        return datatype.startswith('train') and 'evalmode' not in datatype

    def _load_teachers(self):
        from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import (
            ConkdRecTeacherAgent,
        )

        self.dialogue_teacher, dial_file = load_frozen_teacher(
            self.opt,
            '--dialogue-teacher-file',
            ConkdDialogueTeacherAgent,
            DIALOGUE_TEACHER_MODELS,
            self.catalog,
            fetch=self._training_run(),
        )
        if self.dialogue_teacher.dict.tok2ind != self.dict.tok2ind:
            raise TeacherError(
                f'--dialogue-teacher-file {dial_file}: its vocabulary ({len(self.dialogue_teacher.dict)} tokens) '
                f'differs from the student\'s ({len(self.dict)}); '
                + (
                    fp16_padding_hint(
                        self.dialogue_teacher.dict.tok2ind, self.dict.tok2ind
                    )
                    or 'train the student with the teacher\'s dictionary (the default when --dict-file is not given)'
                )
            )
        if getattr(self.dialogue_teacher, 'is_hf', False):
            from parlai_conkd.agents.conkd_dialogue_teacher.causal_lm import (
                merge_frozen,
            )

            merge_frozen(self.dialogue_teacher._unwrapped_model())
        if (
            self.use_cuda
            and self.opt.get('hf_bf16')
            and getattr(self.dialogue_teacher, 'is_hf', False)
        ):
            # frozen: no optimizer state, so the weights themselves can be half precision
            self.dialogue_teacher.model.to(torch.bfloat16)
        temperature = self.opt.get('rec_temperature')
        self.rec_teacher, rec_file = load_frozen_teacher(
            self.opt,
            '--rec-teacher-file',
            ConkdRecTeacherAgent,
            REC_TEACHER_MODELS,
            self.catalog,
            extra_overrides=(
                {'rec_temperature': temperature} if temperature is not None else None
            ),
            fetch=self._training_run(),
        )
        if self.opt.get('teacher_cache') and self.opt.get('datatype', '').startswith(
            'train'
        ):
            check_cache_sizes(self.opt)
            key = cache_key(
                dialogue_teacher=sha256_file(dial_file),
                rec_teacher=sha256_file(rec_file),
                data=self._data_version(),
                dictionary=len(self.dict),
                catalog=self.catalog.fingerprint,
                truncate=(
                    self.opt.get('text_truncate'),
                    self.opt.get('label_truncate'),
                    self.opt.get('truncate'),
                ),
                topk=self.opt['teacher_cache_topk'],
                rec_topk=self.opt.get('teacher_cache_rec_topk', 0),
                rec=(
                    self.opt.get('rec_exclude_context', True),
                    self.opt.get('rec_temperature'),
                ),
                history=(self.opt.get('history_size'), self.opt.get('delimiter')),
            )
            path = self.opt['teacher_cache']
            # each worker sees its own shard of the data: one file per rank
            if is_distributed():
                path = f'{path}.rank{get_rank()}'
            self.teacher_cache = TeacherCache.open(path, key)
            logging.info(
                f'conkd_student: teacher cache {path} ({len(self.teacher_cache)} examples)'
            )

    def _data_version(self) -> str:
        try:
            from parlai_conkd.redial.build import fold_path

            return sha256_file(fold_path(self.opt, 'train'))
        # another task: the per-example keys still pin the exact token ids
        except Exception:
            return str(self.opt.get('task'))

    def share(self):
        shared = super().share()
        shared['dialogue_teacher'] = self.dialogue_teacher
        shared['rec_teacher'] = self.rec_teacher
        shared['teacher_cache'] = self.teacher_cache
        return shared

    # ------------------------------------------------------------------ teacher targets
    @torch.no_grad()
    def live_teacher_targets(self, batch):
        """``(dial_log_probs [B,T,V], gate [B,T], rec_log_probs [B,N])`` from the teachers now."""
        dial = self.dialogue_teacher.teacher_forced_log_probs(batch)
        return (
            dial.log_probs,
            dial.item_mass,
            self._rec_log_probs(batch, dial.log_probs.device),
        )

    @torch.no_grad()
    def _live_entries(self, batch, mask, rows: List[int]) -> List[CachedTargets]:
        """Cache entries of the batch's ``rows`` from the teachers run on those rows alone, at
        their real steps only."""
        if len(rows) < mask.size(0):
            batch = rows_of_batch(batch, rows)
            mask = mask[rows]
        scores = self.dialogue_teacher.teacher_forced_scores(batch, only=mask)
        log_probs = F.log_softmax(scores.float(), dim=-1)  # [n,V], packed
        gate = distill.item_mass(log_probs, self.item_token_ids)
        rec = self._rec_log_probs(batch, log_probs.device)
        k = self.opt['teacher_cache_topk']
        k_rec = self.opt.get('teacher_cache_rec_topk', 0)
        entries, start = [], 0
        for b, steps in enumerate(mask.sum(dim=1).tolist()):
            end = start + steps
            entries.append(
                entry_from_real_steps(
                    log_probs[start:end], gate[start:end], rec[b], k, k_rec
                )
            )
            start = end
        return entries

    def _rec_log_probs(self, batch, device):
        return self.rec_teacher.item_log_probs(
            batch.context_items,
            batch.context_texts,
            exclude_context=self.opt.get('rec_exclude_context', True),
            conversation_ids=batch.get('conversation_ids'),
        ).to(device)

    def rec_teacher_log_probs(self, batch):
        """The loaded rec teacher's item log-probabilities for the batch (those its KD metrics
        computed in this evaluation step when there are), else the generator's (None: no teacher).
        """
        if self.rec_teacher is None:
            return super().rec_teacher_log_probs(batch)
        if batch.get('rec_teacher_log_probs') is None:
            batch['rec_teacher_log_probs'] = self._rec_log_probs(
                batch, self.item_token_ids.device
            )
        return batch['rec_teacher_log_probs']

    @torch.no_grad()
    def teacher_targets(self, batch, mask):
        """The teachers' outputs for the batch, ``(dial, gate, rec)``: from the cache where present
        (``distill.TopK`` slices, used as they are), live (and then cached) otherwise. Without a
        cache: the dialogue teacher's logits and no gate (the target normalises them once and
        reads the gate off the same probabilities)."""
        cache = self.teacher_cache if self.model.training else None
        # logits of the real steps only, packed (padding needs no target)
        if cache is None:
            scores = self.dialogue_teacher.teacher_forced_scores(batch, only=mask)
            rec = self._rec_log_probs(batch, scores.device)
            if not self.model.training:  # evaluation: the per-example log reuses them
                batch['rec_teacher_log_probs'] = rec
            return scores, None, rec
        keys = [
            example_key(t[t != self.NULL_IDX].tolist(), y[y != self.NULL_IDX].tolist())
            for t, y in zip(batch.text_vec, batch.label_vec)
        ]
        entries = [cache.get(k) for k in keys]
        # ParlAI samples training episodes with replacement, so for several epochs nearly every
        # batch holds a few examples not seen before: the teachers run on those rows alone
        missing = [b for b, entry in enumerate(entries) if entry is None]
        if missing:
            for b, entry in zip(missing, self._live_entries(batch, mask, missing)):
                entries[b] = entry
                cache.put(keys[b], entry)
        dial, gate, rec = stack_targets(entries, mask.cpu())
        device = self.item_token_ids.device
        return (
            distill.TopK(dial.values.to(device), dial.indices.to(device)),
            gate.to(device),
            (
                distill.TopK(rec.values.to(device), rec.indices.to(device))
                if isinstance(rec, distill.TopK)
                else rec.to(device)
            ),
        )

    def distillation_target(self, batch, mask, teachers=None) -> DistillTarget:
        """The ConKD target; ``teachers``: :meth:`teacher_targets`' output when already made."""
        dial, gate, rec = teachers or self.teacher_targets(batch, mask)
        return make_target(
            self.opt['gate'],
            dial,
            rec,
            self.item_vocab,
            mask,
            hard_threshold=self.opt['hard_gate_threshold'],
            static_gate=self.opt['static_gate'],
            temperature=self.opt['kd_temperature'],
            dial_item_mass=gate,
            # live logits: nobody else reads them
            overwrite_scores=not isinstance(dial, distill.TopK),
        )

    # ------------------------------------------------------------------ loss
    def build_criterion(self):
        return DistillingCrossEntropy(ignore_index=self.NULL_IDX)

    def compute_loss(self, batch, return_output=False):
        """ParlAI's NLL and metrics, with the KD term computed by the criterion from the same
        softmax (see criterion.py), then ``(1 - alpha) * NLL + alpha * KD``."""
        if (
            self.dialogue_teacher is None
            or self.rec_teacher is None
            or batch.label_vec is None
        ):
            return super().compute_loss(batch, return_output=return_output)
        mask = batch.label_vec.ne(self.NULL_IDX)
        teachers = self.teacher_targets(batch, mask)
        target = self.distillation_target(batch, mask, teachers)
        with self.criterion.distilling(target, self.item_vocab):
            nll, model_output = super().compute_loss(batch, return_output=True)
            kd = self.criterion.last_kd
        if (
            kd.numel() != mask.numel()
        ):  # the real steps only (real_steps.py): padded again
            kd = kd.new_zeros(mask.shape).masked_scatter(mask, kd)
        kd = kd.view(mask.shape)
        tokens = mask.sum(dim=1)
        self.record_local_metric(
            'kd_loss', AverageMetric.many(kd.detach().sum(dim=1), tokens)
        )
        self.record_local_metric(
            'kd_gate', AverageMetric.many(target.gate.sum(dim=1), tokens)
        )
        if self.opt['gate'] == 'hard':
            self.record_local_metric(
                'kd_rec_share', AverageMetric.many(target.rec_steps.sum(dim=1), tokens)
            )
        num_tokens = tokens.sum()
        loss = distill.mix_losses(
            nll * num_tokens, kd.sum(), num_tokens, self.opt['kd_weight']
        )
        if self.opt.get('rec_item_kd_weight', 0.0) > 0:
            item_kd = self.item_conditional_kd(model_output[0], teachers[2], mask)
            self.record_local_metric(
                'kd_item_loss',
                AverageMetric.many(
                    item_kd.new_zeros(mask.shape)
                    .masked_scatter_(mask, item_kd.detach())
                    .sum(dim=1),
                    tokens,
                ),
            )
            loss = loss + self.opt['rec_item_kd_weight'] * item_kd.sum() / max(
                float(num_tokens), 1.0
            )
        return (loss, model_output) if return_output else loss

    def item_conditional_kd(self, scores, rec, mask) -> torch.Tensor:
        """``[n]`` :func:`distill.item_conditional_kd` at the n real steps of ``mask`` [B,T], of the
        student's ``scores`` there (``[n,V]``, packed in row-major order: real_steps.py) against
        the rec teacher's ``rec`` (``[B,N]`` log-probabilities, or the cache's top k).
        """
        if isinstance(rec, distill.TopK):
            rec = distill.from_topk(rec.values, rec.indices, len(self.item_vocab))
        if scores.dim() == 3:  # ParlAI's padded scores (its --verbose token details)
            scores = scores[mask]
        example = mask.nonzero()[:, 0]
        # each step as a batch of one step: its example's rec distribution is its target
        return distill.item_conditional_kd(
            self.item_vocab.take(scores).unsqueeze(1),
            rec[example],
            torch.ones_like(example, dtype=torch.bool).unsqueeze(1),
            self.opt['kd_temperature'],
        ).squeeze(1)

    # ------------------------------------------------------------------ persistence
    def save(self, path=None):
        super().save(path)
        if self.teacher_cache is not None:
            self.teacher_cache.save()

    def shutdown(self):
        if self.teacher_cache is not None:
            self.teacher_cache.save()
        super().shutdown()


def check_cache_sizes(opt) -> None:
    """OptionError naming the option for a teacher-cache size that keeps nothing (the dialogue
    teacher's ``--teacher-cache-topk`` < 1) or means nothing (``--teacher-cache-rec-topk`` < 0;
    0 keeps the rec teacher whole)."""
    if opt['teacher_cache_topk'] < 1:
        raise OptionError(
            f'--teacher-cache-topk {opt["teacher_cache_topk"]}: keep at least 1 entry of the '
            'dialogue teacher\'s distribution per step'
        )
    if opt.get('teacher_cache_rec_topk', 0) < 0:
        raise OptionError(
            f'--teacher-cache-rec-topk {opt["teacher_cache_rec_topk"]}: give 0 (the rec '
            'teacher\'s whole distribution, the default) or the number of items to keep'
        )
