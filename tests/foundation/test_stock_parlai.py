"""Stock ParlAI, with this plugin installed, is stock ParlAI (issue #22).

The plugin is imported into every ParlAI process (``parlai_conkd_startup.pth``). Its patches that
make ParlAI 1.7.2 run on today's stack apply to everything; the ones that change what ParlAI does
(finished-run refusal, the final report loading the final model, ``M.opt`` keeping the user's
paths, an absent validation metric, display of an empty fold) act only for this project's agents
and tasks (``compat.from_this_project``). These tests run ParlAI's own flows on ParlAI's own agents
and task through the real code: ``TrainLoop`` built as ParlAI's tests build it, ``eval_model``,
``display_data``, and the ``parlai interactive`` command line.
"""

import json
import os
import shutil

import pytest
import torch

from parlai_conkd import compat
from tests.support import run_parlai

MOCK = 'parlai.agents.test_agents.test_agents:MockTorchAgent'
TINY_TRANSFORMER = {
    'model': 'transformer/generator',
    'n_layers': 1,
    'embedding_size': 16,
    'ffn_size': 16,
    'n_heads': 2,
    'truncate': 32,
    'text_truncate': 32,
    'label_truncate': 16,
    'optimizer': 'adam',  # an optimizer with state to restore
    'learningrate': 1e-3,
    'batchsize': 8,
    'skip_generation': True,
    'short_final_eval': True,
    'validation_max_exs': 8,
}
STEPS = 6


def train_loop(**opt):
    """``TrainLoop`` as ParlAI 1.7.2's tests/test_torch_agent.py builds it (``get_popt_and_tl``)."""
    import parlai.scripts.train_model as tms

    parser = tms.setup_args()
    parser.set_params(**opt)
    popt = parser.parse_args([])
    for key, value in opt.items():
        popt[key] = value
    return popt, tms.TrainLoop(popt)


def trainstats(path):
    with open(f'{path}.trainstats', encoding='utf-8') as f:
        return json.load(f)


def test_parlai_s_own_test_resume_checkpoint(tmp_path):
    """ParlAI 1.7.2's tests/test_torch_agent.py::TestTorchAgent::test_resume_checkpoint, step by
    step: a finished run, then ``init_model=M.checkpoint, load_from_checkpoint=True``. The plugin
    used to return from ``TrainLoop.__init__`` before the agent existed (AttributeError).
    """

    def get_opt(init_mf, mf):
        return {
            'task': 'integration_tests',
            'init_model': init_mf,
            'model': MOCK,
            'model_file': mf,
            'num_epochs': 3,
            'validation_every_n_epochs': 1,
            'save_after_valid': True,
            'log_every_n_secs': 10,
            'datapath': str(tmp_path / 'data'),
        }

    mf, init_mf = str(tmp_path / 'model'), str(tmp_path / 'init_model')
    with open(init_mf, 'w') as f:
        f.write(' ')
    popt, tl = train_loop(**get_opt(init_mf, mf))
    assert tl.agent._get_init_model(popt, None) == (init_mf, True)
    tl.train()
    assert os.path.isfile(mf + '.checkpoint')
    opt = get_opt(f'{mf}.checkpoint', mf)
    opt['load_from_checkpoint'] = True
    popt, tl = train_loop(**opt)
    assert tl.agent._get_init_model(popt, None) == (f'{mf}.checkpoint', False)


@pytest.fixture(scope='module')
def finished_stock_run(tmp_path_factory):
    """A fresh stock run (tiny transformer/generator on integration_tests), trained to its end
    through ``TrainLoop``; its checkpoint is older than its final model, as ParlAI leaves it.
    """
    root = tmp_path_factory.mktemp('stock')
    mf = str(root / 'model')
    opt = dict(
        TINY_TRANSFORMER,
        task='integration_tests',
        model_file=mf,
        datapath=str(root / 'data'),
        max_train_steps=STEPS,
        save_every_n_secs=1e-6,  # a checkpoint at (nearly) every step, never at the last
        log_every_n_secs=100,
    )
    popt, tl = train_loop(**opt)
    assert tl.agent.opt['model_file'] == mf and tl._train_steps == 0
    valid, test = tl.train()
    return {'root': root, 'opt': opt, 'valid': valid, 'test': test}


def _copy(run, tmp_path):
    """The finished run's files in a directory of this test's own (ParlAI records absolute
    paths in M.opt, so the copy keeps the same name: each test gets a fresh copy)."""
    backup = tmp_path / 'original'
    shutil.copytree(run['root'], backup, ignore=shutil.ignore_patterns('data'))
    return backup


def _restore(run, backup):
    for path in run['root'].iterdir():
        if path.is_file() and not (backup / path.name).exists():
            path.unlink()
    for path in backup.iterdir():
        shutil.copy2(path, run['root'] / path.name)


@pytest.fixture
def stock_run(finished_stock_run, tmp_path):
    """The finished stock run; whatever a test does to its files is undone afterwards."""
    backup = _copy(finished_stock_run, tmp_path)
    yield finished_stock_run
    _restore(finished_stock_run, backup)


def test_a_fresh_stock_run_is_parlai_s(stock_run):
    mf = stock_run['opt']['model_file']
    stats = trainstats(mf)
    assert stats['train_steps'] == STEPS
    assert 'finished' not in stats  # our marker is written for our agents only
    assert stock_run['valid']['total_train_updates'] == STEPS
    checkpoint_steps = trainstats(mf + '.checkpoint')['train_steps']
    assert 0 < checkpoint_steps < STEPS
    with open(mf + '.opt', encoding='utf-8') as f:
        assert json.load(f)['init_model'] is None


def test_explicit_resume_from_the_checkpoint_restores_optimizer_and_updates(stock_run):
    mf = stock_run['opt']['model_file']
    checkpoint = mf + '.checkpoint'
    checkpoint_steps = trainstats(checkpoint)['train_steps']
    saved = torch.load(checkpoint, map_location='cpu', weights_only=False)
    popt, tl = train_loop(
        **stock_run['opt'], init_model=checkpoint, load_from_checkpoint=True
    )
    assert popt['init_model'] == checkpoint
    assert tl.agent._get_init_model(popt, None) == (checkpoint, False)
    assert tl._train_steps == checkpoint_steps  # from M.checkpoint.trainstats
    assert tl.agent._number_training_updates == checkpoint_steps
    restored = tl.agent.optimizer.state_dict()['state']
    assert restored and restored.keys() == saved['optimizer']['state'].keys()
    for key, state in saved['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(
                torch.as_tensor(restored[key][name]).cpu(), torch.as_tensor(value)
            ), (key, name)
    tl.train()
    assert trainstats(mf)['train_steps'] == STEPS


def test_rerun_of_a_finished_stock_run_resumes_from_the_checkpoint_as_parlai_does(
    stock_run,
):
    """ParlAI 1.7.2 resumes from M.checkpoint whenever it exists (#2939): for stock agents the
    plugin neither refuses the rerun nor changes the paths ParlAI records."""
    mf = stock_run['opt']['model_file']
    checkpoint_steps = trainstats(mf + '.checkpoint')['train_steps']
    popt, tl = train_loop(**stock_run['opt'])
    assert tl.agent is not None and '_conkd_finished_plan' not in vars(tl)
    assert popt['init_model'] == mf + '.checkpoint'  # ParlAI's own value, kept
    assert tl._train_steps == checkpoint_steps
    assert tl.agent._number_training_updates == checkpoint_steps
    valid, _ = tl.train()
    # ParlAI 1.7.2's final report then scores M.checkpoint, not the final M (#2939): for its
    # agents that stays as ParlAI does it (the fix is ours only, see compat.resumable_train_loop)
    assert valid['total_train_updates'] == checkpoint_steps
    stats = trainstats(mf)
    assert stats['train_steps'] == STEPS and 'finished' not in stats


def test_a_stock_agent_keeps_parlai_s_keyerror_for_an_absent_validation_metric(
    tmp_path,
):
    """The absent-metric fix is ours only: ParlAI's own behaviour stands for its agents."""
    _, tl = train_loop(
        task='integration_tests',
        model='parlai.agents.test_agents.test_agents:MockTrainUpdatesAgent',
        model_file=str(tmp_path / 'model'),
        datapath=str(tmp_path / 'data'),
        max_train_steps=3,
        validation_every_n_steps=2,
        validation_max_exs=4,
        validation_metric='no_such_metric',
    )
    with pytest.raises(KeyError, match='no_such_metric'):
        tl.train()


def test_stock_eval_model(stock_run, tmp_path):
    import parlai.scripts.eval_model as ems

    report = ems.EvalModel.main(
        task='integration_tests',
        model='repeat_label',
        datatype='valid',
        num_examples=10,
        datapath=str(tmp_path / 'data'),
    )
    assert report['exs'] == 10 and report['accuracy'] == 1
    report = ems.EvalModel.main(
        task='integration_tests',
        model_file=stock_run['opt']['model_file'],
        datatype='test',
        num_examples=8,
        skip_generation=True,
        datapath=str(tmp_path / 'data'),
    )
    assert report['exs'] == 8 and 'ppl' in report


def test_stock_display_data(tmp_path):
    from parlai.utils import testing

    train, valid, test = testing.display_data(
        {
            'task': 'integration_tests',
            'num_examples': 3,
            'datapath': str(tmp_path / 'data'),
        }
    )
    for shown in (train, valid, test):
        assert shown.count('NEW EPISODE') >= 1 and '[no text field]' not in shown


def test_stock_display_data_of_an_empty_fold_is_parlai_s(tmp_path):
    """The empty-fold fix is for our tasks only: a stock teacher shows what ParlAI shows."""
    import parlai.scripts.display_data as dd
    from parlai.utils.testing import capture_output

    empty = tmp_path / 'empty.txt'
    empty.write_text('')
    parser = dd.setup_args()
    parser.set_params(
        task='fromfile:parlaiformat',
        fromfile_datapath=str(empty),
        datatype='valid',
        datapath=str(tmp_path / 'data'),
    )
    with capture_output() as out:
        dd.display_data(parser.parse_args([]))
    assert '[no text field]' in out.getvalue()  # ParlAI 1.7.2's own display


@pytest.mark.cli
def test_stock_interactive_on_the_command_line(tmp_path):
    chat = run_parlai(
        ['interactive', '-m', 'repeat_label', '-dp', tmp_path / 'data'],
        input='hello there\n',
        timeout=120,
    )
    assert "I don't know" in chat.stdout  # repeat_label's answer without a label
    assert chat.stdout.count('Enter Your Message:') == 2 and 'CHAT DONE' in chat.stdout
    assert 'Traceback' not in chat.stderr


@pytest.mark.parametrize(
    'opt, ours',
    [
        ({'model': 'conkd_repeat'}, True),
        ({'model': 'conkd_student'}, True),
        ({'model': 'transformer/generator'}, False),
        ({'model': MOCK}, False),
        ({'model': 'repeat_label'}, False),
        ({'model': 'no_such_agent'}, False),
        ({}, False),
    ],
)
def test_the_behaviour_changing_patches_are_for_our_agents(opt, ours):
    assert compat.conkd_agent(opt) is ours


def test_the_scope_follows_the_class_not_the_name(tmp_path):
    from parlai.agents.repeat_label.repeat_label import RepeatLabelAgent

    from parlai_conkd.agents.conkd_repeat.conkd_repeat import ConkdRepeatAgent

    class MyRepeat(ConkdRepeatAgent):  # a user's subclass of ours: ours
        pass

    assert compat.from_this_project(MyRepeat)
    assert not compat.from_this_project(RepeatLabelAgent)
    # a model named only in M.opt (train_model -mf M with no -m), as ParlAI reads it
    (tmp_path / 'model.opt').write_text(json.dumps({'model': 'conkd_repeat'}))
    assert compat.conkd_agent({'model_file': str(tmp_path / 'model')})
    assert compat.conkd_task({'task': 'integration_tests,redial_crs:rec'})
    assert not compat.conkd_task({'task': 'integration_tests'})
