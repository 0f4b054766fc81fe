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

Malformed logs. ``read_episodes`` checks every line of a log before anything is built from it and
refuses a bad one with a ``LogError`` whose one-line message starts ``FILE:LINE (conversation ID)``:
the conversation id is the ``conversation_id`` that ``redial_crs`` puts on every teacher act (or an
episode-level ``conversation_id``); a log of a task that records none says ``(no conversation
id)``; ``turn K`` is ``dialog[K]``, counted from 0. Refused:

- a line that is not JSON, or not UTF-8; a log with no episodes;
- an episode that is not an object with a non-empty ``"dialog"`` list, or whose ``"context"`` is
  not a list;
- a turn that is not a pair ``[seeker act, model act]`` (one act, three acts, not a list);
- an act that is not an object, e.g. a model turn that is a plain string;
- a model act without ``"text"`` (a log made with ``--skip-generation true``); a ``"text"`` that
  is not a string; ``"eval_labels"``/``"labels"`` that are not a list of strings;
- two consecutive model turns in the log: a turn whose seeker act has the ``"id"`` of the model
  (both acts of the turn, or the reply of another turn), which would show the model's words as the
  seeker's; replies by two different ids in one episode;
- acts of two conversation ids in one line, a conversation id on two lines of one log, an
  episode without a conversation id in a log whose other episodes have one.

Normalised, because ACUTE-Eval shows strictly alternating turns (its README: speakers a, b, a,
b, ...) and every dialogue ``to_acute_dialogue`` returns alternates:

- a seeker act of several ``"\\n"``-joined messages is one seeker turn, the messages joined by a
  space (as ReDial preprocessing merges one speaker's consecutive messages);
- a seeker act that shows nothing (no ``"text"``, ``""``, only internal tokens such as
  ``__SILENCE__``) adds no seeker turn: at the start the model opens the dialogue; later the
  model's reply joins its previous turn, the two replies joined by a space, so a rater never sees
  two model turns in a row (logs paired together replay the same seeker turns, so both sides of a
  comparison are merged alike);
- a model reply that is empty once cleaned shows as ``...``, or adds nothing to a merged turn
  that has other text.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from parlai_conkd.fileio import atomic_write
from parlai_conkd.items import (
    GEN_TOKEN,
    ITEM_TOKEN_RE,
    REC_TOKEN,
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
    """A conversation log that cannot be used; the one-line message names the file, the line and
    the conversation id."""


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
            meta_json = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
    opt = meta_json.get('opt') if isinstance(meta_json, dict) else None
    return opt if isinstance(opt, dict) else None


def catalog_for_log(path: str) -> Optional[ItemCatalog]:
    """The item catalog of the redial_crs build a log was made on, found through its metadata."""
    opt = log_opt(path)
    if not opt or 'redial_crs' not in (opt.get('task') or ''):
        return None
    from parlai_conkd.redial.build import load_catalog as load_task_catalog

    return load_task_catalog(opt)


def log_where(path: str, line: int, conversation_ids: Sequence[str] = ()) -> str:
    """``FILE:LINE (conversation ID)``, the prefix of every LogError about one log line."""
    if not conversation_ids:
        return f'{path}:{line} (no conversation id)'
    if len(conversation_ids) == 1:
        return f'{path}:{line} (conversation {conversation_ids[0]})'
    return f'{path}:{line} (conversations {", ".join(conversation_ids)})'


def conversation_ids(episode) -> List[str]:
    """The conversation ids an episode names (episode-level, then every act's), in order, once
    each; read from whatever JSON the line holds, so an error about a malformed episode can name
    them too."""
    found: List[str] = []

    def add(holder):
        if isinstance(holder, dict) and holder.get('conversation_id') not in (None, ''):
            value = str(holder['conversation_id'])
            if value not in found:
                found.append(value)

    add(episode)
    dialog = episode.get('dialog') if isinstance(episode, dict) else None
    for pair in dialog if isinstance(dialog, list) else ():
        for act in pair if isinstance(pair, list) else ():
            add(act)
    return found


_CONVERSATION_ID_RE = re.compile(r'"conversation_id"\s*:\s*"?([^",}\s]+)')


def _described(value) -> str:
    """What a JSON value is, for messages: 'null', 'an object', 'a list', 'a string', ..."""
    if value is None:
        return 'null'
    return {
        bool: 'a boolean',
        int: 'a number',
        float: 'a number',
        str: 'a string',
        list: 'a list',
        dict: 'an object',
    }.get(type(value), type(value).__name__)


def _short(value, limit: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + '...'


def check_episode(episode, where: str) -> None:
    """Raise LogError (``where: ...``) unless ``episode`` is a usable Conversations episode: the
    refusals listed in the module doc that concern one episode."""
    if not isinstance(episode, dict):
        raise LogError(
            f'{where}: not a Conversations episode ({_described(episode)}, not an '
            'object with a "dialog" list)'
        )
    if 'dialog' not in episode:
        raise LogError(f'{where}: not a Conversations episode (no "dialog" list)')
    dialog = episode['dialog']
    if not isinstance(dialog, list):
        raise LogError(
            f'{where}: "dialog" is {_described(dialog)}, not a list of '
            '[seeker act, model act] turns'
        )
    if not dialog:
        raise LogError(f'{where}: "dialog" is empty: no turns to show raters')
    context = episode.get('context')
    if context is not None and not isinstance(context, list):
        raise LogError(f'{where}: "context" is {_described(context)}, not a list')
    for turn, pair in enumerate(dialog):
        if not isinstance(pair, list):
            raise LogError(
                f'{where}: turn {turn} is {_described(pair)} ({_short(pair)}), not a '
                '[seeker act, model act] pair'
            )
        if len(pair) != 2:
            raise LogError(
                f'{where}: turn {turn} has {len(pair)} acts, expected 2 '
                '([seeker act, model act])'
            )
        for role, act in zip(('seeker', 'model'), pair):
            if not isinstance(act, dict):
                raise LogError(
                    f'{where}: turn {turn}: the {role} act is '
                    f'{"a plain string" if isinstance(act, str) else _described(act)} '
                    f'({_short(act)}), not a ParlAI act (an object with "id" and "text")'
                )
        seeker_act, model_act = pair
        if 'text' not in model_act:
            raise LogError(
                f'{where}: turn {turn}: the model act has no "text" (was the log made with '
                '--skip-generation true?)'
            )
        for role, act in (('seeker', seeker_act), ('model', model_act)):
            if 'text' in act and not isinstance(act['text'], str):
                raise LogError(
                    f'{where}: turn {turn}: the {role} act\'s "text" is '
                    f'{_described(act["text"])}'
                    + (f' ({_short(act["text"])})' if act['text'] is not None else '')
                    + ', not a string'
                )
        for key in ('eval_labels', 'labels'):
            labels = seeker_act.get(key)
            if labels is not None and not (
                isinstance(labels, list) and all(isinstance(x, str) for x in labels)
            ):
                raise LogError(
                    f'{where}: turn {turn}: the seeker act\'s "{key}" is '
                    f'{_short(labels)}, not a list of strings'
                )
    # speakers: the seeker acts and the model acts alternate; the model never holds both
    model_ids: Dict[str, int] = {}
    for turn, (_, model_act) in enumerate(dialog):
        if model_act.get('id') is not None:
            model_ids.setdefault(str(model_act['id']), turn)
    if len(model_ids) > 1:
        (first, _), (other, turn) = list(model_ids.items())[:2]
        raise LogError(
            f'{where}: turn {turn}: the reply is by {other!r}, turn {model_ids[first]}\'s by '
            f'{first!r}: one episode of a log holds the replies of one model'
        )
    for turn, (seeker_act, _) in enumerate(dialog):
        speaker = seeker_act.get('id')
        if speaker is not None and str(speaker) in model_ids:
            of = model_ids[str(speaker)]
            whose = 'its own reply' if of == turn else f'the reply of turn {of}'
            raise LogError(
                f'{where}: turn {turn}: the seeker act is by the model {str(speaker)!r} (as '
                f'{whose}): two consecutive model turns, which would show the model\'s words as '
                'the seeker\'s (ACUTE-Eval needs alternating turns; eval_model --world-logs '
                'writes [seeker act, model act] pairs)'
            )


@dataclass
class LogEpisode:
    """One checked episode of a conversation log and where it came from."""

    path: str
    line: int
    conversation_id: Optional[str]
    episode: Dict

    @property
    def where(self) -> str:
        ids = [self.conversation_id] if self.conversation_id is not None else []
        return log_where(self.path, self.line, ids)


def _log_lines(path: str) -> Iterator[Tuple[int, object]]:
    """(line number, parsed JSON) per non-blank line; LogError naming the line otherwise."""
    if not os.path.isfile(path):
        raise LogError(f'conversation log not found: {path}')
    with open(path, 'rb') as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                line = raw.decode('utf-8')
            except UnicodeDecodeError as exc:
                found = _CONVERSATION_ID_RE.findall(raw.decode('utf-8', 'replace'))
                raise LogError(
                    f'{log_where(path, line_no, found[:1])}: not UTF-8 (byte {exc.start + 1})'
                ) from exc
            if not line.strip():
                continue
            try:
                # without its line break: an error at the end of a cut line is past its last
                # character, not at "column 1" after the newline
                value = json.loads(line.rstrip('\r\n'))
            except json.JSONDecodeError as exc:
                # a torn line usually still shows its conversation id
                found = _CONVERSATION_ID_RE.findall(line)
                raise LogError(
                    f'{log_where(path, line_no, found[:1])}: invalid JSON ({exc.msg} at column '
                    f'{exc.pos + 1})'
                ) from exc
            yield line_no, value


def read_episodes(path: str) -> List[LogEpisode]:
    """Every episode of a Conversations jsonl log, checked (see the module doc); a malformed log
    raises LogError naming the file, the line and the conversation id."""
    episodes: List[LogEpisode] = []
    for line_no, episode in _log_lines(path):
        ids = conversation_ids(episode)
        here = log_where(path, line_no, ids)
        if len(ids) > 1:
            raise LogError(
                f'{here}: one line holds acts of {len(ids)} conversations: one line is one '
                'conversation'
            )
        check_episode(episode, here)
        episodes.append(LogEpisode(path, line_no, ids[0] if ids else None, episode))
    if not episodes:
        raise LogError(f'{path}: no episodes (an empty conversation log)')
    with_id = [e for e in episodes if e.conversation_id is not None]
    if with_id and len(with_id) != len(episodes):
        missing = next(e for e in episodes if e.conversation_id is None)
        raise LogError(
            f'{missing.where}: the episode has no conversation id, while line '
            f'{with_id[0].line} has conversation {with_id[0].conversation_id}: an episode of '
            'another task or log? Make the log again with one --task'
        )
    seen: Dict[str, int] = {}
    for e in with_id:
        if e.conversation_id in seen:
            raise LogError(
                f'{e.where}: conversation {e.conversation_id} is also line '
                f'{seen[e.conversation_id]}: one conversation logged twice (two logs joined?)'
            )
        seen[e.conversation_id] = e.line
    return episodes


def read_log(path: str) -> Iterator[Dict]:
    """Episodes of a Conversations jsonl log, checked as :func:`read_episodes` does."""
    for entry in read_episodes(path):
        yield entry.episode


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

    The teacher side of each act pair is the seeker (may hold several "\n"-joined messages, or none
    when the recommender speaks first); the other side is the model being evaluated. The dialogue
    alternates strictly (the rules in the module doc); ``source`` starts every error message.
    """
    check_episode(episode, source)
    # {'id', 'parts'}: consecutive parts of one speaker form one turn
    turns: List[Dict] = []

    def add(turn_id: str, text: str) -> None:
        if turns and turns[-1]['id'] == turn_id:
            turns[-1]['parts'].append(text)
        else:
            turns.append({'id': turn_id, 'parts': [text]})

    for pair_no, (seeker_act, model_act) in enumerate(episode['dialog']):
        if max_turns is not None and pair_no >= max_turns:
            break
        if catalog is None:
            for text in (seeker_act.get('text') or '', model_act['text']):
                if has_item_tokens(text):
                    raise LogError(
                        f'{source}: turn {pair_no} holds the item token {ITEM_TOKEN_RE.search(text).group(0)} '
                        'and no item catalog was given to show it as a title: pass --catalog (the '
                        'catalog JSON of the build, or ReDial\'s movies_with_mentions.csv)'
                    )
        lines = [
            readable(line, catalog)
            for line in (seeker_act.get('text') or '').split('\n')
        ]
        seeker = ' '.join(line for line in lines if line)
        if seeker:
            add(SEEKER_ID, seeker)
        add(speaker, readable(model_act['text'], catalog))
    dialogue = [
        {'id': turn['id'], 'text': ' '.join(p for p in turn['parts'] if p) or '...'}
        for turn in turns
    ]
    return {
        'speakers': [speaker, SEEKER_ID],
        'dialogue': dialogue,
        'context': list(episode.get('context') or []),
    }


def seeker_turns(episode: Dict) -> List[str]:
    """The replayed side of a (checked) episode: two logs are comparable only when these agree."""
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
    'LogEpisode',
    'LogError',
    'LogRun',
    'SEEKER_ID',
    'catalog_for_log',
    'check_episode',
    'collect_logs',
    'conversation_ids',
    'eval_model_command',
    'has_item_tokens',
    'internal_tokens',
    'load_catalog',
    'log_where',
    'model_name',
    'read_episodes',
    'read_log',
    'readable',
    'seeker_turns',
    'to_acute_dialogue',
]
