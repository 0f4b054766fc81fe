"""Same command, same seed: same weights and the same report; another seed: other weights.

Through the real `parlai train_model` on a slice of the shared ReDial, for the generator (the
student is the same agent class underneath) and the recommendation teacher (issue [reproducible]).
"""

import json
import random

import numpy as np
import pytest
import torch

from parlai_conkd.seeding import seed_everything
from parlai_conkd.zoo.conkd.builder import weights_sha256
from tests.support import run_parlai, shared_meta_or_skip, shared_redial_or_skip

ENV = {'OMP_NUM_THREADS': '1'}


def test_seed_everything_seeds_python_numpy_and_torch():
    draws = []
    for _ in range(2):
        seed_everything(7)
        draws.append((random.random(), float(np.random.rand()), float(torch.rand(1))))
    assert draws[0] == draws[1]
    seed_everything(8)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) != draws[0]


def _train(tmp_path, name, args):
    """(weights checksum, final valid/test reports without timings) of one training run."""
    model = tmp_path / name / 'model'
    redial = shared_redial_or_skip()
    run_parlai(
        [
            'train_model',
            '-mf',
            model,
            '--redial-path',
            redial,
            '--redial-max-dialogues',
            '30',
            '-dp',
            tmp_path / 'data',
            *args,
        ],
        env=ENV,
    )
    stats = json.loads((tmp_path / name / 'model.trainstats').read_text())
    reports = {}
    for key in ('final_valid_report', 'final_test_report'):
        reports[key] = {
            k: v
            for k, v in stats[key].items()
            if k not in ('exps', 'tps', 'ups', 'ctps', 'ltps', 'tpb')
        }
        assert reports[key], key
    return weights_sha256(str(model)), reports


GENERATOR = [
    '-t',
    'redial_crs',
    '-m',
    'conkd_dialogue_teacher',
    '--n-layers',
    '1',
    '--n-heads',
    '2',
    '--embedding-size',
    '16',
    '--ffn-size',
    '32',
    '--dropout',
    '0.1',
    '--truncate',
    '48',
    '--label-truncate',
    '12',
    '-bs',
    '8',
    '--max-train-steps',
    '12',
    '-vstep',
    '6',
    '-vmt',
    'ppl',
    '-vmm',
    'min',
    '--skip-generation',
    'true',
]


@pytest.mark.cli
def test_generator_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = _train(tmp_path, 'a', [*GENERATOR, '--seed', '3'])
    second = _train(tmp_path, 'b', [*GENERATOR, '--seed', '3'])
    other = _train(tmp_path, 'c', [*GENERATOR, '--seed', '4'])
    assert first == second
    assert other[0] != first[0]


@pytest.mark.cli
def test_rec_teacher_same_seed_same_weights_other_seed_other_weights(tmp_path):
    meta = shared_meta_or_skip()
    rec = [
        '-t',
        'redial_crs:rec',
        '-m',
        'conkd_rec_teacher',
        '--redial-meta-path',
        meta,
        '--rec-dim',
        '8',
        '--num-bases',
        '2',
        '--text-entity-min-movies',
        '30',
        '-bs',
        '16',
        '-eps',
        '2',
        '-veps',
        '1',
    ]
    first = _train(tmp_path, 'a', [*rec, '--seed', '0'])
    second = _train(tmp_path, 'b', [*rec, '--seed', '0'])
    other = _train(tmp_path, 'c', [*rec, '--seed', '1'])
    assert first == second
    assert other[0] != first[0]


def test_deterministic_kernels_by_default_on_cpu(monkeypatch):
    """--deterministic unset: deterministic kernels on CPU, not on CUDA unless asked."""
    from parlai_conkd.seeding import wants_deterministic

    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    assert wants_deterministic({}) is True
    assert wants_deterministic({'deterministic': False}) is False
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert wants_deterministic({}) is False
    assert wants_deterministic({'no_cuda': True}) is True
    assert wants_deterministic({'deterministic': True}) is True


def _two_thread_rec_teacher(tmp_path, name, extra=()):
    meta = shared_meta_or_skip()
    redial = shared_redial_or_skip()
    model = tmp_path / name / 'model'
    run_parlai(
        [
            'train_model',
            '-t',
            'redial_crs:rec',
            '-m',
            'conkd_rec_teacher',
            '--redial-meta-path',
            meta,
            '--redial-path',
            redial,
            '--redial-max-dialogues',
            '300',
            '-dp',
            tmp_path / 'data',
            '-mf',
            model,
            '--rec-dim',
            '64',
            '-bs',
            '128',
            '-eps',
            '1',
            '--seed',
            '0',
            *extra,
        ],
        env={'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2'},
    )
    return weights_sha256(str(model))


@pytest.mark.cli
@pytest.mark.slow  # the one-thread determinism tests run by default
def test_two_thread_rec_teacher_runs_are_identical(tmp_path):
    """With 2 threads some CPU kernels accumulate in thread order; the default deterministic
    kernels make two runs bit-identical (the zoo builds with 2 threads)."""
    assert _two_thread_rec_teacher(tmp_path, 'a') == _two_thread_rec_teacher(
        tmp_path, 'b'
    )
