"""Knowledge-graph loading, the R-GCN layer on a hand-checked graph, attention pooling, the model."""

import json

import pytest
import torch

from parlai_conkd.items import CatalogError, Item, ItemCatalog
from parlai_conkd.knowledge_graph import (
    build_graph,
    item_only_graph,
    load_knowledge_graph,
)
from parlai_conkd.rgcn import (
    AttentionPooling,
    KnowledgeRecommender,
    RelationalGraphConv,
    incoming_edges,
    relation_adjacency,
)


def tiny_graph():
    # 0 -a-> 1 and 2 -a-> 1: node 1 receives two 'a' messages, nodes 0 and 2 one 'a_inv' each.
    return build_graph(
        [0, 2], [0, 0], [1, 1], ['a'], num_entities=3, item_entities=[0, 1, None]
    )


def adjacency_of(graph, num_dst=None):
    return relation_adjacency(
        graph.src,
        graph.dst,
        graph.edge_type,
        graph.edge_norm,
        graph.num_relations,
        num_dst or graph.num_nodes,
        graph.num_nodes,
    )


def test_build_graph_adds_inverse_relations_self_loops_and_mean_norms():
    g = tiny_graph()
    assert g.relations == ['a', 'a_inv', 'self_loop']
    assert g.num_nodes == 4  # 3 entities + one node for the item without an entity
    assert g.item_nodes.tolist() == [0, 1, 3]
    edges = sorted(
        zip(g.src.tolist(), g.dst.tolist(), g.edge_type.tolist(), g.edge_norm.tolist())
    )
    assert edges == [
        (0, 0, 2, 1.0),
        (0, 1, 0, 0.5),
        (1, 0, 1, 1.0),
        (1, 1, 2, 1.0),
        (1, 2, 1, 1.0),
        (2, 1, 0, 0.5),
        (2, 2, 2, 1.0),
        (3, 3, 2, 1.0),
    ]
    assert item_only_graph(2).relations == ['self_loop']


def test_graph_convolution_on_hand_checked_graph():
    g = tiny_graph()
    conv = RelationalGraphConv(1, 1, num_relations=3, num_bases=0, bias=False)
    with torch.no_grad():
        # W_a, W_a_inv, W_self
        conv.basis.copy_(torch.tensor([2.0, 3.0, 5.0]).view(3, 1, 1))
    x = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    out = conv(x, adjacency_of(g)).squeeze(1)
    # h0 = W_inv*x1 + W_self*x0; h1 = W_a*mean(x0, x2) + W_self*x1; h2 = W_inv*x1 + W_self*x2
    assert out.tolist() == pytest.approx(
        [3 * 10 + 5 * 1, 2 * 50.5 + 5 * 10, 3 * 10 + 5 * 100, 5000.0]
    )


def test_basis_decomposition_matches_explicit_relation_matrices():
    torch.manual_seed(0)
    g = tiny_graph()
    conv = RelationalGraphConv(2, 3, num_relations=3, num_bases=2, bias=True)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([0.1, 0.2, 0.3]))
    weights = conv.relation_weights()
    assert weights.shape == (3, 2, 3)
    assert torch.allclose(
        weights[1], conv.coeff[1, 0] * conv.basis[0] + conv.coeff[1, 1] * conv.basis[1]
    )
    x = torch.randn(4, 2)
    expected = torch.zeros(4, 3) + conv.bias
    for s, d, r, n in zip(
        g.src.tolist(), g.dst.tolist(), g.edge_type.tolist(), g.edge_norm.tolist()
    ):
        expected[d] += n * x[s] @ weights[r]
    assert torch.allclose(conv(x, adjacency_of(g)), expected, atol=1e-6)
    # gradients reach embeddings, bases and coefficients
    conv(x.requires_grad_(), adjacency_of(g)).sum().backward()
    assert (
        x.grad.abs().sum() > 0
        and conv.coeff.grad.abs().sum() > 0
        and conv.basis.grad.abs().sum() > 0
    )


def test_incoming_edges_restricts_to_targets_and_keeps_repeats():
    g = tiny_graph()
    targets = torch.tensor([1, 1, 0])
    unique, position, src, dst, edge_type, edge_norm = incoming_edges(
        targets, g.src, g.dst, g.edge_type, g.edge_norm, g.num_nodes
    )
    assert unique.tolist() == [0, 1] and position.tolist() == [1, 1, 0]
    conv = RelationalGraphConv(1, 1, num_relations=3, num_bases=0, bias=False)
    x = torch.tensor([[1.0], [10.0], [100.0], [1000.0]])
    full = conv(x, adjacency_of(g))
    sub = conv(x, relation_adjacency(src, dst, edge_type, edge_norm, 3, 2, g.num_nodes))
    assert torch.allclose(sub[position], full[targets])


def test_attention_pooling_ignores_padding_and_handles_empty_context():
    torch.manual_seed(0)
    pool = AttentionPooling(4)
    h = torch.randn(3, 3, 4)
    mask = torch.tensor(
        [[True, True, False], [True, False, False], [False, False, False]]
    )
    weights = pool.attention(h, mask)
    assert weights.sum(1).tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert (weights[~mask] == 0).all()
    out = pool(h, mask)
    assert torch.allclose(out[1], h[1, 0])  # one real position: its own vector
    assert (out[2] == 0).all()  # empty context: zero user vector
    changed = h.clone()
    changed[0, 2] = 1e3  # padding content must not matter
    assert torch.allclose(pool(changed, mask)[0], out[0])
    manual = (
        torch.softmax(pool.score(torch.tanh(pool.project(h[0, :2]))).squeeze(-1), 0)
        @ h[0, :2]
    )
    assert torch.allclose(out[0], manual, atol=1e-6)


def graph_dict(g):
    return dict(
        src=g.src,
        dst=g.dst,
        edge_type=g.edge_type,
        edge_norm=g.edge_norm,
        num_relations=g.num_relations,
        num_nodes=g.num_nodes,
    )


@pytest.mark.parametrize('use_kg', [True, False])
def test_recommender_scores_caching_and_empty_context(use_kg):
    torch.manual_seed(0)
    g = tiny_graph()
    model = KnowledgeRecommender(
        3,
        g.item_nodes,
        graph_dict(g) if use_kg else None,
        extra_nodes=torch.tensor([2]) if use_kg else None,
        dim=4,
        num_bases=2,
    )
    with torch.no_grad():
        model.item_bias.copy_(torch.tensor([0.5, -1.0, 2.0]))
    context = torch.tensor([[0, -1], [-1, -1], [1, 0]])
    if use_kg:
        context[2, 1] = 3  # the extra entity (node 2) has context id N + 0 = 3
    scores = model(context)
    assert scores.shape == (3, 3)
    # empty context: biases only
    assert scores[1].tolist() == pytest.approx([0.5, -1.0, 2.0])
    with torch.no_grad():
        first = model.context_representations()
        assert model.context_representations() is first  # cached under no_grad
        before = first.clone()
        assert torch.allclose(model(context), scores)
        # an optimizer step: the cache must not be reused
        model.node_embeddings.weight.add_(1.0)
        second = model.context_representations()
        assert not torch.allclose(second, before)
    log_probs = model.item_log_probs(
        context, exclude=torch.tensor([[True, False, False]] * 3)
    )
    assert log_probs[:, 0].eq(float('-inf')).all()
    assert torch.allclose(log_probs[:, 1:].exp().sum(1), torch.ones(3))
    with pytest.raises(IndexError, match='context id'):
        model(torch.tensor([[model.num_context_ids]]))


def write_meta(tmp_path, kg, relations=None, entities=None):
    (tmp_path / 'kg.json').write_text(json.dumps(kg))
    (tmp_path / 'relation2id.json').write_text(
        json.dumps(relations or {'genre': 0, 'star': 1})
    )
    (tmp_path / 'entity2id.json').write_text(
        json.dumps(entities or {'M (2000)': 0, 'drama': 1, 'X': 2})
    )
    return str(tmp_path)


def catalog(*entities):
    return ItemCatalog(
        [
            Item(index=i, movie_id=str(100 + i), title=f'm{i}', kg_entity=e)
            for i, e in enumerate(entities)
        ]
    )


def test_load_knowledge_graph_from_meta_dir(tmp_path):
    meta = write_meta(tmp_path, {'0': [[0, 1], [1, 2]]})
    g = load_knowledge_graph(meta, catalog(0, None))
    assert g.relations == ['genre', 'star', 'genre_inv', 'star_inv', 'self_loop']
    assert g.num_nodes == 4 and g.item_nodes.tolist() == [0, 3]
    assert g.num_edges == 2 * 2 + 4
    assert g.entity_ids['drama'] == 1


def test_load_knowledge_graph_errors_name_the_file(tmp_path):
    with pytest.raises(CatalogError, match='kg.json'):
        load_knowledge_graph(str(tmp_path), catalog(0))
    meta = write_meta(tmp_path, {'0': [[5, 1]]})
    with pytest.raises(
        CatalogError, match=r'kg.json: entity 0 edge 0: unknown relation 5'
    ):
        load_knowledge_graph(meta, catalog(0))
    meta = write_meta(tmp_path, {'0': [[0, 9]]})
    with pytest.raises(CatalogError, match=r'entity 9 not in .*entity2id.json'):
        load_knowledge_graph(meta, catalog(0))
    meta = write_meta(tmp_path, {'0': [[0, 1]]})
    with pytest.raises(CatalogError, match='kg_entity 7'):
        load_knowledge_graph(meta, catalog(7))
    (tmp_path / 'kg.json').write_text('{"0": [')
    with pytest.raises(CatalogError, match=r'kg.json:1: invalid JSON'):
        load_knowledge_graph(meta, catalog(0))


def test_real_movie_kg_aligns_with_the_catalog(shared_redial, shared_meta):
    cat = ItemCatalog.from_redial(
        str(shared_redial / 'movies_with_mentions.csv'), str(shared_meta)
    )
    g = load_knowledge_graph(str(shared_meta), cat)
    entities = json.loads((shared_meta / 'entity2id.json').read_text())
    without_entity = sum(item.kg_entity is None for item in cat)
    assert g.num_nodes == len(entities) + without_entity
    assert g.relations[-1] == 'self_loop' and g.num_relations == 9
    # every KG edge twice (both directions) plus one self-loop per node
    kg = json.loads((shared_meta / 'kg.json').read_text())
    assert g.num_edges == 2 * sum(len(v) for v in kg.values()) + g.num_nodes
    assert g.item_nodes.numel() == len(cat)
