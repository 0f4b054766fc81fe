"""Leaderboard rows: a display name, one or more model files / zoo names (several = several
seeds), optional extra ``eval_model`` arguments. From the command line or a JSON/YAML spec file.

Spec file (JSON, or YAML when PyYAML is installed; relative model paths are relative to the
working directory, as on the command line)::

    {"title": "ReDial, shared copy, test fold",
     "split": "test",
     "eval_args": ["-bs", "64"],
     "rows": [
       {"name": "popularity", "models": ["runs/lb/popularity/model"]},
       {"name": "ConKD soft, beam 5", "models": ["zoo:conkd/soft"],
        "args": ["--inference", "beam", "--beam-size", "5"]}
     ]}

``split``, ``eval_args`` and ``title`` are optional; a row may also say ``"kind": "ranker"`` or
``"generator"`` instead of letting the model class decide.
"""

import json
import os
import shlex
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

KINDS = ('ranker', 'generator')
SPLITS = ('train', 'valid', 'test')
_ROW_KEYS = {'name', 'models', 'args', 'kind'}
_SPEC_KEYS = {'title', 'split', 'eval_args', 'rows'}


class SpecError(ValueError):
    """A leaderboard spec that cannot be used; the message names the file / option and row."""


@dataclass
class Row:
    name: str
    models: List[str]
    args: List[str] = field(default_factory=list)
    kind: Optional[str] = None

    def as_dict(self) -> Dict:
        return {
            'name': self.name,
            'models': list(self.models),
            'args': list(self.args),
            'kind': self.kind,
        }


@dataclass
class Spec:
    rows: List[Row]
    title: str = 'parlai-conkd leaderboard'
    split: str = 'test'
    eval_args: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict:
        return {
            'title': self.title,
            'split': self.split,
            'eval_args': list(self.eval_args),
            'rows': [row.as_dict() for row in self.rows],
        }


def _args(value, where: str) -> List[str]:
    """Extra arguments as a list of strings, or one shell-quoted string."""
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return [str(v) for v in value]
    raise SpecError(f'{where}: expected a list of strings or one string, got {value!r}')


def _row(entry, where: str) -> Row:
    if not isinstance(entry, dict):
        raise SpecError(
            f'{where}: expected an object with "name" and "models", got {entry!r}'
        )
    unknown = set(entry) - _ROW_KEYS
    if unknown:
        raise SpecError(
            f'{where}: unknown keys {sorted(unknown)} (allowed: {sorted(_ROW_KEYS)})'
        )
    name = entry.get('name')
    if not isinstance(name, str) or not name.strip():
        raise SpecError(f'{where}: "name" must be a non-empty string')
    models = entry.get('models')
    if isinstance(models, str):
        models = [models]
    if (
        not isinstance(models, list)
        or not models
        or not all(isinstance(m, str) and m for m in models)
    ):
        raise SpecError(
            f'{where} ({name}): "models" must be a model file / zoo name or a non-empty list of them'
        )
    kind = entry.get('kind')
    if kind is not None and kind not in KINDS:
        raise SpecError(
            f'{where} ({name}): "kind" must be one of {KINDS}, got {kind!r}'
        )
    return Row(
        name.strip(),
        list(models),
        _args(entry.get('args'), f'{where} ({name}) "args"'),
        kind,
    )


def spec_from_dict(data, source: str) -> Spec:
    if not isinstance(data, dict):
        raise SpecError(
            f'{source}: expected an object with "rows", got {type(data).__name__}'
        )
    unknown = set(data) - _SPEC_KEYS
    if unknown:
        raise SpecError(
            f'{source}: unknown keys {sorted(unknown)} (allowed: {sorted(_SPEC_KEYS)})'
        )
    entries = data.get('rows')
    if not isinstance(entries, list) or not entries:
        raise SpecError(f'{source}: "rows" must be a non-empty list')
    rows = [_row(entry, f'{source}: rows[{i}]') for i, entry in enumerate(entries)]
    split = data.get('split', 'test')
    if split not in SPLITS:
        raise SpecError(f'{source}: "split" must be one of {SPLITS}, got {split!r}')
    spec = Spec(
        rows,
        title=str(data.get('title') or Spec.title),
        split=split,
        eval_args=_args(data.get('eval_args'), f'{source}: "eval_args"'),
    )
    check_unique(spec.rows, source)
    return spec


def load_spec(path: str) -> Spec:
    """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) spec file."""
    if not os.path.isfile(path):
        raise SpecError(f'spec file not found: {path}')
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        if path.endswith(('.yaml', '.yml')):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except ImportError as exc:
        raise SpecError(
            f'{path}: reading YAML needs PyYAML ({exc}); use a .json spec'
        ) from exc
    except (
        Exception
    ) as exc:  # json.JSONDecodeError / yaml.YAMLError: both name the position
        raise SpecError(
            f'{path}: not valid {"YAML" if path.endswith(("yaml", "yml")) else "JSON"}: {exc}'
        ) from exc
    return spec_from_dict(data, path)


def rows_from_cli(rows: Sequence[str], row_args: Sequence[str] = ()) -> List[Row]:
    """``--row NAME=MODEL[,MODEL...]`` (repeatable) and ``--row-args NAME=ARGS`` (shell-quoted)."""
    out: List[Row] = []
    for value in rows:
        name, sep, models = value.partition('=')
        if not sep or not name.strip() or not models.strip():
            raise SpecError(f'--row {value!r}: expected NAME=MODEL[,MODEL...]')
        out.append(
            Row(name.strip(), [m.strip() for m in models.split(',') if m.strip()])
        )
    by_name = {row.name: row for row in out}
    for value in row_args:
        name, sep, args = value.partition('=')
        if not sep or name.strip() not in by_name:
            raise SpecError(
                f'--row-args {value!r}: expected NAME=ARGS for a NAME given with --row '
                f'(rows: {sorted(by_name)})'
            )
        by_name[name.strip()].args += shlex.split(args)
    check_unique(out, '--row')
    return out


def check_unique(rows: Sequence[Row], source: str) -> None:
    seen = set()
    for row in rows:
        if row.name in seen:
            raise SpecError(
                f'{source}: two rows are named {row.name!r}; row names must be unique'
            )
        seen.add(row.name)
