"""Where the catalog's N items sit in a generator's vocabulary of size V: one type for everyone.

Items are tokens of the generator's vocabulary (ConKD, section 3), so every piece of code that
mixes item and word distributions needs "the vocabulary id of item n": the distillation target and
the fused loss (``fast_target``, ``fused_loss``), item-aware decoding (``decoding``, the searches),
the response metrics and the interactive panel. :class:`ItemVocab` is that mapping, built once by
the generator from its dictionary (issue #23: it replaces ``fast_target.ItemSlots`` and
``decoding.ItemVocab``, one concept under two names).

The dictionaries of this project add the item tokens as one contiguous block (the transformer
backbone's word dictionary sorts them together, the HF backbone adds them in order), so item
slices are views and no gather is needed; any other layout falls back to ``index_select`` /
``index_add_``.
"""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class ItemVocab:
    """``ids``: ``LongTensor[N]``, the vocabulary id of catalog item n at position n;
    ``vocab_size``: V; ``block``: ``slice(start, start + N)`` when the ids are contiguous.
    """

    ids: torch.Tensor
    vocab_size: int
    block: Optional[slice] = None

    @classmethod
    def of(cls, ids: torch.Tensor, vocab_size: Optional[int] = None) -> 'ItemVocab':
        """From the item token ids (any integer dtype); ``vocab_size`` defaults to max id + 1."""
        ids = ids.long()
        if vocab_size is None:
            vocab_size = int(ids.max()) + 1 if ids.numel() else 0
        block = None
        if ids.numel() and bool((ids[1:] - ids[:-1] == 1).all()):
            block = slice(int(ids[0]), int(ids[0]) + ids.numel())
        return cls(ids=ids, vocab_size=vocab_size, block=block)

    def __len__(self) -> int:
        return self.ids.numel()

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """The item entries of ``x``: ``[..., V] -> [..., N]`` (a view for a contiguous block)."""
        if self.block is not None:
            return x[..., self.block]
        return x.index_select(-1, self.ids.to(x.device))

    def put(self, x: torch.Tensor, values: torch.Tensor) -> None:
        """Write ``[..., N]`` values into the item entries of ``x`` ``[..., V]`` in place."""
        if self.block is not None:
            x[..., self.block] = values
        else:
            x[..., self.ids.to(x.device)] = values

    def subtract_outer_(
        self, x: torch.Tensor, coef: torch.Tensor, rec: torch.Tensor
    ) -> None:
        """``x[b, t, ids[n]] -= coef[b, t] * rec[b, n]`` in place (x [B,T,V], coef [B,T], rec
        [B,N])."""
        if self.block is not None:
            # an in-place rank-1 update per row: no [B, T, N] temporary
            x[..., self.block].baddbmm_(coef.unsqueeze(-1), rec.unsqueeze(1), alpha=-1)
        else:
            x.index_add_(
                -1,
                self.ids.to(x.device),
                coef.unsqueeze(-1) * rec.unsqueeze(1),
                alpha=-1,
            )

    def index_of(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Catalog index of each vocabulary id, -1 for words (any shape)."""
        if self.block is not None:
            inside = (token_ids >= self.block.start) & (token_ids < self.block.stop)
            return torch.where(
                inside, token_ids - self.block.start, torch.full_like(token_ids, -1)
            )
        lookup = torch.full(
            (self.vocab_size,), -1, dtype=torch.long, device=token_ids.device
        )
        lookup[self.ids.to(token_ids.device)] = torch.arange(
            self.ids.numel(), device=token_ids.device
        )
        return lookup[token_ids.clamp(0, self.vocab_size - 1)]

    def is_item(self, token_ids: torch.Tensor) -> torch.Tensor:
        """``BoolTensor`` of ``token_ids``' shape: which ids are item tokens."""
        return self.index_of(token_ids) >= 0
