"""``--hf-model-path``: a local Hugging Face model directory, or a hub name resolved to one.

ParlAI's GPT-2 classes and the tokenizer both read a directory. A hub name such as
``microsoft/DialoGPT-small`` is turned into the directory of its snapshot in the Hugging Face cache
(``huggingface_hub.snapshot_download``: downloaded once when online, reused afterwards, also offline).
Offline (``HF_HUB_OFFLINE=1`` / ``TRANSFORMERS_OFFLINE=1``) a name that is not cached fails at once,
without a network attempt; without a network it fails as soon as the hub cannot be reached. Either
way the error names the option and asks for a local directory (issue #17).
"""

import functools
import os
import re

OPTION = '--hf-model-path'
#: the files a causal LM and its tokenizer need (no TF/Flax/ONNX weights, no remote code)
SNAPSHOT_FILES = (
    'config.json',
    'generation_config.json',
    'vocab.json',
    'merges.txt',
    'tokenizer.json',
    'tokenizer_config.json',
    'special_tokens_map.json',
    'added_tokens.json',
    'tokenizer.model',
    'chat_template.jinja',
    '*.safetensors',
    'model.safetensors.index.json',
    'pytorch_model.bin',
)
#: ``name`` or ``org/name`` as the hub spells repository ids
_REPO_ID = re.compile(r'^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$')


class HFModelPathError(ValueError):
    """``--hf-model-path`` names nothing this machine can load; the message says what to pass."""


def hub_offline() -> bool:
    """The Hugging Face offline switches, read now (huggingface_hub reads them once, at import)."""
    return any(
        os.environ.get(name, '').strip().upper() in ('1', 'ON', 'YES', 'TRUE')
        for name in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')
    )


def _is_hub_name(value: str) -> bool:
    return bool(_REPO_ID.match(value)) and not value.startswith(('.', '~'))


def resolve_hf_model_path(value) -> str:
    """The local directory to load for ``--hf-model-path value``.

    :param value: a directory holding a HF GPT-2-family model and its tokenizer, or a hub repository
        id (``org/name``).
    :returns: ``value`` itself when it is a directory, else the hub snapshot's directory.
    :raises HFModelPathError: empty value, a path that is not a directory, or a hub name that cannot
        be fetched (offline, no network, unknown repository).
    """
    if not value:
        raise HFModelPathError(
            f'--backbone hf needs {OPTION}: a local directory with a HF GPT-2/DialoGPT model and its '
            'tokenizer, or a hub name such as microsoft/DialoGPT-small'
        )
    value = str(value)
    local = os.path.expanduser(value)
    if os.path.isdir(local):
        return local
    if os.path.exists(local) or not _is_hub_name(value):
        raise HFModelPathError(
            f'{OPTION} {value!r}: not a directory holding a HF model (and not a hub name)'
        )
    return _hub_snapshot(value, hub_offline())


@functools.lru_cache(maxsize=None)
def _hub_snapshot(repo_id: str, offline: bool) -> str:
    """One look-up per process and name: the agent and its dictionary both resolve the option."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(
            repo_id, allow_patterns=list(SNAPSHOT_FILES), local_files_only=offline
        )
    except (
        Exception
    ) as exc:  # LocalEntryNotFoundError, RepositoryNotFoundError, HTTP/IO errors
        why = (
            'offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE) and it is not in the Hugging '
            'Face cache'
            if offline
            else f'it could not be fetched from the hub ({type(exc).__name__})'
        )
        raise HFModelPathError(
            f'{OPTION} {repo_id}: no such local directory, and as a hub name {why}. Pass a local '
            f'directory instead: {OPTION} /path/to/model, holding config.json, the weights and the '
            f'tokenizer files (e.g. saved with `hf download {repo_id} --local-dir DIR` on a machine '
            'that is online).'
        ) from exc
