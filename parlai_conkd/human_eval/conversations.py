"""Conversation logs from model files, in ParlAI's Conversations format, and their ACUTE form.

``collect_logs`` runs ParlAI's own ``parlai eval_model --world-logs X.jsonl --save-format
conversations`` once per model (subprocess), on the same task/datatype/number of examples, so
episode *i* of every log continues the same ReDial test context. Each log line is ParlAI's
Conversations shape: ``{"dialog": [[teacher_act, model_act], ...], "context": [...],
"metadata_path": ...}``; the teacher act carries the seeker's turn(s), the model act the reply.

``to_acute_dialogue`` turns one such episode into an ACUTE-Eval dialogue dict (speakers,
dialogue[{id, text}]) with text made readable: flag tokens dropped, ParlAI's internal tokens
(``__SILENCE__``, ``__unk__``, ``__null__``, ...) dropped, so a recommender that speaks first
shows no seeker line, ParlAI's ``normalize_reply`` applied, item tokens rendered as titles by
``ItemCatalog.render`` (``__item_unk__``: "an unknown movie"). Internal tokens never reach
raters: without a catalog, a log with item tokens is refused.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

from parlai_conkd.fileio import atomic_write
from parlai_conkd.human_eval.files import iter_jsonl
from parlai_conkd.items import (
    GEN_TOKEN,
    REC_TOKEN,
    ITEM_TOKEN_RE,
    CatalogError,
    ItemCatalog,
)

#: The speaker id given to the replayed human side (the ReDial seeker) in ACUTE dialogues.
SEEKER_ID = 'seeker'
_FLAG_RE = re.compile(r'\s*(%s|%s)\s*' % (re.escape(REC_TOKEN), re.escape(GEN_TOKEN)))
#: ParlAI-style internal tokens: __SILENCE__, __silence__, __unk__, __null__, __end__, __item_12__, ...
INTERNAL_TOKEN_RE = re.compile(r'__[A-Za-z0-9]+(?:_[A-Za-z0-9]+)*__')


def internal_tokens(text: str) -> List[str]:
    """Internal tokens and flags in ``text`` that a rater must never see."""
    return INTERNAL_TOKEN_RE.findall(text) + [
        flag for flag in (REC_TOKEN, GEN_TOKEN) if flag in text
    ]


class LogError(ValueError):
    """A conversation log that cannot be used; the message names the file and line."""


def model_name(model_file: str) -> str:
    """A speaker name for a model file or zoo name: 'zoo:conkd/soft/model' -> 'zoo_conkd_soft'."""
    name = model_file
    if name.startswith('zoo:'):
        name = name[4:]
        if name.endswith('/model'):
            name = name[: -len('/model')]
        name = 'zoo_' + name
    else:
        path = Path(name)
        name = path.parent.name if path.name == 'model' else path.stem
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_') or 'model'


@dataclass
class LogRun:
    name: str
    model_file: str
    log_path: str


def eval_model_command(
    model_file: str,
    log_path: str,
    task: str,
    datatype: str,
    num_examples: int,
    extra_args: Sequence[str] = (),
) -> List[str]:
    """The ``parlai eval_model`` command that writes one model's Conversations log."""
    parlai = str(Path(sys.executable).with_name('parlai'))
    return [
        parlai,
        'eval_model',
        '--model-file',
        model_file,
        '--task',
        task,
        '--datatype',
        datatype,
        '--num-examples',
        str(num_examples),
        '--batchsize',
        '1',
        '--world-logs',
        log_path,
        '--save-format',
        'conversations',
        # a model trained with --skip-generation true would otherwise log no replies
        '--skip-generation',
        'false',
        '--report-filename',
        '',
        *extra_args,
    ]


def collect_logs(
    model_files: Sequence[str],
    outdir: str,
    task: str = 'redial_crs',
    datatype: str = 'test',
    num_examples: int = 50,
    names: Optional[Sequence[str]] = None,
    extra_args: Sequence[str] = (),
) -> List[LogRun]:
    """Run ``parlai eval_model --world-logs`` for every model; returns where each log went."""
    names = list(names) if names else [model_name(m) for m in model_files]
    if len(names) != len(model_files):
        raise ValueError(
            f'{len(names)} --name values for {len(model_files)} model files'
        )
    if len(set(names)) != len(names):
        raise ValueError(
            f'model names must be distinct, got {names}; pass --name for each model'
        )
    seen = {}
    for name, model_file in zip(names, model_files):
        key = (
            model_file
            if model_file.startswith('zoo:')
            else os.path.realpath(model_file)
        )
        if key in seen:
            raise ValueError(
                f'{model_file} is given twice (as {seen[key]} and {name}): a model compared '
                'with itself tells nothing; pass each model file once'
            )
        seen[key] = name
    os.makedirs(outdir, exist_ok=True)
    runs = []
    for name, model_file in zip(names, model_files):
        final = os.path.join(outdir, f'{name}.jsonl')
        # ParlAI writes the log in place; write under a temporary name so a crashed run never
        # leaves a partial log that looks complete.
        partial = os.path.join(outdir, f'.{name}.partial.jsonl')
        cmd = eval_model_command(
            model_file, partial, task, datatype, num_examples, extra_args
        )
        print(f'[human_eval] {name}: {" ".join(cmd)}', file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(
                f'parlai eval_model failed for {model_file} (exit {proc.returncode}):\n'
                f'{proc.stderr[-4000:]}'
            )
        _install_log(partial, final)
        runs.append(LogRun(name, model_file, final))
    return runs


def _install_log(partial: str, final: str) -> None:
    """Move a finished log and its .metadata into place, pointing metadata_path at the new name."""
    meta_partial = os.path.splitext(partial)[0] + '.metadata'
    meta_final = os.path.splitext(final)[0] + '.metadata'
    if os.path.exists(meta_partial):
        os.replace(meta_partial, meta_final)
    with open(partial, encoding='utf-8') as src, atomic_write(final) as dst:
        for line in src:
            if line.strip():
                episode = json.loads(line)
                if episode.get('metadata_path'):
                    episode['metadata_path'] = meta_final
                dst.write(json.dumps(episode) + '\n')
    os.unlink(partial)


def log_opt(path: str) -> Optional[Dict]:
    """The ParlAI opt a log was made with (from its .metadata file), or None."""
    meta = os.path.splitext(path)[0] + '.metadata'
    if not os.path.isfile(meta):
        return None
    with open(meta, encoding='utf-8') as f:
        try:
            return json.load(f).get('opt')
        except json.JSONDecodeError:
            return None


def catalog_for_log(path: str) -> Optional[ItemCatalog]:
    """The item catalog of the redial_crs build a log was made on, found through its metadata."""
    opt = log_opt(path)
    if not opt or 'redial_crs' not in (opt.get('task') or ''):
        return None
    from parlai_conkd.redial.build import load_catalog as load_task_catalog

    return load_task_catalog(opt)


def read_log(path: str) -> Iterator[Dict]:
    """Episodes of a Conversations jsonl log, with line-numbered errors."""
    for line_no, episode in iter_jsonl(path, LogError, 'conversation log'):
        if not isinstance(episode, dict) or not isinstance(episode.get('dialog'), list):
            raise LogError(
                f'{path}:{line_no}: not a Conversations episode (no "dialog" list)'
            )
        yield episode


def readable(text: str, catalog: Optional[ItemCatalog]) -> str:
    """Model/dataset text as raters should see it (item tokens need ``catalog``; see the module doc)."""
    from parlai.utils.strings import normalize_reply

    text = _FLAG_RE.sub(' ', text)
    # every internal token but the items goes; items are rendered as titles below
    text = INTERNAL_TOKEN_RE.sub(
        lambda m: m.group(0) if ITEM_TOKEN_RE.fullmatch(m.group(0)) else ' ', text
    )
    text = ' '.join(text.split())
    if not text:
        return ''
    # normalize_reply lower-cases, so titles are put in only afterwards
    text = normalize_reply(text)
    if catalog is not None:
        text = catalog.render(text)
    return text


def to_acute_dialogue(
    episode: Dict,
    speaker: str,
    catalog: Optional[ItemCatalog] = None,
    max_turns: Optional[int] = None,
    source: str = '?',
) -> Dict:
    """One logged episode -> ``{"speakers": [speaker, "seeker"], "dialogue": [{id, text}], "context": [...]}``.

    The teacher side of each act pair is the seeker (may hold several "\n"-joined turns, or none
    when the recommender speaks first); the other side is the model being evaluated.
    """
    dialogue = []
    for pair_no, act_pair in enumerate(episode['dialog']):
        if max_turns is not None and pair_no >= max_turns:
            break
        if len(act_pair) != 2:
            raise LogError(
                f'{source}: turn {pair_no} has {len(act_pair)} acts, expected 2'
            )
        seeker_act, model_act = act_pair
        if 'text' not in model_act:
            raise LogError(
                f'{source}: turn {pair_no}: the model act has no "text" (was the log made with '
                '--skip-generation true?)'
            )
        if catalog is None:
            for text in (seeker_act.get('text') or '', model_act['text']):
                if has_item_tokens(text):
                    raise LogError(
                        f'{source}: turn {pair_no} holds the item token {ITEM_TOKEN_RE.search(text).group(0)} '
                        'and no item catalog was given to show it as a title: pass --catalog (the '
                        'catalog JSON of the build, or ReDial\'s movies_with_mentions.csv)'
                    )
        for line in (seeker_act.get('text') or '').split('\n'):
            line = readable(line, catalog)
            if line:
                dialogue.append({'id': SEEKER_ID, 'text': line})
        dialogue.append(
            {'id': speaker, 'text': readable(model_act['text'], catalog) or '...'}
        )
    return {
        'speakers': [speaker, SEEKER_ID],
        'dialogue': dialogue,
        'context': list(episode.get('context') or []),
    }


def seeker_turns(episode: Dict) -> List[str]:
    """The replayed side of an episode: two logs are comparable only when these agree."""
    return [(pair[0].get('text') or '') for pair in episode['dialog']]


def load_catalog(path: Optional[str]) -> Optional[ItemCatalog]:
    """A catalog from a saved catalog JSON or ReDial's movies_with_mentions.csv (by extension)."""
    if not path:
        return None
    if path.endswith('.csv'):
        return ItemCatalog.from_redial(path)
    return ItemCatalog.load(path)


def has_item_tokens(text: str) -> bool:
    return ITEM_TOKEN_RE.search(text) is not None


__all__ = [
    'CatalogError',
    'INTERNAL_TOKEN_RE',
    'LogError',
    'LogRun',
    'SEEKER_ID',
    'catalog_for_log',
    'collect_logs',
    'eval_model_command',
    'has_item_tokens',
    'internal_tokens',
    'load_catalog',
    'model_name',
    'read_log',
    'readable',
    'seeker_turns',
    'to_acute_dialogue',
]
