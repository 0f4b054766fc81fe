"""``--backbone hf``: any Hugging Face causal LM as a ParlAI generator (issue #25).

One code path for every architecture ``AutoModelForCausalLM`` loads (GPT-2/DialoGPT, Llama, Qwen2,
Mistral, GPT-NeoX, Phi, ...), as ParlAI's decoder-only convention (``parlai.agents.hugging_face.gpt2``)
has it: the *encoder* passes the left-padded context ids through, the *decoder* is the causal LM
over ``context + reply prefix``; ``model.output`` is the identity, because the LM's own head makes
the logits (only at the positions that are scored: ``logits_to_keep``).

* Padding sits between the context and the reply (both are left-padded); the attention mask hides
  it and the position ids count real tokens only, so every row sees the same positions as alone.
* Incremental decoding keeps the transformers ``Cache`` the LM returns; beam search reorders it in
  place with ``Cache.reorder_cache`` (:meth:`CausalLMGenerator.reorder_decoder_incremental_state`).
* The added tokens (pad when needed, [REC]/[GEN], one per catalog item) get new rows in the input
  and, when untied, output embeddings: the mean of the existing rows plus a small seeded jitter
  (so items start apart), or the ``--item-embeddings-from`` rec teacher's item vectors mapped by
  a fitted projection (:func:`parlai_conkd.item_embeddings.fit_to_embeddings`), centred and scaled
  to the existing rows. The rows are saved in the ParlAI model file with the rest.
* ``--lora-r R > 0``: ``peft`` LoRA adapters on ``--lora-target-modules`` (defaults per model
  family, :data:`LORA_TARGETS`); the base weights are frozen, the added token rows stay trainable
  through peft's trainable tokens (a delta on those rows only, input and untied output embeddings).
  The model file then holds the adapters, the token deltas and the added rows' starting values,
  not the base weights (they are re-read from ``--hf-model-path``).
"""

import functools
from typing import Dict, List, Optional, Sequence

import torch
from parlai.core.torch_generator_agent import TorchGeneratorModel
from parlai.utils.torch import IdentityLayer

from parlai_conkd.errors import OptionError

from .hf_model import OPTION, resolve_hf_model_path

#: LoRA targets per ``config.model_type`` (module-name suffixes); others: peft's own table, then
#: every linear layer but the output head (``all-linear``)
LORA_TARGETS: Dict[str, List[str]] = {
    'gpt2': ['c_attn', 'c_proj', 'c_fc'],
    'llama': ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    'mistral': ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    'qwen2': ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    'qwen3': ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    'gemma': ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    'gemma2': ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
    'phi': ['q_proj', 'k_proj', 'v_proj', 'dense'],
    'phi3': ['qkv_proj', 'o_proj'],
    'gpt_neox': ['query_key_value', 'dense'],
}


@functools.lru_cache(maxsize=None)
def cache_arg() -> str:
    """The forward's cache argument and output field: ``cache`` from transformers 5.2x (the older
    ``past_key_values`` warns that it goes in 5.40). Looked up on first use: importing
    transformers takes about 1.5 s, which a transformer-backbone run never needs."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    fields = getattr(CausalLMOutputWithPast, '__dataclass_fields__', {})
    return 'cache' if 'cache' in fields else 'past_key_values'


@functools.lru_cache(maxsize=None)
def slices_bool_masks() -> bool:
    """Whether this transformers' models take ``logits_to_keep`` as a bool ``[B, L]`` mask
    (their shared ``slice_logits_to_keep``: flattened ``[n, H]`` rows; recent 5.x releases). The
    head at the real label steps alone needs it; without it the padded pass runs."""
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    probe = torch.arange(6.0).view(1, 3, 2)
    try:
        kept = slice_logits_to_keep(probe, torch.tensor([[True, False, True]]))
    except Exception:  # an older signature: no mask support
        return False
    return tuple(kept.shape) == (2, 2)


#: standard deviation of the jitter on the mean row, as a fraction of the existing rows' std
NEW_ROW_JITTER = 0.1
#: buffers holding the added rows' starting values (LoRA: restored from the model file on load)
NEW_ROWS_IN = 'new_rows_input'
NEW_ROWS_OUT = 'new_rows_output'


_TARGETS_HELP = ', '.join(f'{k}={"+".join(v)}' for k, v in sorted(LORA_TARGETS.items()))


class CausalLMError(OptionError):
    """The ``--hf-model-path`` model or a LoRA option cannot be used; the message names the option."""


def add_causal_lm_args(parser) -> None:
    group = parser.add_argument_group('HF causal LM backbone (--backbone hf)')
    group.add_argument(
        '--lora-r',
        type=int,
        default=0,
        help='LoRA rank (peft) on the HF backbone; 0: full fine-tuning. The base weights stay '
        'frozen; the added token rows (items, [REC]/[GEN], pad) stay trainable.',
    )
    group.add_argument('--lora-alpha', type=float, default=16.0, help='LoRA alpha')
    group.add_argument('--lora-dropout', type=float, default=0.05, help='LoRA dropout')
    group.add_argument(
        '--lora-target-modules',
        type=str,
        default=None,
        help='Comma-separated module-name suffixes that get LoRA adapters (default per model '
        f'family: {_TARGETS_HELP}; '
        'others: peft\'s table, else all-linear).',
    )
    group.add_argument(
        '--hf-bf16',
        type='bool',
        default=False,
        help='On a GPU, run the HF backbone\'s forward and backward under bfloat16 autocast '
        '(weights and optimizer state stay float32; a student\'s frozen HF dialogue teacher is '
        'held in bfloat16). Ignored on CPU (float32). Not with --fp16 true.',
    )
    group.add_argument(
        '--gradient-checkpointing',
        type='bool',
        default=False,
        help='Recompute the HF backbone\'s activations in the backward pass (less memory, about '
        'one more forward of time).',
    )


# ---------------------------------------------------------------------------------- the model


class CausalLMGenerator(TorchGeneratorModel):
    """A causal LM (``lm``: a transformers ``PreTrainedModel`` or a peft model around one) as
    ParlAI's encoder/decoder pair. Shapes: context ``[B, S]`` and labels ``[B, T]``, both
    left-padded with ``null_idx``; ``decode_forced`` returns logits ``[B, T, V]`` aligned with the
    labels (row b, step t predicts ``ys[b, t]``); while ``real_steps`` is set
    (:func:`.real_steps.scoring_real_steps`) the rows of those steps only, packed ``[n, V]``, and
    no predictions."""

    #: bool ``[B, T]`` while the agent scores the real label steps alone, else None
    real_steps: Optional[torch.Tensor] = None
    #: whether the LM's forward slices ``logits_to_keep`` given as a bool mask (None: not known
    #: yet; checked on the first real-step pass)
    _packed_head: Optional[bool] = None

    def __init__(
        self, lm, null_idx: int, start_idx: int, end_idx: int, bf16: bool = False
    ):
        super().__init__(padding_idx=null_idx, start_idx=start_idx, end_idx=end_idx)
        self.encoder = IdentityLayer()
        self.lm = lm
        self.bf16 = bf16
        self.decoder = _Step(self)

    # autocast on the GPU only: CPU runs in float32
    def _autocast(self, device: torch.device):
        return torch.autocast(
            device_type=device.type,
            dtype=torch.bfloat16,
            enabled=self.bf16 and device.type == 'cuda',
        )

    def _run(self, ids, mask, positions, cache=None, keep=1, use_cache=False):
        with self._autocast(ids.device):
            out = self.lm(
                input_ids=ids.clamp(min=0),
                attention_mask=mask.long(),
                position_ids=positions,
                use_cache=use_cache,
                logits_to_keep=keep,
                **{cache_arg(): cache},
            )
        return out.logits, getattr(out, cache_arg())

    def decode_forced(self, encoder_states, ys):
        """Teacher-forced logits for ``ys`` (no start token: the last context position predicts
        the first label token)."""
        context = encoder_states
        steps = ys.size(1)
        ids = torch.cat([context, ys[:, :-1]], dim=1)
        mask = ids.ne(self.NULL_IDX)
        positions = (mask.long().cumsum(-1) - 1).clamp_(min=0)
        # with left-padded labels the first real label of row b sits at steps - length_b and is
        # predicted from the last context position (what ParlAI's GPT-2 model does, without the
        # Python loop); every later step t from position context + t - 1
        lengths = ys.ne(self.NULL_IDX).sum(-1)
        first = (steps - lengths).clamp(0, steps - 1)
        rows = torch.arange(ys.size(0), device=ys.device)
        if (
            self.real_steps is not None
            and slices_bool_masks()
            and self._packed_head is not False
        ):
            # the LM's head at the real steps' positions only (issue #26): logits_to_keep as a
            # bool [B, S + T - 1] mask gives the kept rows flattened in row-major order, which is
            # the order of the real steps
            keep = label_positions(self.real_steps, first, context.size(1))
            logits, _ = self._run(ids, mask, positions, keep=keep)
            if self._packed_head is None:
                # a model whose forward does not slice with a bool mask (remote code) gets the
                # padded pass below from now on
                wanted = (int(keep.sum()), logits.size(-1))
                self._packed_head = tuple(logits.shape) == wanted
            if self._packed_head:
                return logits, None
        logits, _ = self._run(ids, mask, positions, keep=steps)
        # kept positions: [last context, ys[:, 0], ..., ys[:, -2]]
        logits = logits.index_put((rows, first), logits[:, 0])
        if self.real_steps is not None:
            return logits[self.real_steps], None
        return logits, logits.argmax(dim=-1)

    def output(self, tensor):
        return tensor

    def reorder_encoder_states(self, encoder_states, indices):
        return torch.index_select(encoder_states, 0, indices)

    def reorder_decoder_incremental_state(self, incremental_state, inds):
        # transformers' Cache, reordered in place (every layer type implements reorder_cache)
        incremental_state.reorder_cache(inds)
        return incremental_state


def label_positions(real: torch.Tensor, first: torch.Tensor, context: int):
    """The positions of ``context + labels[:, :-1]`` whose hidden states predict the ``real``
    label steps: bool ``[B, context + T - 1]``.

    ``real``: bool ``[B, T]``, a suffix of each row (left-padded labels); ``first``: ``[B]``, each
    row's first real step. Step t is predicted from position ``context - 1 + t``, except a row's
    first real step, which the last context position predicts (the label padding before it is
    skipped).
    """
    rows = torch.arange(real.size(0), device=real.device)
    later = real.clone()
    later[rows, first] = False
    keep = torch.zeros(
        real.size(0), context + real.size(1) - 1, dtype=torch.bool, device=real.device
    )
    keep[:, context - 1 :] = later
    keep[:, context - 1] |= real[rows, first]
    return keep


class _Step:
    """ParlAI's ``model.decoder(input, encoder_state, incr_state)`` for generation: ``input`` is
    the start token then the tokens generated so far; the start token is never fed to the LM.
    Not a module (the LM's parameters are registered once, under ``lm``)."""

    def __init__(self, model: CausalLMGenerator):
        self._model = [
            model
        ]  # a list: no submodule registration, no reference cycle in repr

    def __call__(self, input, encoder_state, incr_state=None):
        model = self._model[0]
        pad = model.NULL_IDX
        reply = input[:, 1:]
        if incr_state is None:
            ids = torch.cat([encoder_state, reply], dim=1)
            mask = ids.ne(pad)
            positions = (mask.long().cumsum(-1) - 1).clamp_(min=0)
        else:
            ids = reply[:, -1:]
            mask = torch.cat([encoder_state, reply], dim=1).ne(pad)
            positions = mask.long().sum(-1, keepdim=True) - 1
        return model._run(ids, mask, positions, cache=incr_state, use_cache=True)


# ---------------------------------------------------------------------------------- building


def _input_output_names(lm):
    """Module names of the input embedding and the output head, and whether they are tied."""
    emb, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    names = {id(m): n for n, m in lm.named_modules()}
    tied = head is not None and head.weight is emb.weight
    return names[id(emb)], (names[id(head)] if head is not None else None), tied


def load_causal_lm(path_option: str):
    """``AutoModelForCausalLM`` of ``--hf-model-path`` in float32; a clear error otherwise."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_hf_model_path(path_option)
    config = AutoConfig.from_pretrained(path)
    mapping = AutoModelForCausalLM._model_mapping
    if type(config) not in mapping:
        raise CausalLMError(
            f'{OPTION} {path_option}: its architecture ({config.model_type}, '
            f'{", ".join(config.architectures or []) or "no architectures listed"}) is not a causal '
            'language model (AutoModelForCausalLM cannot load it); --backbone hf needs a '
            'decoder-only LM such as GPT-2, Llama, Qwen2, Mistral or GPT-NeoX'
        )
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@torch.no_grad()
def init_new_rows(
    weight: torch.Tensor,
    old: int,
    seed: int,
    item_rows: Optional[dict] = None,
    rows: Optional[slice] = None,
) -> None:
    """Rows ``old:`` of ``weight`` = mean of rows ``:old`` + jitter (``NEW_ROW_JITTER`` x their
    per-dimension std, seeded). ``item_rows`` (``{row: vector}``, vectors with unit entry std, see
    :func:`parlai_conkd.item_embeddings.fit_to_embeddings`) then set theirs to the mean plus the
    vector scaled to the existing rows' entry std. ``rows`` (a slice within ``old:``): only these
    are written, with the values they get when all are (the rest of the table is kept).
    """
    if weight.size(0) <= old:
        return
    start, stop, _ = (rows or slice(old, None)).indices(weight.size(0))
    base = weight[:old].float()
    mean, std = base.mean(0), base.std(0)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(weight.size(0) - old, weight.size(1), generator=generator)
    noise = noise[max(start - old, 0) : max(stop - old, 0)]
    weight[start:stop] = (mean + NEW_ROW_JITTER * std * noise.to(mean)).to(weight)
    item_rows = {r: v for r, v in (item_rows or {}).items() if start <= r < stop}
    if item_rows:
        index = torch.tensor(sorted(item_rows), device=weight.device)
        vectors = torch.stack([item_rows[r] for r in sorted(item_rows)]).to(mean)
        weight[index] = (mean + (base - mean).std() * vectors).to(weight)


def lora_targets(lm, value: Optional[str]) -> Sequence[str]:
    """The module-name suffixes for ``--lora-target-modules`` (checked against ``lm``)."""
    model_type = getattr(lm.config, 'model_type', '')
    if value:
        targets = [t.strip() for t in value.split(',') if t.strip()]
    elif model_type in LORA_TARGETS:
        targets = LORA_TARGETS[model_type]
    else:
        try:
            from peft.utils.constants import (
                TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TABLE,
            )
        except ImportError:  # pragma: no cover - older peft
            PEFT_TABLE = {}
        targets = list(PEFT_TABLE.get(model_type, [])) or ['all-linear']
    if targets == ['all-linear']:
        return 'all-linear'
    names = [name for name, _ in lm.named_modules()]
    unmatched = [
        t for t in targets if not any(n == t or n.endswith('.' + t) for n in names)
    ]
    if unmatched:
        linear = sorted(
            {
                name.rsplit('.', 1)[-1]
                for name, module in lm.named_modules()
                if isinstance(module, torch.nn.Linear)
                or type(module).__name__ == 'Conv1D'
            }
        )
        raise CausalLMError(
            f'--lora-target-modules: {", ".join(unmatched)} match(es) no module of the '
            f'{model_type or "HF"} model at {OPTION}; its linear layers are named '
            f'{", ".join(linear) or "(none)"}'
        )
    return targets


def add_lora(lm, opt, new_ids: List[int]):
    """peft LoRA on ``lm`` (base frozen) with the added token rows trainable; returns the peft
    model. Raises CausalLMError for targets that match nothing, ImportError without peft.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise CausalLMError(
            '--lora-r needs the peft package: pip install -r requirements/lora.txt'
        ) from exc
    targets = lora_targets(lm, opt.get('lora_target_modules'))
    emb_name, head_name, tied = _input_output_names(lm)
    trainable = {emb_name: list(new_ids)}
    if head_name is not None and not tied:
        trainable[head_name] = list(new_ids)
    config = LoraConfig(
        r=int(opt['lora_r']),
        lora_alpha=float(opt.get('lora_alpha') or 16.0),
        lora_dropout=float(opt.get('lora_dropout') or 0.0),
        target_modules=targets,
        trainable_token_indices=trainable if new_ids else None,
    )
    return get_peft_model(lm, config)


def first_added_id(dictionary) -> int:
    """The smallest id among the tokens :func:`dictionary.conkd_hf_tokenizer` added (pad,
    [REC]/[GEN]; the items and ParlAI's --fp16 padding come after them)."""
    from parlai_conkd.items import GEN_TOKEN, REC_TOKEN

    from .dictionary import PAD_TOKEN

    tokens = [REC_TOKEN, GEN_TOKEN, PAD_TOKEN]
    return min(dictionary.tok2ind[t] for t in tokens if t in dictionary.tok2ind)


def rows_to_init(dictionary, old: int) -> slice:
    """The rows :func:`build_causal_lm` initialises: from ``old`` on, for a base model's
    tokenizer (the project's tokens are added now). A directory written by
    ``projects/conkd/export_hf.py`` already holds them (pad, [REC]/[GEN], the items) with trained
    rows, and those rows are kept: only the tokens added now (items new to the catalog, ParlAI's
    --fp16 padding) start as new rows, and the table's rows past the dictionary stay as exported.
    """
    tokenizer = getattr(dictionary, 'hf_tokenizer', None)
    loaded = getattr(tokenizer, 'conkd_loaded_size', old)
    if loaded <= old:
        return slice(old, None)
    return slice(loaded, max(loaded, len(dictionary)))


def build_causal_lm(opt, dictionary, item_rows=None):
    """The generator for ``--backbone hf``: the LM of ``--hf-model-path``, its embeddings resized
    to the dictionary (every token the tokenizer gained, plus ParlAI's --fp16 padding), the new
    rows initialised (:func:`init_new_rows`), optionally LoRA (:func:`add_lora`) and gradient
    checkpointing. ``item_rows``: ``dim -> {vocab id: vector}`` (item rows from the rec teacher).
    """
    if opt.get('hf_bf16') and opt.get('fp16'):
        raise CausalLMError(
            '--hf-bf16 true and --fp16 true: choose one half precision (bf16 autocast keeps '
            'float32 weights; ParlAI\'s --fp16 halves them)'
        )
    lm = load_causal_lm(opt.get('hf_model_path'))
    if item_rows is not None:
        item_rows = item_rows(lm.get_input_embeddings().weight.size(1))
    # the first token this project added: rows from there on are new. A model's table may be
    # larger than its tokenizer (Qwen2.5: 151,936 rows for 151,665 tokens): the added tokens then
    # take spare rows first, and the table keeps its size (the output layer's cost stays the
    # model's own); the spare rows left start like the new ones and are never trained. An
    # exported directory (export_hf.py) already holds these tokens: its rows are kept
    old = first_added_id(dictionary)
    size = max(len(dictionary), lm.get_input_embeddings().weight.size(0))
    if lm.get_input_embeddings().weight.size(0) != size:
        lm.resize_token_embeddings(size, mean_resizing=False)
    _, _, tied = _input_output_names(lm)
    seed = int(opt.get('seed') or 0)
    rows = rows_to_init(dictionary, old)
    init_new_rows(lm.get_input_embeddings().weight, old, seed, item_rows, rows)
    head = lm.get_output_embeddings()
    if head is not None and not tied:
        init_new_rows(head.weight, old, seed + 1, item_rows, rows)
    if lm.config.pad_token_id is None:
        lm.config.pad_token_id = dictionary.null_idx
    if opt.get('gradient_checkpointing'):
        lm.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={'use_reentrant': False}
        )
    new_ids = list(range(old, len(dictionary)))
    emb_in = lm.get_input_embeddings().weight[old:].detach().clone()
    emb_out = None
    if head is not None and not tied:
        emb_out = head.weight[old:].detach().clone()
    if int(opt.get('lora_r') or 0) > 0:
        lm = add_lora(lm, opt, new_ids)
    model = CausalLMGenerator(
        lm,
        null_idx=dictionary.null_idx,
        start_idx=dictionary.start_idx,
        end_idx=dictionary.end_idx,
        bf16=bool(opt.get('hf_bf16')),
    )
    model.base_vocab_size = old
    # the added rows' starting values: with LoRA they are not in the base weights on disk
    model.register_buffer(NEW_ROWS_IN, emb_in)
    model.register_buffer(NEW_ROWS_OUT, emb_out if emb_out is not None else None)
    return model


def is_lora(model) -> bool:
    return hasattr(model.lm, 'peft_config')


def base_embeddings(model):
    """(input weight, output weight or None when tied) of the base LM (under peft's wrappers)."""
    lm = model.lm.get_base_model() if is_lora(model) else model.lm

    def weight(module):
        if module is None:
            return None
        inner = getattr(module, 'token_adapter', None)
        inner = getattr(inner, 'base_layer', module) if inner is not None else module
        return inner.weight

    emb = weight(lm.get_input_embeddings())
    head = weight(lm.get_output_embeddings())
    return emb, (None if head is None or head is emb else head)


def merge_frozen(model) -> None:
    """A frozen LoRA generator (a student's dialogue teacher) with its adapters and token deltas
    merged into the weights, in place: the same function, one matrix product per layer instead of
    three (it is never saved or trained again)."""
    if is_lora(model):
        model.lm = model.lm.merge_and_unload()
        for parameter in model.parameters():
            parameter.requires_grad_(False)


def saved_state(model) -> dict:
    """What a LoRA model's file holds: every trainable tensor, the added rows' starting values."""
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {
        k: v
        for k, v in model.state_dict().items()
        if k in trainable or k in (NEW_ROWS_IN, NEW_ROWS_OUT)
    }


@torch.no_grad()
def load_saved_state(model, state: dict) -> None:
    """Load :func:`saved_state` into a freshly built LoRA model: exactly the saved tensors, the
    rest from ``--hf-model-path``; the added rows' starting values written back into the base
    embeddings. Raises RuntimeError (keys or shapes that do not fit)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected = set(saved_state(model))
    absent = expected & set(missing)
    if absent or unexpected:
        raise RuntimeError(
            f'LoRA state: missing {sorted(absent)[:3]}, unexpected {sorted(unexpected)[:3]}'
        )
    old = model.base_vocab_size
    emb, head = base_embeddings(model)
    emb[old:] = getattr(model, NEW_ROWS_IN).to(emb)
    if head is not None and getattr(model, NEW_ROWS_OUT) is not None:
        head[old:] = getattr(model, NEW_ROWS_OUT).to(head)


def export_hf_directory(model, tokenizer, directory: str) -> str:
    """Write the generator as a plain Hugging Face directory (``AutoModelForCausalLM`` +
    ``AutoTokenizer``, item tokens and [REC]/[GEN] included): LoRA adapters and the token rows'
    deltas merged into the weights (on a copy; ``model`` is unchanged). Returns ``directory``.
    """
    import copy

    lm = copy.deepcopy(model.lm).float()
    if is_lora(model):
        lm = lm.merge_and_unload()
    lm.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
