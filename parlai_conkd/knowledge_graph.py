"""The movie knowledge graph (redial-meta layout) as edge tensors aligned to an ItemCatalog.

Files read from the meta directory (the redial-meta layout, described in the shared data's README.md):
``kg.json`` (adjacency ``{head_entity_id: [[relation_id, tail_entity_id], ...]}``),
``relation2id.json`` (name -> id) and ``entity2id.json`` (name -> id).

Graph nodes are the KG's entities ``0..E-1`` followed by one extra, unconnected node per catalog
item that has no KG entity, so every catalog item has a node (``item_nodes[i]``). Edges are
directed ``src -> dst`` (a message from ``src`` to ``dst``). As in R-GCN (Schlichtkrull et al.
2018) every KG relation ``r`` also gets an inverse relation ``r + R`` (tail -> head), and every
node a self-loop of relation ``2R``. ``edge_norm`` is ``1 / c_{dst,r}``: the number of edges of
the same relation entering the same node, so each relation contributes the mean of its messages.
"""

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from parlai_conkd.items import CatalogError, ItemCatalog, read_json

SELF_LOOP = 'self_loop'
INVERSE_SUFFIX = '_inv'


@dataclass
class KnowledgeGraph:
    num_nodes: int
    #: [E] source node of each edge
    src: torch.Tensor
    #: [E] destination node of each edge
    dst: torch.Tensor
    #: [E] relation id of each edge (KG relations, then their inverses, then the self-loop)
    edge_type: torch.Tensor
    #: [E] 1 / (edges of this relation entering dst)
    edge_norm: torch.Tensor
    #: names of the relation ids, e.g. ['genre', ..., 'genre_inv', ..., 'self_loop']
    relations: List[str]
    #: [num_items] graph node of every catalog item, catalog index order
    item_nodes: torch.Tensor
    #: entity name -> node id (KG entities only); empty for a graph without names
    entity_ids: Dict[str, int] = field(default_factory=dict)

    @property
    def num_relations(self) -> int:
        return len(self.relations)

    @property
    def num_edges(self) -> int:
        return int(self.src.numel())

    def state(self) -> Dict:
        """What ``KnowledgeGraph(**state)`` rebuilds it from (a model file keeps this; entity
        names are left out: the entity linker stores its own)."""
        return {
            'num_nodes': self.num_nodes,
            'src': self.src,
            'dst': self.dst,
            'edge_type': self.edge_type,
            'edge_norm': self.edge_norm,
            'relations': self.relations,
            'item_nodes': self.item_nodes,
        }


def build_graph(
    heads: List[int],
    relations_of_edges: List[int],
    tails: List[int],
    relation_names: List[str],
    num_entities: int,
    item_entities: List[Optional[int]],
    entity_ids: Optional[Dict[str, int]] = None,
) -> KnowledgeGraph:
    """Edge lists (head, relation, tail) -> a graph with inverse relations, self-loops and norms.

    ``item_entities[i]`` is catalog item i's entity id, or None (it then gets a node of its own).
    """
    num_kg_relations = len(relation_names)
    item_nodes, next_node = [], num_entities
    for entity in item_entities:
        if entity is None:
            item_nodes.append(next_node)
            next_node += 1
        else:
            item_nodes.append(int(entity))
    num_nodes = next_node
    head = torch.tensor(heads, dtype=torch.long)
    tail = torch.tensor(tails, dtype=torch.long)
    rel = torch.tensor(relations_of_edges, dtype=torch.long)
    loops = torch.arange(num_nodes)
    src = torch.cat([head, tail, loops])
    dst = torch.cat([tail, head, loops])
    edge_type = torch.cat(
        [rel, rel + num_kg_relations, torch.full_like(loops, 2 * num_kg_relations)]
    )
    num_relations = 2 * num_kg_relations + 1
    # c_{dst, r}: edges of relation r entering dst
    key = dst * num_relations + edge_type
    counts = torch.zeros(num_nodes * num_relations, dtype=torch.float).index_add_(
        0, key, torch.ones(key.numel())
    )
    edge_norm = 1.0 / counts[key]
    names = (
        list(relation_names)
        + [name + INVERSE_SUFFIX for name in relation_names]
        + [SELF_LOOP]
    )
    return KnowledgeGraph(
        num_nodes=num_nodes,
        src=src,
        dst=dst,
        edge_type=edge_type,
        edge_norm=edge_norm,
        relations=names,
        item_nodes=torch.tensor(item_nodes, dtype=torch.long),
        entity_ids=dict(entity_ids or {}),
    )


def item_only_graph(num_items: int) -> KnowledgeGraph:
    """A graph with one node per item and self-loops only: the no-KG variant's shape."""
    return build_graph([], [], [], [], 0, [None] * num_items)


def load_knowledge_graph(meta_dir: str, catalog: ItemCatalog) -> KnowledgeGraph:
    """Read ``kg.json`` / ``relation2id.json`` / ``entity2id.json`` from ``meta_dir``.

    Raises :class:`CatalogError` naming the file when something does not fit (missing file,
    bad JSON, an edge whose relation or entity id is out of range, a catalog item whose
    ``kg_entity`` is not an entity of this graph).
    """
    kg_path = os.path.join(meta_dir, 'kg.json')
    relation_path = os.path.join(meta_dir, 'relation2id.json')
    entity_path = os.path.join(meta_dir, 'entity2id.json')
    adjacency = _read_json(kg_path)
    relation_ids = _read_json(relation_path)
    entity_ids = _read_json(entity_path)
    if sorted(relation_ids.values()) != list(range(len(relation_ids))):
        raise CatalogError(
            f'{relation_path}: relation ids must be 0..{len(relation_ids) - 1}'
        )
    relation_names = sorted(relation_ids, key=relation_ids.get)
    num_entities = max(entity_ids.values(), default=-1) + 1
    heads, rels, tails = [], [], []
    for head, edges in adjacency.items():
        for position, edge in enumerate(edges):
            try:
                rel, tail = int(edge[0]), int(edge[1])
                head_id = int(head)
            except (TypeError, ValueError, IndexError) as exc:
                raise CatalogError(
                    f'{kg_path}: entity {head} edge {position}: {edge!r} ({exc})'
                ) from None
            if not 0 <= rel < len(relation_names):
                raise CatalogError(
                    f'{kg_path}: entity {head} edge {position}: unknown relation {rel}'
                )
            for entity in (head_id, tail):
                if not 0 <= entity < num_entities:
                    raise CatalogError(
                        f'{kg_path}: entity {head} edge {position}: entity {entity} not in '
                        f'{entity_path} (0..{num_entities - 1})'
                    )
            heads.append(head_id)
            rels.append(rel)
            tails.append(tail)
    item_entities = []
    for item in catalog:
        if item.kg_entity is not None and not 0 <= item.kg_entity < num_entities:
            raise CatalogError(
                f'catalog item {item.movie_id} has kg_entity {item.kg_entity}, not an entity of '
                f'{entity_path}: the catalog was built with a different KG'
            )
        item_entities.append(item.kg_entity)
    return build_graph(
        heads, rels, tails, relation_names, num_entities, item_entities, entity_ids
    )


def _read_json(path: str):
    return read_json(path, 'knowledge graph file')


# ---------------------------------------------------------------------------- text entities
_WORD_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

#: Everyday words for KG genres (the KG's own names are matched too, plus a plural "s").
GENRE_ALIASES = {
    'comedies': 'comedy',
    'funny': 'comedy',
    'romantic': 'romance',
    'romcom': 'romance',
    'rom-com': 'romance',
    'rom-coms': 'romance',
    'scifi': 'sci-fi',
    'sci fi': 'sci-fi',
    'science fiction': 'sci-fi',
    'animated': 'animation',
    'cartoon': 'animation',
    'cartoons': 'animation',
    'documentaries': 'documentary',
    'suspense': 'thriller',
    'superhero': 'action',
    'kids': 'family',
    'biopic': 'biography',
    'biopics': 'biography',
    'mysteries': 'mystery',
    'fantasies': 'fantasy',
}
#: KG genre names too generic to mean the genre in chat ("a short time", "the news").
GENRE_STOP = {'short', 'news', 'talk-show', 'game-show', 'reality-tv'}


def words(text: str) -> List[str]:
    return _WORD_RE.findall(text.lower())


class EntityLinker:
    """Finds KG entities (genres, people) named in dialogue text by exact word n-gram match.

    ``names`` maps a word tuple to an entity's *context id*. Longest match wins; each entity is
    reported once, in order of first mention. Item tokens (``__item_1__``) are not words here:
    items come from the task's ``context_items``.
    """

    def __init__(self, names: Dict[tuple, int]):
        self.names = dict(names)
        self.max_len = max((len(n) for n in self.names), default=0)

    def __call__(self, text: str) -> List[int]:
        tokens = words(text or '')
        found, seen, i = [], set(), 0
        while i < len(tokens):
            for n in range(min(self.max_len, len(tokens) - i), 0, -1):
                hit = self.names.get(tuple(tokens[i : i + n]))
                if hit is not None:
                    if hit not in seen:
                        seen.add(hit)
                        found.append(hit)
                    i += n
                    break
            else:
                i += 1
        return found

    def state(self) -> Dict[str, int]:
        """JSON/pickle-friendly form (stored in the model file)."""
        return {' '.join(name): cid for name, cid in self.names.items()}

    @classmethod
    def from_state(cls, state: Dict[str, int]) -> 'EntityLinker':
        return cls({tuple(name.split(' ')): cid for name, cid in state.items()})


def text_entities(
    meta_dir: str, graph: KnowledgeGraph, first_context_id: int, min_movies: int = 1
) -> 'tuple[torch.Tensor, EntityLinker]':
    """The non-movie entities a dialogue can name, and a linker for them.

    Genres (with :data:`GENRE_ALIASES`, minus :data:`GENRE_STOP`) and people with names of at
    least two words (single names are too ambiguous in chat) linked to at least ``min_movies``
    movies (people chat about are rarely one-film people; each linkable entity costs a graph
    convolution output per step). Returns ``(nodes, linker)``: ``nodes[j]`` is the graph node
    of extra context id ``first_context_id + j``.
    """
    type_path = os.path.join(meta_dir, 'entity2type.json')
    types = _read_json(type_path)
    kg_edges = graph.edge_type < (graph.num_relations - 1) // 2  # forward KG edges only
    movies_of = torch.bincount(graph.dst[kg_edges], minlength=graph.num_nodes)
    names: Dict[tuple, int] = {}
    nodes: List[int] = []
    node_context_id: Dict[int, int] = {}

    def add(name: str, node: int):
        key = tuple(words(name))
        if not key or key in names:
            return
        if node not in node_context_id:
            node_context_id[node] = first_context_id + len(nodes)
            nodes.append(node)
        names[key] = node_context_id[node]

    genre_nodes = {}
    for name, node in sorted(graph.entity_ids.items(), key=lambda kv: kv[1]):
        kind = types.get(name)
        if kind == 'genre' and name not in GENRE_STOP:
            genre_nodes[name] = node
            add(name, node)
            add(name + 's', node)
        elif (
            kind == 'person' and len(words(name)) >= 2 and movies_of[node] >= min_movies
        ):
            add(name, node)
    for alias, genre in GENRE_ALIASES.items():
        if genre in genre_nodes:
            add(alias, genre_nodes[genre])
    return torch.tensor(nodes, dtype=torch.long), EntityLinker(names)
