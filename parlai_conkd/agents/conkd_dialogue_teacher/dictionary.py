"""Vocabularies = words (or BPE pieces) + one token per catalog item + [REC]/[GEN].

Where the catalog comes from (first that applies), see :func:`resolve_catalog`:
1. ``<model_file>.catalog.json`` (the catalog a trained model was saved with);
2. ``--item-catalog PATH`` (a file written by ``ItemCatalog.save``);
3. the redial_crs task's ``load_catalog(opt)`` (builds the task data if needed).
"""

import os
from typing import Dict

from parlai.core.dict import DictionaryAgent

from parlai_conkd.errors import ModelFileError, remedy
from parlai_conkd.items import (
    GEN_TOKEN,
    MODEL_CATALOG_SUFFIX,
    REC_TOKEN,
    CatalogError,
    ItemCatalog,
)

from .hf_model import resolve_hf_model_path

CATALOG_SUFFIX = MODEL_CATALOG_SUFFIX
#: Frequency given to item tokens so that sorting the dictionary keeps them in one block, in
#: catalog order, right after ParlAI's special tokens (whose counts are ~1e9) and never trims them.
_ITEM_FREQ_BASE = 900_000_000

_CATALOG_CACHE: Dict[str, ItemCatalog] = {}


def model_catalog_path(model_file: str) -> str:
    return model_file + CATALOG_SUFFIX


def resolve_catalog(opt) -> ItemCatalog:
    """The item catalog this agent's vocabulary is built on (cached per file)."""
    model_file = opt.get('model_file')
    candidates = []
    if model_file:
        candidates.append(model_catalog_path(model_file))
    if opt.get('item_catalog'):
        path = opt['item_catalog']
        if not os.path.isfile(path):
            raise CatalogError(f'--item-catalog {path}: file not found')
        candidates.append(path)
    for path in candidates:
        if os.path.isfile(path):
            key = os.path.abspath(path)
            if key not in _CATALOG_CACHE:
                _CATALOG_CACHE[key] = ItemCatalog.load(path)
            return _CATALOG_CACHE[key]
    try:
        from parlai_conkd.redial.build import load_catalog
    except ImportError as exc:
        raise CatalogError(
            'no item catalog: pass --item-catalog PATH or train on -t redial_crs '
            f'(its build could not be imported: {exc})'
        ) from exc
    return load_catalog(opt)


def check_dict_file(path: str) -> None:
    """Raise ModelFileError unless ``path`` is a whole ParlAI dictionary file.

    ParlAI writes one ``token<TAB>count`` line per token and reads whatever lines it finds, so an
    empty or truncated file loaded as a smaller vocabulary and failed later as a shape mismatch
    against the model's embeddings (issue #22). Here: at least one line, every line ends with a
    newline and a count.
    """
    with open(path, 'rb') as f:
        data = f.read()
    bad = None
    if not data:
        bad = 'it is empty'
    elif not data.endswith(b'\n'):
        bad = 'its last line is cut off'
    else:
        for number, line in enumerate(data.split(b'\n')[:-1], start=1):
            count = line.rstrip(b'\r').rsplit(b'\t', 1)
            if len(count) != 2 or not count[1].lstrip(b'-').isdigit():
                bad = f'line {number} is not "token<TAB>count"'
                break
    if bad:
        model = path[: -len('.dict')] if path.endswith('.dict') else path
        raise ModelFileError(
            f'{path}: the model\'s dictionary is damaged ({bad}); {remedy(model)}'
        )


class ConkdDictionaryAgent(DictionaryAgent):
    """ParlAI word dictionary that always holds every catalog item token.

    Item tokens get fixed counts (``_ITEM_FREQ_BASE - index``), so after ParlAI sorts the
    dictionary they form one block in catalog order, are present even when never seen in training
    and survive ``--dict-maxtokens``. [REC]/[GEN] are added by the agent as special tokens.
    With ``--backbone hf`` the vocabulary is the HF tokenizer's (:class:`ConkdHFDictionaryAgent`)
    and this class only tells ``build_dict`` that there is nothing to build.
    """

    def __init__(self, opt, shared=None):
        super().__init__(opt, shared)
        self._item_tokens = []
        if not shared and not self._is_hf(opt):
            self._item_tokens = resolve_catalog(opt).tokens()
            for token in self._item_tokens:
                self.add_token(token)
            self._fix_item_counts()

    @staticmethod
    def _is_hf(opt) -> bool:
        return opt.get('backbone', 'transformer') == 'hf'

    def is_prebuilt(self):
        return self._is_hf(self.opt) or super().is_prebuilt()

    def load(self, filename):
        check_dict_file(filename)
        return super().load(filename)

    def _fix_item_counts(self):
        for index, token in enumerate(self._item_tokens):
            self.freq[token] = _ITEM_FREQ_BASE - index

    def sort(self, trim=True):
        # counting the training data raised the counts of seen items: restore the fixed ones
        self._fix_item_counts()
        return super().sort(trim=trim)


#: the padding token added when the tokenizer has none, or pads with its end token (ParlAI masks
#: padding out of the loss, so a pad equal to the end token would never teach the model to stop)
PAD_TOKEN = '<|conkd_pad|>'


def load_hf_tokenizer(path: str):
    """The tokenizer of ``--hf-model-path`` (a local directory, or a hub name: see hf_model.py)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_hf_model_path(path))


def conkd_hf_tokenizer(opt):
    """``AutoTokenizer`` of ``--hf-model-path`` + a pad token when needed + [REC]/[GEN] + one token
    per catalog item, in that order (so the same directory and catalog give the same ids).

    Raises HFModelPathError when the tokenizer has no end-of-sequence token (a reply must end).
    """
    from .hf_model import OPTION, HFModelPathError

    path = opt.get('hf_model_path')
    tokenizer = load_hf_tokenizer(path)
    if tokenizer.eos_token is None:
        raise HFModelPathError(
            f'{OPTION} {path}: its tokenizer has neither an end-of-sequence (eos) token nor a '
            'pad token to end replies with; set eos_token in its tokenizer_config.json'
        )
    # the ids below this are the loaded tokenizer's own: a directory written by
    # projects/conkd/export_hf.py already holds the tokens added below, with trained rows
    tokenizer.conkd_loaded_size = len(tokenizer)
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({'pad_token': PAD_TOKEN})
    tokenizer.add_tokens([REC_TOKEN, GEN_TOKEN], special_tokens=True)
    tokenizer.add_tokens(resolve_catalog(opt).tokens())
    # ParlAI truncates the vectors itself (keeping the end of the context)
    tokenizer.model_max_length = int(1e9)
    return tokenizer


def _hf_dictionary_class():
    from parlai.agents.hugging_face.dict import HuggingFaceDictionaryAgent

    class ConkdHFDictionaryAgent(HuggingFaceDictionaryAgent):
        """Any Hugging Face tokenizer (:func:`conkd_hf_tokenizer`) as a ParlAI dictionary.

        Special tokens: end = the tokenizer's eos; null (padding) = its pad (added when missing
        or equal to eos); start = null (the causal LM never reads the start token, and ParlAI
        strips it from replies). No special tokens are added when encoding (no BOS per turn).
        """

        @property
        def add_special_tokens(self) -> bool:
            return False

        @property
        def skip_decode_special_tokens(self) -> bool:
            return False

        def get_tokenizer(self, opt):
            return conkd_hf_tokenizer(opt)

        def override_special_tokens(self, opt):
            tokenizer = self.hf_tokenizer
            self.end_token = tokenizer.eos_token
            self.null_token = tokenizer.pad_token
            self.start_token = tokenizer.pad_token
            self.unk_token = tokenizer.unk_token or tokenizer.pad_token
            self.end_idx = tokenizer.eos_token_id
            self.null_idx = tokenizer.pad_token_id
            self.start_idx = tokenizer.pad_token_id
            self._unk_token_idx = (
                tokenizer.unk_token_id
                if tokenizer.unk_token_id is not None
                else self.null_idx
            )

        def txt2vec(self, text, vec_type=list):
            return self.hf_tokenizer.encode(text, add_special_tokens=False)

    return ConkdHFDictionaryAgent


def build_hf_dictionary(opt):
    return _hf_dictionary_class()(opt)
