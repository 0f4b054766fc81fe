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
