"""What a rerun of ``parlai train_model -mf M`` continues from, and when it has nothing left to do.

ParlAI 1.7.2's train loop resumes from ``M.checkpoint`` whenever that file exists (ParlAI #2939;
PR #3162 fixed the loading of the checkpoint, not what follows). It never removes the checkpoint,
so after a resumed run finishes, the checkpoint is older than the final model ``M``, and an
identical rerun trains on from that stale state and overwrites the finished model. This module
decides from the files alone (no ParlAI import; the train-loop patch in
:func:`parlai_conkd.compat.resumable_train_loop` applies the decision):

- a run is *finished* when ``M.trainstats`` says its training loop ended: the key ``finished``
  that the patched loop writes as soon as the loop stops, or, for runs made without it, ParlAI's
  own ``final_valid_report`` (written only after the final evaluation);
- a finished run is left alone (:data:`FINISHED`) when a rerun keeps every stopping option
  (``LIMITS``) as recorded, or when a limit is still reached by the recorded counters; raising
  the limit that stopped it (e.g. a higher ``--max-train-steps``) continues training from the
  final model ``M`` (:data:`FROM_MODEL_FILE`), never from an older checkpoint;
- a caller who names the checkpoint (``--init-model M.checkpoint`` with ``--load-from-checkpoint``,
  as ParlAI's own tests and scripts do to resume explicitly) gets ParlAI's rule, finished or not;
- everything else is ParlAI's own rule (:data:`AS_PARLAI`): resume from ``M.checkpoint`` when it
  exists, else from ``M``, else from scratch.

The train-loop patch asks this only for this project's agents (``compat.conkd_agent``); every
other agent keeps ParlAI's rule unconditionally.

Files read: ``M.trainstats`` and ``M.checkpoint.trainstats`` (ParlAI's JSON: ``parleys``,
``train_steps``, ``total_epochs``, ``train_time`` in seconds, ``impatience``, ...).
"""

import json
import os
from dataclasses import dataclass, field
from typing import Dict, Optional

from parlai_conkd.fileio import atomic_write

#: Options that end a training run; a rerun that changes none of them asks for the same run.
LIMITS = (
    'max_train_steps',
    'num_epochs',
    'max_train_time',
    'validation_patience',
    'validation_cutoff',
    'validation_metric',
    'validation_metric_mode',
)

AS_PARLAI = 'as_parlai'
FROM_MODEL_FILE = 'from_model_file'
FINISHED = 'finished'


@dataclass
class Plan:
    """``action``: AS_PARLAI, FROM_MODEL_FILE or FINISHED; ``reason``: one sentence for the log."""

    action: str
    reason: str = ''
    stats: Dict = field(default_factory=dict)


def read_stats(path: str) -> Optional[Dict]:
    """A ``.trainstats`` file as a dict; None when it is absent or unreadable (a torn write)."""
    try:
        with open(path, encoding='utf-8') as f:
            stats = json.load(f)
    except (OSError, ValueError):
        return None
    return stats if isinstance(stats, dict) else None


def limits_of(opt) -> Dict:
    return {key: opt.get(key) for key in LIMITS}


def finished_record(opt, state: Dict) -> Dict:
    """What the patched loop stores under ``finished`` when its training loop ends."""
    return {
        'limits': limits_of(opt),
        'reason': reached_limit(state, opt) or 'stopped by the agent',
    }


def is_finished(stats: Optional[Dict]) -> bool:
    return bool(stats) and (
        bool(stats.get('finished')) or bool(stats.get('final_valid_report'))
    )


def _positive(opt, key) -> Optional[float]:
    value = opt.get(key)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def reached_limit(stats: Dict, opt) -> Optional[str]:
    """The stopping option that the counters in ``stats`` already meet under ``opt``, as text."""
    checks = (
        ('max_train_steps', 'train_steps', '--max-train-steps'),
        ('num_epochs', 'total_epochs', '--num-epochs'),
        ('max_train_time', 'train_time', '--max-train-time'),
        ('validation_patience', 'impatience', '--validation-patience'),
    )
    for key, counter, flag in checks:
        limit = _positive(opt, key)
        value = stats.get(counter)
        if limit is not None and isinstance(value, (int, float)) and value >= limit:
            return f'{counter} {value:g} reached {flag} {limit:g}'
    return None


def _same_limits(recorded: Dict, opt) -> bool:
    def norm(value):
        try:
            return float(value)
        except (TypeError, ValueError):
            return value

    return all(
        norm(recorded.get(k)) == norm(opt.get(k)) for k in LIMITS if k in recorded
    )


def _progress(stats: Optional[Dict]):
    if not stats:
        return (-1, -1.0)
    return (stats.get('parleys') or 0, stats.get('train_time') or 0.0)


def plan(opt) -> Plan:
    """How ``train_model`` with ``opt`` should start, given the files next to ``--model-file``."""
    model_file = opt.get('model_file')
    if not model_file or not os.path.isfile(model_file):
        return Plan(AS_PARLAI)
    checkpoint = model_file + '.checkpoint'
    if opt.get('load_from_checkpoint') and opt.get('init_model') == checkpoint:
        return Plan(AS_PARLAI, f'resuming from {checkpoint}, named as --init-model')
    stats = read_stats(model_file + '.trainstats')
    if not is_finished(stats):
        return Plan(AS_PARLAI)
    if (
        opt.get('load_from_checkpoint')
        and os.path.isfile(checkpoint)
        and _progress(read_stats(checkpoint + '.trainstats')) > _progress(stats)
    ):
        # the finished run was continued and interrupted: its checkpoint is the newest state
        return Plan(AS_PARLAI)
    record = stats.get('finished') or {}
    reached = reached_limit(stats, opt)
    if reached:
        return Plan(FINISHED, reached, stats)
    if record.get('limits') and _same_limits(record['limits'], opt):
        return Plan(FINISHED, record.get('reason') or 'stopped', stats)
    return Plan(
        FROM_MODEL_FILE,
        f'continuing the finished run from {model_file} '
        f'(train_steps {stats.get("train_steps", 0)}) under raised limits',
        stats,
    )


def finished_message(model_file: str, plan_: Plan) -> str:
    return (
        f'{model_file}: training already finished ({plan_.reason}); the model is left as it is. '
        'To train it further, rerun with a higher limit (--max-train-steps, --num-epochs, '
        '--max-train-time or --validation-patience): training then continues from this final '
        f'model. To start over, pass another --model-file or remove {model_file} and its '
        f'{os.path.basename(model_file)}.* files.'
    )


def mark_finished(stats_path: str, record: Dict) -> None:
    """Add ``finished: record`` to the ``.trainstats`` ParlAI just wrote (atomic replace)."""
    stats = read_stats(stats_path)
    if stats is None:
        return
    stats['finished'] = record
    with atomic_write(stats_path) as f:
        json.dump(stats, f, indent=4)
