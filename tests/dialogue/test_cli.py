"""Both backbones through the real `parlai` CLI: train a few steps, save, reload, eval, generate."""

import json
import re

import pytest

from tests.support import (
    TINY_DIALOGUE_TRANSFORMER,
    run_parlai,
    shared_redial_or_skip,
)

pytestmark = pytest.mark.cli

RESPONSE_METRICS = [
    'ppl',
    'bleu-4',
    'rer@1',
    'rer@10',
    'rer@50',
    'item_precision',
    'item_f1',
    'item_ratio',
    *[f'dist-{n}' for n in (1, 2, 3, 4)],
    *[f'dist_crs-{n}' for n in (1, 2, 3, 4)],
]
ENV = {'OMP_NUM_THREADS': '1'}


@pytest.fixture(scope='module')
def redial_datapath(tmp_path_factory):
    """One datapath for the module, so redial_crs is built once."""
    return tmp_path_factory.mktemp('datapath')


def _data_args(datapath):
    redial = shared_redial_or_skip()
    return [
        '-t',
        'redial_crs',
        '--redial-path',
        redial,
        '--redial-max-dialogues',
        '3',
        '--datapath',
        datapath,
    ]


def _backbone_args(backbone, request):
    if backbone == 'hf':
        hf_dir = request.getfixturevalue('tiny_gpt2_dir')
        # byte-level tiny tokenizer: pieces are short, so allow longer sequences
        return [
            '--backbone',
            'hf',
            '--hf-model-path',
            hf_dir,
            '--text-truncate',
            '96',
            '--label-truncate',
            '16',
            '--truncate',
            '96',
        ]
    return ['--backbone', 'transformer', *TINY_DIALOGUE_TRANSFORMER]


# the HF run is slower (transformers import, byte-level sequences): excluded from the default run
@pytest.mark.parametrize(
    'backbone', ['transformer', pytest.param('hf', marks=pytest.mark.slow)]
)
def test_train_save_reload_eval_and_generate(
    backbone, request, tmp_path, redial_datapath
):
    data = _data_args(redial_datapath)
    model_file = tmp_path / 'model'
    run_parlai(
        [
            'train_model',
            '-m',
            'conkd_dialogue_teacher',
            *data,
            *_backbone_args(backbone, request),
            '-mf',
            model_file,
            '-bs',
            '4',
            '--max-train-steps',
            '3',
            '--validation-every-n-steps',
            '3',
            '-vme',
            '4',
            '--short-final-eval',
            'true',
            '--inference',
            'greedy',
            '--skip-generation',
            'true',
        ],
        env=ENV,
    )
    for suffix in ('', '.dict', '.opt', '.catalog.json'):
        assert (tmp_path / f'model{suffix}').is_file(), suffix

    report_file = tmp_path / 'report.json'
    truncation = ['--text-truncate', '48', '--label-truncate', '12', '--truncate', '48']
    proc = run_parlai(
        [
            'eval_model',
            '-mf',
            model_file,
            *data,
            '-dt',
            'valid',
            '--skip-generation',
            'false',
            '--inference',
            'greedy',
            *truncation,
            '-bs',
            '4',
            '--report-filename',
            report_file,
        ],
        env=ENV,
    )
    report = json.loads(report_file.read_text())['report']
    missing = [m for m in RESPONSE_METRICS if m not in report]
    assert not missing, f'eval_model did not report {missing}'
    for metric in RESPONSE_METRICS:
        assert metric in proc.stdout + proc.stderr
    assert report['exs'] > 0 and report['ppl'] > 1
    assert (
        0 <= report['item_ratio'] <= 1 and 0 <= report['rer@1'] <= report['rer@50'] <= 1
    )
    assert 0 <= report['dist-1'] <= 1

    shown = run_parlai(
        [
            'display_model',
            '-mf',
            model_file,
            *data,
            '-dt',
            'valid',
            '-n',
            '2',
            '--inference',
            'greedy',
            *truncation,
            '--render-items',
            'true',
            '--skip-generation',
            'false',
        ],
        env=ENV,
    ).stdout
    replies = re.findall(r'^\s+model: (.*)$', shown, flags=re.M)
    assert len(replies) == 2, shown[-2000:]
    assert not any(
        'No response' in r or '[REC]' in r or '[GEN]' in r or '__item_' in r
        for r in replies
    )

    if backbone == 'hf':
        return  # interactive runs the same generation code; once is enough for the test budget

    chat = run_parlai(
        ['interactive', '-mf', model_file, '--inference', 'greedy', *truncation],
        input='hi, i liked __item_76012__ a lot\n[EXIT]\n',
        env=ENV,
    ).stdout
    assert re.search(r'\[ConkdDialogueTeacher\]:', chat), chat[-2000:]
