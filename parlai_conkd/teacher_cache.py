"""A persistent cache of ConKD teacher outputs, so teachers run once per training example.

What is stored per example (keyed by the example's token ids: context + target):

- the dialogue teacher's top-k next-token log-probabilities per target step (values + ids),
- the exact gate lambda_t per step (the teacher's full item mass, not the top-k's),
- the recommendation teacher's item log-probabilities over the whole catalog (float16), or its
  top k when asked (``k_rec > 0``).

What is approximated: the dialogue teacher's distribution is truncated to its top k and
renormalised (:func:`parlai_conkd.distill.from_topk` is the dense equivalent), i.e. the student
distils it conditioned on its top k (measured on the shared train fold: the top 64 hold 0.89 of
its mass on average). The rec teacher is kept whole by default: it is flat (mean entropy 7.2 nats
over 6,924 items), its top 64 hold 0.35 of its mass on average (10,004 train examples) and its top
2,048 about 0.82, so a top-64 cut sharpened its target about threefold (issue #26). It is stored as
float16 log-probabilities and renormalised on use (under 1% relative error per probability above
1e-7). The gate is exact.

Safety: the cache file records a key made of the teacher files' sha256, the data version and the
vectorisation settings. ``TeacherCache.open`` refuses a file whose key differs (a stale cache is never
reused) and names both keys. Writes are atomic (temp file + rename); the file gets the mode the
umask gives every other output.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import torch

from parlai_conkd.errors import ModelFileError, UserError
from parlai_conkd.fileio import atomic_write

FORMAT_VERSION = 1


class StaleCacheError(UserError, RuntimeError):
    pass


def cache_key(**parts) -> Dict[str, str]:
    """The identity of a cache: every part as a string, sorted (shown in errors)."""
    return {name: str(value) for name, value in sorted(parts.items())}


def example_key(context_ids: Sequence[int], target_ids: Sequence[int]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(
        json.dumps([list(map(int, context_ids)), list(map(int, target_ids))]).encode()
    )
    return digest.hexdigest()


@dataclass
class CachedTargets:
    """One example's stored teacher outputs (CPU tensors)."""

    dial_values: torch.Tensor  # [T, k] float32 log-probs
    dial_indices: torch.Tensor  # [T, k] int32 vocab ids
    gate: torch.Tensor  # [T] float32
    #: [k_rec] float32 log-probs, or [N] float16: the whole catalog
    rec_values: torch.Tensor
    #: [k_rec] int32 item indices; empty: the whole catalog, in catalog order
    rec_indices: torch.Tensor


class TeacherCache:
    def __init__(
        self,
        path: str,
        key: Dict[str, str],
        entries: Optional[Dict[str, CachedTargets]] = None,
    ):
        self.path = path
        self.key = key
        self.entries: Dict[str, CachedTargets] = entries or {}
        self.dirty = False
        self.hits = 0
        self.misses = 0

    @classmethod
    def open(cls, path: str, key: Dict[str, str]) -> 'TeacherCache':
        """Load ``path`` if it exists and matches ``key``; a new empty cache if it does not exist."""
        if not os.path.exists(path):
            return cls(path, key)
        try:
            payload = torch.load(path, map_location='cpu', weights_only=False)
            if not isinstance(payload, dict):
                raise TypeError(f'holds a {type(payload).__name__}')
        except (
            Exception
        ) as exc:  # our own file: any failure to read it means it is damaged
            raise ModelFileError(
                f'{path}: the teacher cache is empty, truncated or damaged '
                f'({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else "unreadable"}); '
                'delete it: the next training run rebuilds it from the teachers'
            ) from None
        if payload.get('format') != FORMAT_VERSION:
            raise StaleCacheError(
                f'{path}: teacher cache format {payload.get("format")} != {FORMAT_VERSION}; delete it'
            )
        if payload['key'] != key:
            diff = {
                k: (payload['key'].get(k), key.get(k))
                for k in set(key) | set(payload['key'])
                if payload['key'].get(k) != key.get(k)
            }
            raise StaleCacheError(
                f'{path} was built for other teachers/data: {diff} (stored, current). '
                'Delete it or point --teacher-cache to another file.'
            )
        entries = {k: CachedTargets(**v) for k, v in payload['entries'].items()}
        return cls(path, key, entries)

    def get(self, key: str) -> Optional[CachedTargets]:
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, entry: CachedTargets) -> None:
        self.entries[key] = entry
        self.dirty = True

    def save(self) -> None:
        """Atomic write; no-op when nothing changed."""
        if not self.dirty:
            return
        with atomic_write(self.path, 'wb') as f:
            torch.save(
                {
                    'format': FORMAT_VERSION,
                    'key': self.key,
                    'entries': {k: vars(v) for k, v in self.entries.items()},
                },
                f,
            )
        self.dirty = False

    def __len__(self) -> int:
        return len(self.entries)


def stack_targets(entries: Sequence[CachedTargets], mask: torch.Tensor):
    """Dense teacher targets for a batch from cached entries, placed at the real steps of ``mask``.

    Entries hold only real (non-padding) steps in order, so left- and right-padded batches both
    work. Returns ``(dial: distill.TopK [B,T,k], gate [B,T], rec)``: the top-k slices as stored
    (the loss uses them sparse), ``rec`` a ``distill.TopK [B,k_rec]`` or, for whole-catalog
    entries, dense log-probabilities ``[B,N]``; padding steps get an arbitrary valid distribution
    (they are masked out of the loss).
    """
    from parlai_conkd.distill import TopK

    batch, steps = mask.shape
    k = entries[0].dial_values.size(-1)
    values = torch.zeros((batch, steps, k))
    # distinct ids keep padding rows well-formed
    indices = torch.arange(k).repeat(batch, steps, 1)
    gate = torch.zeros(batch, steps)
    for b, entry in enumerate(entries):
        positions = mask[b].nonzero(as_tuple=True)[0].cpu()
        if len(positions) != entry.dial_values.size(0):
            raise StaleCacheError(
                f'cached entry has {entry.dial_values.size(0)} steps, batch row has {len(positions)}'
            )
        values[b, positions] = entry.dial_values.float()
        indices[b, positions] = entry.dial_indices.long()
        gate[b, positions] = entry.gate
    dial = TopK(values, indices)
    rec_values = torch.stack([e.rec_values.float() for e in entries])
    if all(e.rec_indices.numel() == 0 for e in entries):
        # whole-catalog entries: dense [B, N] log-probabilities, renormalised after float16
        return dial, gate, rec_values.log_softmax(dim=-1)
    rec_indices = torch.stack([e.rec_indices.long() for e in entries])
    return dial, gate, TopK(rec_values, rec_indices)


def topk_log_probs(log_probs: torch.Tensor, k: int):
    """``(values, indices)`` [..., min(k, size)]: the k most likely entries of a distribution [..., size]."""
    return log_probs.topk(min(k, log_probs.size(-1)), dim=-1)


def make_entry(
    dial_log_probs: torch.Tensor,
    gate: torch.Tensor,
    rec_log_probs: torch.Tensor,
    mask: torch.Tensor,
    k: int,
    k_rec: int,
) -> CachedTargets:
    """Compress one example's live teacher outputs ([T,V], [T], [N], [T] mask) for the cache."""
    real = mask.bool()
    return entry_from_real_steps(
        dial_log_probs[real], gate[real], rec_log_probs, k, k_rec
    )


def entry_from_real_steps(
    dial_log_probs: torch.Tensor,
    gate: torch.Tensor,
    rec_log_probs: torch.Tensor,
    k: int,
    k_rec: int,
) -> CachedTargets:
    """:func:`make_entry` from the example's real (non-padding) steps only: ``[t,V]``, ``[t]``
    and ``[N]``. ``k_rec <= 0``: the rec teacher's whole distribution (float16, no indices).
    """
    dial_values, dial_indices = topk_log_probs(dial_log_probs, k)
    if k_rec > 0:
        rec_values, rec_indices = topk_log_probs(rec_log_probs, k_rec)
        rec_values = rec_values.detach().cpu().float()
    else:
        rec_values = rec_log_probs.detach().cpu().half()
        rec_indices = torch.empty(0, dtype=torch.int32)
    return CachedTargets(
        dial_values=dial_values.detach().cpu().float(),
        dial_indices=dial_indices.detach().cpu().int(),
        gate=gate.detach().cpu().float(),
        rec_values=rec_values,
        rec_indices=rec_indices.detach().cpu().int(),
    )
