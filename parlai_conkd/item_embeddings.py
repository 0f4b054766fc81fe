"""Item token embeddings that start from the recommendation teacher's item vectors (beyond the paper).

Why (issue [recommending-replies]): at an item slot a generator scores item i by ``h . E_i`` with
its (tied) token embeddings E. Trained from random E on ~2k dialogues, most of the 6,924 item rows
see a handful of examples, and the student's ranking at the slot stays far below the rec
teacher's however long it distils. The rec teacher's vectors r_i (R-GCN over the movie KG) already
place similar films close together, and its own score is ``u . r_i`` with u pooled from the
context items' r_c. Starting E_i from r_i gives the generator that geometry from step one: a head
that attends to the context's item tokens can reproduce the teacher's similarity.

``fit_to_embeddings`` maps ``[N, d_rec]`` vectors to ``[N, d]`` rows for an embedding table whose
entries were drawn with standard deviation ``std`` (ParlAI: ``d ** -0.5``): a random orthonormal
map (inner products kept up to one scale factor when ``d_rec <= d``; a random projection otherwise),
then one global scale so the rows have the table's typical entry size. Plain torch.
"""

import torch


def fit_to_embeddings(
    vectors: torch.Tensor, dim: int, std: float, seed: int = 0
) -> torch.Tensor:
    """``[N, d_rec] -> [N, dim]`` rows with entry standard deviation ``std`` (see module doc).

    Raises ``ValueError`` for an empty input or a non-positive ``dim``/``std``.
    """
    if vectors.dim() != 2 or vectors.numel() == 0:
        raise ValueError(
            f'expected [N, d] item vectors, got shape {tuple(vectors.shape)}'
        )
    if dim <= 0 or std <= 0:
        raise ValueError(f'dim and std must be positive (got {dim}, {std})')
    generator = torch.Generator().manual_seed(seed)
    d_rec = vectors.size(1)
    gaussian = torch.randn(
        max(d_rec, dim), min(d_rec, dim), generator=generator, dtype=torch.float64
    )
    q, _ = torch.linalg.qr(gaussian)  # orthonormal columns
    basis = q.t() if d_rec <= dim else q  # [d_rec, dim]
    centred = vectors.double() - vectors.double().mean(dim=0, keepdim=True)
    mapped = centred @ basis
    scale = std / mapped.std().clamp_min(1e-12)
    return (mapped * scale).float()


def freeze_rows(weight: torch.nn.Parameter, rows: torch.Tensor) -> None:
    """Zero the gradient of ``weight[rows]`` on every backward pass (the rows never change under
    any optimiser without weight decay; ParlAI's Adam here has none by default)."""
    mask = torch.ones(weight.size(0), 1, dtype=weight.dtype, device=weight.device)
    mask[rows.to(weight.device)] = 0
    weight.register_hook(lambda grad: grad * mask.to(grad))
