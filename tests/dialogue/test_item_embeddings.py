"""Item token embeddings started from the rec teacher's item vectors (parlai_conkd/item_embeddings.py)."""
import pytest
import torch

from parlai_conkd.item_embeddings import fit_to_embeddings


def test_inner_products_kept_up_to_one_scale_and_entry_size_matched():
    torch.manual_seed(0)
    vectors = torch.randn(50, 8) * 3 + 1
    rows = fit_to_embeddings(vectors, dim=32, std=32 ** -0.5)
    assert rows.shape == (50, 32)
    assert rows.std().item() == pytest.approx(32 ** -0.5, rel=0.02)
    centred = vectors - vectors.mean(0)
    gram, mapped = centred @ centred.t(), rows.double() @ rows.double().t()
    scale = (mapped / gram.double()).flatten()[gram.flatten().abs() > 1].median()
    assert torch.allclose(mapped, gram.double() * scale, rtol=1e-3, atol=1e-4)
    # nearest neighbours are the same films
    assert torch.equal((centred @ centred.t()).argsort(1)[:, -3:], (rows @ rows.t()).argsort(1)[:, -3:])


def test_wider_vectors_are_projected_and_the_map_is_seeded():
    vectors = torch.randn(20, 64)
    first = fit_to_embeddings(vectors, dim=16, std=0.25, seed=1)
    assert first.shape == (20, 16) and first.std().item() == pytest.approx(0.25, rel=0.05)
    assert torch.equal(first, fit_to_embeddings(vectors, dim=16, std=0.25, seed=1))
    assert not torch.equal(first, fit_to_embeddings(vectors, dim=16, std=0.25, seed=2))


def test_bad_input_is_refused():
    with pytest.raises(ValueError):
        fit_to_embeddings(torch.zeros(0, 4), 8, 0.1)
    with pytest.raises(ValueError):
        fit_to_embeddings(torch.zeros(3, 4), 0, 0.1)
