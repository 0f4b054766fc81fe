"""Relational graph convolution, attention pooling and the item recommender. Plain torch.

The reference design is KBRD (Chen et al. 2019): one R-GCN layer with basis decomposition
(Schlichtkrull et al. 2018) over the movie KG gives every entity a representation; the entities
of the dialogue so far are pooled by self-attention into a user vector; every catalog item is
scored by ``user . item_representation + item_bias``. Without a KG the item representations are
free embeddings (same pooling and scoring).

No torch_geometric: the convolution is one sparse-dense matrix product per call.
"""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


class RelationalGraphConv(nn.Module):
    """One R-GCN layer: ``h'_i = sum_r sum_{j in N_r(i)} norm_ij W_r h_j`` (+ bias).

    The self-connection ``W_0 h_i`` of the paper is expected as a self-loop relation in the edge
    list (see :mod:`parlai_conkd.knowledge_graph`), so every relation is treated the same way.
    With ``num_bases`` > 0, ``W_r = sum_b coeff[r, b] basis[b]``; with ``num_bases`` = 0 every
    relation has its own full matrix.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_relations: int,
        num_bases: int = 0,
        bias=True,
    ):
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.num_relations = num_relations
        self.decomposed = 0 < num_bases < num_relations
        num_matrices = num_bases if self.decomposed else num_relations
        self.basis = nn.Parameter(torch.empty(num_matrices, in_dim, out_dim))
        self.coeff = (
            nn.Parameter(torch.empty(num_relations, num_matrices))
            if self.decomposed
            else None
        )
        self.bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.xavier_uniform_(self.basis.view(-1, self.in_dim, self.out_dim))
        if self.coeff is not None:
            nn.init.xavier_uniform_(self.coeff)

    def relation_weights(self) -> torch.Tensor:
        """``[R, in, out]``: every relation's matrix (for inspection and tests)."""
        if self.coeff is None:
            return self.basis
        return torch.einsum('rb,bio->rio', self.coeff, self.basis)

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """``x``: [num_src_nodes, in]; ``adjacency`` from :func:`relation_adjacency`.

        Returns ``[num_dst, out]``. Rows with no incoming edge get only the bias.
        """
        num_dst = adjacency.size(0) // self.num_relations
        # The adjacency is constant, so the sparse product only needs a gradient for x.
        per_relation = torch.sparse.mm(adjacency, x).view(
            self.num_relations, num_dst, self.in_dim
        )
        out = torch.einsum('rni,rio->no', per_relation, self.relation_weights())
        if self.bias is not None:
            out = out + self.bias
        return out


def relation_adjacency(src, dst, edge_type, edge_norm, num_relations, num_dst, num_src):
    """Stacked normalised adjacency ``[num_relations * num_dst, num_src]`` (sparse, coalesced).

    Row ``r * num_dst + i`` holds ``norm_e`` at column ``src_e`` for every edge ``e`` of relation
    ``r`` entering ``i``: multiplying it by node features gives each relation's mean message.
    """
    rows = edge_type * num_dst + dst
    return torch.sparse_coo_tensor(
        torch.stack([rows, src]),
        edge_norm.to(torch.float),
        (num_relations * num_dst, num_src),
        check_invariants=False,
    ).coalesce()


class AttentionPooling(nn.Module):
    """KBRD's self-attention pooling: ``a = softmax(w2 . tanh(W1 h_l))``, ``u = sum_l a_l h_l``.

    Padding positions get no weight; an example with no position at all gets the zero vector
    (KBRD's choice for a dialogue with no entity yet: scores then reduce to the item biases).
    """

    def __init__(self, dim: int, hidden: Optional[int] = None):
        super().__init__()
        hidden = hidden or dim
        self.project = nn.Linear(dim, hidden, bias=False)
        self.score = nn.Linear(hidden, 1, bias=False)

    def attention(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``h``: [B, L, dim], ``mask``: [B, L] (True = real) -> weights [B, L], rows sum to 1 or 0."""
        logits = self.score(torch.tanh(self.project(h))).squeeze(-1)
        logits = logits.masked_fill(~mask, float('-inf'))
        # an all-padding row would be softmax(-inf...) = NaN; give it zeros instead
        any_real = mask.any(dim=1, keepdim=True)
        logits = torch.where(any_real, logits, torch.zeros_like(logits))
        return torch.softmax(logits, dim=1) * mask

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.bmm(self.attention(h, mask).unsqueeze(1), h).squeeze(1)


def incoming_edges(targets, src, dst, edge_type, edge_norm, num_nodes):
    """The edges entering ``targets`` only, for a layer whose outputs are needed at ``targets``.

    Returns ``(unique_targets, position, src, dst, edge_type, edge_norm)``: ``dst`` renumbered to
    rows of ``unique_targets`` and ``position[k]`` = the row of ``targets[k]`` (targets may repeat,
    e.g. two catalog items that are the same KG movie). ``src`` keeps global node ids. A one-layer
    convolution then costs in-edges of the targets, not the whole graph.
    """
    unique_targets, position = torch.unique(targets, return_inverse=True)
    row_of_node = torch.full((num_nodes,), -1, dtype=torch.long, device=targets.device)
    row_of_node[unique_targets] = torch.arange(
        unique_targets.numel(), device=targets.device
    )
    keep = row_of_node[dst] >= 0
    return (
        unique_targets,
        position,
        src[keep],
        row_of_node[dst[keep]],
        edge_type[keep],
        edge_norm[keep],
    )


class ItemCooccurrence(nn.Module):
    """Item-item co-occurrence in the training dialogues as a score term (beyond KBRD).

    ``C[a, b]`` counts the training dialogues that name both items a and b (either speaker,
    a != b). For a context with items ``c_1..c_m`` it adds ``w * log(1 + sum_j C[c_j, i])`` to
    item i's score, ``w`` learned. Why: with ~2k dialogues most item embeddings see few
    examples, while "people who talk about X also talk about Y" is direct evidence; measured on
    the shared data it adds about 0.02-0.04 R@10 to the graph model (projects/conkd/README.md).

    ``counts``: sparse ``[N, N]`` (symmetric). A training example must not see its own dialogue's
    pairs: :func:`leave_one_out` gives the part of the sum to subtract.
    """

    def __init__(self, counts: torch.Tensor, weight: float = 1.0):
        super().__init__()
        self.num_items = counts.size(0)
        self.register_buffer('counts', counts.coalesce(), persistent=False)
        self.weight = nn.Parameter(torch.tensor(float(weight)))

    def totals(self, context: torch.Tensor) -> torch.Tensor:
        """``sum_j C[c_j, :]`` for contexts of context ids padded with -1 (ids >= N, e.g. text
        entities, are not items and are ignored): ``[B, N]``."""
        ids = torch.where(
            (context >= 0) & (context < self.num_items),
            context,
            torch.full_like(context, self.num_items),
        )
        indicator = torch.zeros(
            context.size(0), self.num_items + 1, device=context.device
        )
        indicator.scatter_(1, ids, 1.0)
        return torch.sparse.mm(self.counts, indicator[:, : self.num_items].t()).t()

    def forward(
        self, context: torch.Tensor, leave_out: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        totals = self.totals(context)
        if leave_out is not None:
            totals = (totals - leave_out).clamp(min=0)
        return self.weight * torch.log1p(totals)


def cooccurrence_counts(dialogue_items, num_items: int) -> torch.Tensor:
    """Sparse symmetric ``[N, N]`` counts of item pairs named in the same dialogue.

    ``dialogue_items``: one list of catalog indices per dialogue (duplicates ignored).
    """
    rows, cols = [], []
    for items in dialogue_items:
        unique = sorted(set(int(i) for i in items))
        for a in unique:
            for b in unique:
                if a != b:
                    rows.append(a)
                    cols.append(b)
    indices = torch.tensor([rows, cols], dtype=torch.long).view(2, -1)
    values = torch.ones(indices.size(1))
    return torch.sparse_coo_tensor(
        indices, values, (num_items, num_items), check_invariants=True
    ).coalesce()


def leave_one_out(context_items, dialogue_items, num_items: int) -> torch.Tensor:
    """What one dialogue adds to :meth:`ItemCooccurrence.totals` of a context from it: ``[N]``.

    For each item j of the dialogue, the number of context items other than j (each such pair
    was counted once by that dialogue). ``context_items`` must be items of the dialogue.
    """
    own = torch.zeros(num_items)
    dialogue = sorted(set(int(i) for i in dialogue_items))
    context = sorted(set(int(i) for i in context_items))
    if dialogue and context:
        own[dialogue] = float(len(context))
        own[context] -= 1.0
    return own


class KnowledgeRecommender(nn.Module):
    """Scores every catalog item given the items/entities mentioned in each context.

    Contexts are ``LongTensor[B, L]`` of *context ids* padded with -1: ids ``0..N-1`` are the
    catalog items (catalog index order), ids ``N..N+M-1`` the extra KG entities of
    ``extra_nodes`` (e.g. genres or people named in the text).

    Args:
        num_items: catalog size N.
        item_nodes: ``LongTensor[N]``: graph node of every catalog item (KG variant only).
        graph: dict with ``src, dst, edge_type, edge_norm`` (``[E]`` tensors), ``num_nodes``,
            ``num_relations`` (see :mod:`parlai_conkd.knowledge_graph`), or None for the no-KG
            variant (a free embedding per item, no extra entities).
        extra_nodes: ``LongTensor[M]`` graph nodes usable as extra context entities (KG only).
        dim, num_bases, dropout: sizes; KBRD uses dim 128 and 8 bases.
        cooccurrence: optional sparse ``[N, N]`` counts (:class:`ItemCooccurrence`).

    ``temperature`` (a buffer, saved with the model, 1 by default) divides the scores in
    :meth:`item_log_probs`: the distribution a student distils (fitted on the validation fold by
    the agent, :mod:`parlai_conkd.calibration`).
    """

    def __init__(
        self,
        num_items,
        item_nodes=None,
        graph=None,
        extra_nodes=None,
        dim=128,
        num_bases=8,
        dropout=0.0,
        cooccurrence=None,
    ):
        super().__init__()
        self.register_buffer('temperature', torch.ones(()))
        self.cooccurrence = (
            ItemCooccurrence(cooccurrence) if cooccurrence is not None else None
        )
        self.num_items = num_items
        self.use_kg = graph is not None
        if self.use_kg:
            extra_nodes = (
                extra_nodes
                if extra_nodes is not None
                else torch.zeros(0, dtype=torch.long)
            )
            targets = torch.cat([item_nodes.long(), extra_nodes.long()])
            unique, position, src, dst, edge_type, edge_norm = incoming_edges(
                targets,
                graph['src'],
                graph['dst'],
                graph['edge_type'],
                graph['edge_norm'],
                graph['num_nodes'],
            )
            self.num_context_ids = targets.numel()
            self.register_buffer('target_rows', position, persistent=False)
            self.register_buffer(
                'adjacency',
                relation_adjacency(
                    src,
                    dst,
                    edge_type,
                    edge_norm,
                    graph['num_relations'],
                    unique.numel(),
                    graph['num_nodes'],
                ),
                persistent=False,
            )
            self.node_embeddings = nn.Embedding(graph['num_nodes'], dim)
            self.conv = RelationalGraphConv(dim, dim, graph['num_relations'], num_bases)
        else:
            self.num_context_ids = num_items
            self.node_embeddings = nn.Embedding(num_items, dim)
            self.conv = None
        nn.init.normal_(self.node_embeddings.weight, std=1.0 / math.sqrt(dim))
        self.pool = AttentionPooling(dim)
        self.item_bias = nn.Parameter(torch.zeros(num_items))
        self.dropout = nn.Dropout(dropout)
        self._cached = None

    # -------------------------------------------------------------- representations
    def _parameter_versions(self):
        # every in-place update (optimizer step, load_state_dict) bumps a tensor's _version
        return tuple((id(p), p._version) for p in self.parameters())

    def context_representations(self) -> torch.Tensor:
        """``[N + M, dim]``: every context id's vector after the graph convolution.

        Under ``torch.no_grad()`` the result is cached until a parameter changes (optimizer step,
        ``load_state_dict``), so a frozen teacher pays for the graph pass once, not per call.
        """
        cacheable = not torch.is_grad_enabled()
        if (
            cacheable
            and self._cached is not None
            and self._cached[0] == self._parameter_versions()
        ):
            return self._cached[1]
        if self.use_kg:
            rows = self.conv(self.node_embeddings.weight, self.adjacency)
            reps = rows[self.target_rows]
        else:
            reps = self.node_embeddings.weight
        if not cacheable:
            self._cached = None
            return reps
        self._cached = (self._parameter_versions(), reps.detach())
        return self._cached[1]

    def user_representation(
        self, reps: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """``context``: [B, L] context ids padded with -1 -> [B, dim]."""
        mask = context >= 0
        h = reps[context.clamp(min=0)]
        return self.pool(self.dropout(h), mask)

    @torch.no_grad()
    def item_log_probs(
        self,
        context: torch.Tensor,
        exclude: Optional[torch.Tensor] = None,
        temperature: Optional[float] = None,
        leave_out: Optional[torch.Tensor] = None,
    ):
        """``log p(item | context) = log_softmax(scores / T)``, ``[B, N]``, without gradient and
        without dropout.

        ``exclude``: optional ``BoolTensor[B, N]``; those items get probability 0 (``-inf``) and
        the rest is renormalised. ``temperature``: T (default: the fitted ``self.temperature``).
        ``leave_out``: see :meth:`forward`. The graph pass is cached across calls (see
        :meth:`context_representations`), so this costs one gather, one pooling and one
        ``[B, dim] x [dim, N]`` product per call.
        """
        was_training = self.dropout.training
        self.dropout.train(False)
        try:
            scores = self(context, leave_out=leave_out)
        finally:
            self.dropout.train(was_training)
        if exclude is not None:
            scores = scores.masked_fill(exclude, float('-inf'))
        temperature = (
            float(self.temperature) if temperature is None else float(temperature)
        )
        return torch.log_softmax(scores / temperature, dim=-1)

    def forward(
        self, context: torch.Tensor, leave_out: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Item scores ``[B, N]`` (logits) for contexts of context ids padded with -1.

        ``leave_out``: ``[B, N]`` co-occurrence counts to subtract (an example's own training
        dialogue, :func:`leave_one_out`); ignored without the co-occurrence term.
        """
        if context.numel() and int(context.max()) >= self.num_context_ids:
            raise IndexError(
                f'context id {int(context.max())} >= {self.num_context_ids} (items + extra entities)'
            )
        reps = self.context_representations()
        user = self.user_representation(reps, context)
        scores = F.linear(user, reps[: self.num_items], self.item_bias)
        if self.cooccurrence is not None:
            scores = scores + self.cooccurrence(context, leave_out)
        return scores
