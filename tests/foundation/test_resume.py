"""What a rerun of train_model resumes from (parlai_conkd.resume), decided from the files alone."""

import json

import pytest

from parlai_conkd import resume

OPT = {
    'max_train_steps': 400,
    'num_epochs': -1,
    'max_train_time': -1,
    'validation_patience': 10,
    'validation_cutoff': 1.0,
    'validation_metric': 'accuracy',
    'validation_metric_mode': 'max',
    'load_from_checkpoint': True,
}


def _files(tmp_path, final=None, checkpoint=None):
    mf = tmp_path / 'model'
    if final is not None:
        mf.write_bytes(b'weights')
        (tmp_path / 'model.trainstats').write_text(json.dumps(final))
    if checkpoint is not None:
        (tmp_path / 'model.checkpoint').write_bytes(b'weights')
        (tmp_path / 'model.checkpoint.trainstats').write_text(json.dumps(checkpoint))
    return dict(OPT, model_file=str(mf))


def _finished(steps=400, parleys=400, **limits):
    state = {
        'train_steps': steps,
        'parleys': parleys,
        'total_epochs': 3.5,
        'train_time': 12.0,
        'impatience': 0,
    }
    return dict(state, finished=resume.finished_record(dict(OPT, **limits), state))


def test_fresh_and_interrupted_runs_follow_parlai(tmp_path):
    assert (
        resume.plan(dict(OPT, model_file=str(tmp_path / 'model'))).action
        == resume.AS_PARLAI
    )
    # interrupted: a checkpoint, and a model file saved at a best validation (not finished)
    opt = _files(
        tmp_path,
        final={'train_steps': 200, 'parleys': 200},
        checkpoint={'train_steps': 302, 'parleys': 302},
    )
    assert resume.plan(opt).action == resume.AS_PARLAI


def test_identical_rerun_of_a_finished_run_is_finished(tmp_path):
    opt = _files(
        tmp_path, final=_finished(), checkpoint={'train_steps': 302, 'parleys': 302}
    )
    plan = resume.plan(opt)
    assert plan.action == resume.FINISHED
    assert plan.reason == 'train_steps 400 reached --max-train-steps 400'
    message = resume.finished_message(opt['model_file'], plan)
    assert 'training already finished' in message and '--max-train-steps' in message


def test_raised_limit_continues_from_the_final_model_not_the_stale_checkpoint(tmp_path):
    opt = _files(
        tmp_path, final=_finished(), checkpoint={'train_steps': 302, 'parleys': 302}
    )
    assert resume.plan(dict(opt, max_train_steps=500)).action == resume.FROM_MODEL_FILE
    # raising another limit while the one that stopped the run still holds: still finished
    assert resume.plan(dict(opt, num_epochs=10)).action == resume.FINISHED


def test_continued_then_interrupted_run_resumes_from_its_newer_checkpoint(tmp_path):
    opt = _files(
        tmp_path, final=_finished(), checkpoint={'train_steps': 450, 'parleys': 450}
    )
    assert resume.plan(dict(opt, max_train_steps=500)).action == resume.AS_PARLAI
    # --load-from-checkpoint false: the checkpoint is not a candidate
    assert (
        resume.plan(dict(opt, max_train_steps=500, load_from_checkpoint=False)).action
        == resume.FROM_MODEL_FILE
    )


def test_a_checkpoint_named_as_init_model_is_resumed_from_as_parlai_does(tmp_path):
    """ParlAI's own tests resume explicitly: --init-model M.checkpoint --load-from-checkpoint."""
    opt = _files(
        tmp_path, final=_finished(), checkpoint={'train_steps': 302, 'parleys': 302}
    )
    named = dict(opt, init_model=opt['model_file'] + '.checkpoint')
    assert resume.plan(named).action == resume.AS_PARLAI
    # without --load-from-checkpoint ParlAI loads M itself: the finished run stays finished
    assert (
        resume.plan(dict(named, load_from_checkpoint=False)).action == resume.FINISHED
    )
    # another --init-model (e.g. the pretrained start of the identical command): finished
    other = dict(opt, init_model=str(tmp_path / 'pretrained'))
    assert resume.plan(other).action == resume.FINISHED


def test_run_stopped_by_the_agent_is_finished_while_its_limits_are_unchanged(tmp_path):
    stopped = _finished(steps=120, parleys=120)  # e.g. learning rate below --min-lr
    assert stopped['finished']['reason'] == 'stopped by the agent'
    opt = _files(tmp_path, final=stopped)
    assert resume.plan(opt).action == resume.FINISHED
    assert (
        resume.plan(dict(opt, validation_patience=20)).action == resume.FROM_MODEL_FILE
    )


@pytest.mark.parametrize(
    'key,counter,value',
    [
        ('num_epochs', 'total_epochs', 3.5),
        ('max_train_time', 'train_time', 12.0),
        ('validation_patience', 'impatience', 4),
    ],
)
def test_each_limit_reached_by_the_recorded_counters(key, counter, value):
    stats = {counter: value}
    assert resume.reached_limit(stats, {key: value}) is not None
    assert resume.reached_limit(stats, {key: value * 2}) is None
    assert resume.reached_limit(stats, {key: -1}) is None  # -1: no limit


def test_runs_finished_before_the_marker_count_by_their_final_report(tmp_path):
    legacy = {'train_steps': 400, 'parleys': 400, 'final_valid_report': {'exs': 10}}
    opt = _files(tmp_path, final=legacy)
    assert resume.plan(opt).action == resume.FINISHED
    assert resume.plan(dict(opt, max_train_steps=800)).action == resume.FROM_MODEL_FILE
    saved_during_training = {
        'train_steps': 400,
        'parleys': 400,
        'final_valid_report': {},
    }
    assert (
        resume.plan(_files(tmp_path, final=saved_during_training)).action
        == resume.AS_PARLAI
    )


def test_mark_finished_keeps_parlai_fields_and_torn_stats_are_not_finished(tmp_path):
    path = tmp_path / 'model.trainstats'
    path.write_text(json.dumps({'train_steps': 7, 'final_valid_report': {}}))
    resume.mark_finished(str(path), {'reason': 'x'})
    assert json.loads(path.read_text()) == {
        'train_steps': 7,
        'final_valid_report': {},
        'finished': {'reason': 'x'},
    }
    path.write_text('{"train_steps": 7, "fin')
    assert resume.read_stats(str(path)) is None and not resume.is_finished(None)


def test_train_loop_patches_are_applied_with_train_model():
    import parlai.scripts.train_model  # noqa: F401  (importing is what triggers the patches)

    from parlai_conkd import compat

    applied = compat.applied_patches()
    assert 'parlai.scripts.train_model:resumable_train_loop' in applied
    assert 'parlai.scripts.train_model:validation_metric_may_be_absent' in applied


def _train_loop(**opt):
    import parlai.scripts.train_model as tms

    parser = tms.setup_args()
    parser.set_params(**opt)
    popt = parser.parse_args([])
    popt.update(opt)
    return tms.TrainLoop(popt)


def test_finished_run_of_ours_is_left_alone_and_builds_its_agent_from_the_final_model(
    tmp_path, monkeypatch
):
    """Through ParlAI's TrainLoop, with a tiny stock transformer standing in for one of ours:
    the rerun says finished and touches nothing, yet ``loop.agent`` exists (ParlAI's API), built
    from the final M on first use, never from the older checkpoint; naming the checkpoint as
    --init-model resumes from it as ParlAI does."""
    from parlai_conkd import compat

    monkeypatch.setattr(compat, 'conkd_agent', lambda opt: True)
    mf = str(tmp_path / 'model')
    opt = dict(
        task='integration_tests',
        model='transformer/generator',
        n_layers=1,
        embedding_size=16,
        ffn_size=16,
        n_heads=2,
        truncate=32,
        batchsize=8,
        skip_generation=True,
        model_file=mf,
        datapath=str(tmp_path / 'data'),
        max_train_steps=8,
        save_every_n_secs=1e-6,
        short_final_eval=True,
        validation_max_exs=4,
        log_every_n_secs=100,
    )
    _train_loop(**opt).train()
    stats = resume.read_stats(mf + '.trainstats')
    assert stats['finished']['reason'] == 'train_steps 8 reached --max-train-steps 8'
    checkpoint_steps = resume.read_stats(mf + '.checkpoint.trainstats')['train_steps']
    assert checkpoint_steps < 8
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}

    loop = _train_loop(**opt)
    assert 'agent' not in vars(loop)  # nothing built, nothing loaded
    valid, test = loop.train()
    assert (valid, test) == (stats['final_valid_report'], stats['final_test_report'])
    assert valid['total_train_updates'] == 8  # the recorded final reports
    assert loop.agent._number_training_updates == 8  # built on first use, from M
    assert loop._train_steps == 8 and loop.world is not None
    assert loop.opt['init_model'] is None and loop.opt['load_from_checkpoint'] is True
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == files
    with pytest.raises(AttributeError, match="'TrainLoop' object has no attribute 'x'"):
        _ = loop.x

    explicit = _train_loop(
        **opt, init_model=mf + '.checkpoint', load_from_checkpoint=True
    )
    assert explicit.agent._number_training_updates == checkpoint_steps
    assert explicit._train_steps == checkpoint_steps
