"""The recommendation teacher through the real `parlai` CLI on a slice of the shared ReDial data.

One module-scoped run trains the popularity floor and a small, seeded KG model (model selection
on the valid slice, as in the full recipe) on the first 200 dialogues of each fold (about 650
training examples); every test here reuses them. The full-data numbers come from
projects/conkd/rec_teacher_results.py, not from here.
"""

import json
import math

import pytest
import torch

from tests.support import run_parlai, shared_meta_or_skip, shared_redial_or_skip

pytestmark = pytest.mark.cli

SLICE = '200'
TINY_KG = [
    '--rec-dim',
    '16',
    '--num-bases',
    '2',
    '-lr',
    '0.01',
    '--gradient-clip',
    '1',
    '--text-entity-min-movies',
    '20',
    '--rec-seed',
    '0',
]


def data_args():
    return [
        '-t',
        'redial_crs:rec',
        '--redial-path',
        shared_redial_or_skip(),
        '--redial-meta-path',
        shared_meta_or_skip(),
        '--redial-max-dialogues',
        SLICE,
    ]


def no_truncation_args():
    # conftest's rule for CLI tests; these agents read item indices, never token vectors
    return ['--truncate', '64', '--text-truncate', '64', '--label-truncate', '8']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('rec_cli')
    env = {'OMP_NUM_THREADS': '1'}
    models = {'popularity': root / 'pop' / 'model', 'kg': root / 'kg' / 'model'}
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_popularity',
            *data_args(),
            '-mf',
            models['popularity'],
            '-eps',
            '1',
            '-bs',
            '64',
            *no_truncation_args(),
        ],
        env=env,
    )
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_rec_teacher',
            *data_args(),
            '-mf',
            models['kg'],
            '-eps',
            '4',
            '-veps',
            '0.5',
            '-vp',
            '4',
            '-bs',
            '32',
            *TINY_KG,
            *no_truncation_args(),
        ],
        env=env,
    )
    reports = {}
    for name, model_file in models.items():
        report = root / f'{name}.json'
        run_parlai(
            [
                'eval_model',
                '-mf',
                model_file,
                *data_args(),
                '-dt',
                'test',
                '-bs',
                '64',
                '--report-filename',
                report,
                *no_truncation_args(),
            ],
            env=env,
        )
        reports[name] = json.loads(report.read_text())['report']
    return {'root': root, 'models': models, 'reports': reports, 'env': env}


def test_eval_reports_ranking_metrics_and_kg_model_beats_popularity(trained):
    pop, kg = trained['reports']['popularity'], trained['reports']['kg']
    for report in (pop, kg):
        for prefix in ('', 'new_'):
            for name in (
                'recall@1',
                'recall@10',
                'recall@50',
                'mrr',
                'ndcg@10',
                'ndcg@50',
            ):
                assert 0.0 <= report[prefix + name] <= 1.0, (prefix + name, report)
        # on redial_crs:rec every gold item is new, so the two families agree
        assert report['recall@10'] == pytest.approx(report['new_recall@10'])
        assert report['exs'] > 300
    assert kg['recall@10'] > pop['recall@10'], (kg, pop)
    assert kg['recall@50'] > pop['recall@50'], (kg, pop)
    assert kg['mrr'] > pop['mrr'], (kg, pop)


def test_model_file_stores_catalog_graph_and_config(trained):
    from parlai_conkd.redial.build import load_catalog

    states = torch.load(trained['models']['kg'], map_location='cpu', weights_only=False)
    assert (trained['models']['kg'].parent / 'model.opt').is_file()
    catalog = states['item_catalog']
    data_catalog = load_catalog(
        {
            'redial_path': str(shared_redial_or_skip()),
            'redial_meta_path': str(shared_meta_or_skip()),
            'datapath': _datapath(),
        }
    )
    assert catalog['fingerprint'] == data_catalog.fingerprint
    assert len(catalog['items']) == len(data_catalog)
    assert states['rec_model_config']['use_kg'] is True
    assert states['knowledge_graph']['relations'][-1] == 'self_loop'
    # co-occurrence counts of the 200 training dialogues, and their item lists for leave-one-out
    assert states['rec_model_config']['cooccurrence'] is True
    cooc = states['item_cooccurrence']
    assert cooc['size'] == [len(data_catalog)] * 2 and cooc['values'].sum() > 0
    dialogues = states['train_dialogue_items']
    assert 150 < len(dialogues) <= 200
    assert all(
        0 <= i < len(data_catalog) for items in dialogues.values() for i in items
    )
    assert float(states['model']['temperature']) > 0
    pop_states = torch.load(
        trained['models']['popularity'], map_location='cpu', weights_only=False
    )
    counts = pop_states['model']['counts']
    assert counts.sum() >= 600 and counts.shape == (len(data_catalog),)


def _datapath():
    from parlai.core.params import ParlaiParser

    return ParlaiParser(True, False).parse_args([])['datapath']


def _agent_from(model_file, **overrides):
    from parlai.core.agents import create_agent_from_model_file

    opt = {
        'task': 'redial_crs:rec',
        'redial_path': str(shared_redial_or_skip()),
        'redial_meta_path': str(shared_meta_or_skip()),
        'datatype': 'valid',
        **overrides,
    }
    return create_agent_from_model_file(str(model_file), opt)


def test_item_log_probs_is_a_batched_distribution_matching_eval_scores(trained):
    agent = _agent_from(trained['models']['kg'])
    n = len(agent.catalog)
    contexts = [[0, 5], [], [5, 0, 17]]
    texts = ['I love horror movies', '', 'any comedy?']
    log_probs = agent.item_log_probs(contexts, texts)
    assert log_probs.shape == (3, n)
    assert torch.allclose(torch.logsumexp(log_probs, 1), torch.zeros(3), atol=1e-5)
    # same context items in another order: same distribution (pooling is order-free)
    assert torch.allclose(
        log_probs[0],
        agent.item_log_probs([[5, 0]], ['I love horror movies'])[0],
        atol=1e-5,
    )
    # text entities matter for a KG model with --text-entities
    assert not torch.allclose(
        log_probs[1], agent.item_log_probs([[]], ['I love horror movies'])[0]
    )
    excluded = agent.item_log_probs(contexts, texts, exclude_context=True)
    assert math.isinf(excluded[0, 5].item()) and math.isinf(excluded[2, 17].item())
    assert torch.allclose(torch.logsumexp(excluded, 1), torch.zeros(3), atol=1e-5)


def test_item_log_probs_without_text_equals_model_scores(trained):
    agent = _agent_from(trained['models']['kg'])
    log_probs = agent.item_log_probs([[0, 5]])
    scores = agent.model(torch.tensor([[0, 5]]))
    # the distribution is softmax(scores / T), T fitted on the validation fold while training
    temperature = float(agent.model.temperature)
    assert temperature != 1.0
    assert torch.allclose(
        log_probs[0], torch.log_softmax(scores[0].detach() / temperature, -1), atol=1e-5
    )
    # --rec-temperature overrides the fitted one; rankings never change
    agent.opt['rec_temperature'] = 1.0
    raw = agent.item_log_probs([[0, 5]])
    assert torch.allclose(raw[0], torch.log_softmax(scores[0].detach(), -1), atol=1e-5)
    assert raw[0].argmax() == log_probs[0].argmax()
    popularity = _agent_from(trained['models']['popularity'])
    pop = popularity.item_log_probs([[0], [1, 2]])
    assert torch.allclose(pop[0], pop[1])  # popularity ignores the context
    counts = popularity.model.counts
    assert torch.argmax(pop[0]) == torch.argmax(counts)


def test_catalog_mismatch_is_a_clear_error(trained, tmp_path):
    from parlai_conkd.agents.item_ranking import ItemCatalogMismatch

    states = torch.load(trained['models']['kg'], map_location='cpu', weights_only=False)
    items = states['item_catalog']['items'][:-1]
    from parlai_conkd.items import Item, ItemCatalog

    smaller = ItemCatalog([Item(**entry) for entry in items])
    states['item_catalog'] = {'fingerprint': smaller.fingerprint, 'items': items}
    model_file = tmp_path / 'model'
    torch.save(states, model_file)
    (tmp_path / 'model.opt').write_text(
        (trained['models']['kg'].parent / 'model.opt').read_text()
    )
    with pytest.raises(
        ItemCatalogMismatch, match='item indices would mean different movies'
    ):
        _agent_from(model_file)


def test_init_model_fine_tunes_and_rejects_other_architecture(trained, tmp_path):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser

    out = run_parlai(
        [
            'train_model',
            '-m',
            'conkd_rec_teacher',
            *data_args(),
            '--init-model',
            trained['models']['kg'],
            '-mf',
            tmp_path / 'ft' / 'model',
            '-eps',
            '0.2',
            '-bs',
            '32',
            '-vtim',
            '100000',
            *TINY_KG,
            *no_truncation_args(),
        ],
        env=trained['env'],
    )
    assert 'Loading existing model parameters from' in out.stdout + out.stderr
    assert (tmp_path / 'ft' / 'model').is_file()
    parser = ParlaiParser(True, True)
    opt = parser.parse_args(
        [
            '-m',
            'conkd_rec_teacher',
            *map(str, data_args()),
            '--init-model',
            str(trained['models']['kg']),
            '--rec-dim',
            '8',
        ]
    )
    with pytest.raises(ValueError, match='--rec-dim: model 16, options 8'):
        create_agent(opt)
