"""Item token embeddings started from the rec teacher's item vectors (parlai_conkd/item_embeddings.py)."""

import pytest
import torch

from parlai_conkd.item_embeddings import fit_to_embeddings


def test_inner_products_kept_up_to_one_scale_and_entry_size_matched():
    torch.manual_seed(0)
    vectors = torch.randn(50, 8) * 3 + 1
    rows = fit_to_embeddings(vectors, dim=32, std=32**-0.5)
    assert rows.shape == (50, 32)
    assert rows.std().item() == pytest.approx(32**-0.5, rel=0.02)
    centred = vectors - vectors.mean(0)
    gram, mapped = centred @ centred.t(), rows.double() @ rows.double().t()
    scale = (mapped / gram.double()).flatten()[gram.flatten().abs() > 1].median()
    assert torch.allclose(mapped, gram.double() * scale, rtol=1e-3, atol=1e-4)
    # nearest neighbours are the same films
    assert torch.equal(
        (centred @ centred.t()).argsort(1)[:, -3:], (rows @ rows.t()).argsort(1)[:, -3:]
    )


def test_wider_vectors_are_projected_and_the_map_is_seeded():
    vectors = torch.randn(20, 64)
    first = fit_to_embeddings(vectors, dim=16, std=0.25, seed=1)
    assert first.shape == (20, 16) and first.std().item() == pytest.approx(
        0.25, rel=0.05
    )
    assert torch.equal(first, fit_to_embeddings(vectors, dim=16, std=0.25, seed=1))
    assert not torch.equal(first, fit_to_embeddings(vectors, dim=16, std=0.25, seed=2))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        fit_to_embeddings(torch.zeros(0, 4), 8, 0.1)
    with pytest.raises(ValueError):
        fit_to_embeddings(torch.zeros(3, 4), 0, 0.1)


def test_frozen_rows_do_not_move_under_adam():
    from parlai_conkd.item_embeddings import freeze_rows

    table = torch.nn.Embedding(6, 4)
    before = table.weight.detach().clone()
    freeze_rows(table.weight, torch.tensor([1, 4]))
    optimiser = torch.optim.Adam(table.parameters(), lr=0.1)
    for _ in range(3):
        optimiser.zero_grad()
        table(torch.tensor([0, 1, 2, 3, 4, 5])).pow(2).sum().backward()
        optimiser.step()
    after = table.weight.detach()
    assert torch.equal(after[[1, 4]], before[[1, 4]])
    assert not torch.equal(after[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
