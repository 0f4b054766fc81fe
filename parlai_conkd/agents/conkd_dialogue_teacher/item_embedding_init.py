"""Item token embeddings started from the rec teacher's item vectors (``--item-embeddings-from``).

Beyond the paper (project README, "Item embeddings from the rec teacher"): the transformer
backbone's item rows start where the recommender put the items, so the generator begins with the
rec teacher's geometry of the catalog; the math is :mod:`parlai_conkd.item_embeddings`. This is
the agent glue: the options and loading the recommender, which only training from scratch needs
(issue #23: the generator class itself no longer imports the rec teacher).
"""

import torch
from parlai.utils import logging

from parlai_conkd.item_embeddings import fit_to_embeddings

from .dictionary import resolve_catalog


class ItemEmbeddingsMixin:
    """Options and :meth:`_init_item_embeddings` for a generator with ``model.embeddings``."""

    @classmethod
    def add_cmdline_args(cls, parser, partial_opt=None):
        super().add_cmdline_args(parser, partial_opt=partial_opt)
        group = parser.add_argument_group('Item embeddings from the rec teacher')
        group.add_argument(
            '--item-embeddings-from',
            type=str,
            default=None,
            help='A conkd_rec_teacher model file or zoo: path whose item vectors initialise the '
            'item token embeddings when training from scratch (either backbone; see '
            'parlai_conkd/item_embeddings.py).',
        )
        group.add_argument(
            '--freeze-item-embeddings',
            type='bool',
            default=False,
            help='Keep the item token embeddings fixed while training (with --item-embeddings-from: '
            'the rec teacher\'s geometry stays; the model learns where in it to point).',
        )
        return parser

    def _catalog_token_ids(self) -> torch.Tensor:
        """Vocabulary ids of the catalog's item tokens (before ``item_token_ids`` exists)."""
        return torch.tensor(
            [self.dict.tok2ind[token] for token in resolve_catalog(self.opt).tokens()]
        )

    def _rec_item_vectors(self):
        """``[N, d_rec]`` item vectors of the ``--item-embeddings-from`` recommender, its path."""
        from parlai_conkd.agents.conkd_rec_teacher.conkd_rec_teacher import (
            ConkdRecTeacherAgent,
        )
        from parlai_conkd.agents.frozen import load_frozen_teacher

        catalog = resolve_catalog(self.opt)
        recommender, path = load_frozen_teacher(
            self.opt,
            '--item-embeddings-from',
            ConkdRecTeacherAgent,
            {'conkd_rec_teacher'},
            catalog,
        )
        with torch.no_grad():
            vectors = recommender.model.context_representations()[: len(catalog)]
        return vectors.detach().cpu(), path

    def _hf_item_rows(self):
        """HF backbone: ``dim -> {vocab id: row}``, the recommender's item vectors mapped to
        ``dim`` by the fitted projection with unit entry std (``causal_lm.init_new_rows`` centres
        and scales them to the LM's own rows)."""

        def rows(dim):
            vectors, path = self._rec_item_vectors()
            fitted = fit_to_embeddings(
                vectors, dim, std=1.0, seed=self.opt.get('seed') or 0
            )
            logging.info(
                f'item token embeddings initialised from {path} ({vectors.size(1)}-d item vectors)'
            )
            ids = self._catalog_token_ids().tolist()
            return {vocab_id: fitted[i] for i, vocab_id in enumerate(ids)}

        return rows

    @torch.no_grad()
    def _init_item_embeddings(self, model) -> None:
        """Item rows of the token embeddings from the ``--item-embeddings-from`` recommender's
        item vectors (see parlai_conkd/item_embeddings.py)."""
        catalog = resolve_catalog(self.opt)
        vectors, path = self._rec_item_vectors()
        table = model.embeddings.weight
        ids = torch.tensor(
            [self.dict.tok2ind[token] for token in catalog.tokens()],
            device=table.device,
        )
        rows = fit_to_embeddings(
            vectors,
            table.size(1),
            std=table.size(1) ** -0.5,
            seed=self.opt.get('seed') or 0,
        )
        table[ids] = rows.to(table)
        logging.info(
            f'item token embeddings initialised from {path} ({vectors.size(1)}-d item vectors)'
        )
