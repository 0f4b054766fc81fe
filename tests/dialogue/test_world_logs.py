"""Per-example logs (issue #22): with ``parlai eval_model --world-logs F`` every reply of this
project's generators carries what it names and ranks as item records (world_log.py): in-process on
both backbones, then through the real CLI on tiny models trained on a slice of the shared ReDial.
"""

import json

import pytest
import torch

from tests.support import run_parlai, shared_meta_or_skip, shared_redial_or_skip

FIELDS = (
    'items_named',
    'model_top_k',
    'model_top_k_step',
    'model_top_k_names_item',
    'gold_new_items',
)
RECORD_KEYS = {'movie_id', 'title', 'year', 'index', 'score', 'new'}


# ---------------------------------------------------------------------------- the checks
def check_records(records, catalog, context=(), descending=False):
    assert isinstance(records, list)
    for record in records:
        assert RECORD_KEYS <= set(record), record
        index = record['index']
        assert isinstance(index, int) and 0 <= index < len(catalog), record
        item = catalog[index]
        assert (record['movie_id'], record['title'], record['year']) == (
            item.movie_id,
            item.title,
            item.year,
        ), record
        assert 0.0 <= record['score'] <= 1.0, record
        assert record['new'] == (index not in context), record
    if descending:
        scores = [r['score'] for r in records]
        assert scores == sorted(scores, reverse=True), scores


def check_act(act, catalog, example, k=10):
    """One logged model reply against the catalog and the example it answers (the teacher's act)."""
    context = set(example.get('context_items') or [])
    for field in FIELDS:
        assert field in act, f'{field} missing from {sorted(act)}'
    named = act['items_named']
    check_records(named, catalog, context)
    assert [r['index'] for r in named] == catalog.items_in_text(act['text'])
    assert act['model_top_k_names_item'] == bool(named)
    top = act['model_top_k']
    check_records(top, catalog, context, descending=True)
    assert len(top) == min(k, len(catalog))
    assert len({r['index'] for r in top}) == len(top)
    step = act['model_top_k_step']
    assert step is None or (isinstance(step, int) and step >= 0)
    gold = act['gold_new_items']
    check_records(gold, catalog, context)
    assert [r['index'] for r in gold] == list(example['new_items'])
    for record in gold:  # scored in the distribution model_top_k lists
        assert record['rank'] >= 1
        shown = {r['index']: r['score'] for r in top}
        if record['rank'] <= len(top):
            assert record['score'] <= top[0]['score'] + 1e-6
        if record['index'] in shown:
            assert record['score'] == pytest.approx(shown[record['index']], abs=2e-6)
    if named and named[0]['index'] in {r['index'] for r in top}:
        # the first item named is scored at the step model_top_k shows
        first = next(r for r in top if r['index'] == named[0]['index'])
        assert named[0]['score'] == pytest.approx(first['score'], abs=2e-6)
    if 'rec_teacher_top_k' in act:
        teacher = act['rec_teacher_top_k']
        check_records(teacher, catalog, context, descending=True)
        assert len(teacher) == min(k, len(catalog) - len(context))
        assert all(r['new'] for r in teacher)  # ranked among the items not named yet
    # plain data: nothing the world logger would write as '<not serializable>'
    json.dumps({key: act[key] for key in (*FIELDS, 'rec_teacher_top_k') if key in act})


# ---------------------------------------------------------------------------- in-process
EXAMPLES = [
    {
        'text': 'hi i liked __item_111__',
        'labels': ['you should see __item_222__ and __item_333__ or __item_222__'],
        'is_rec': True,
        'context_items': [0],
        'new_items': [1, 2],
    },
    {  # longer than the first label: the first row is padded (left, for GPT-2)
        'text': 'hello',
        'labels': ['what kind of movies do you like these days? tell me more please'],
        'is_rec': False,
        'context_items': [],
        'new_items': [],
    },
]


def _batch(agent, examples):
    observations = []
    for example in examples:
        agent.reset()
        observations.append(agent.observe({'episode_done': True, **example}))
    return agent.batchify(observations)


def test_reply_log_reads_the_teacher_forced_distributions(agent, tiny_catalog):
    """Pretend the model generated the gold replies: every score must be the teacher-forced item
    probability at its step (left-padded GPT-2 included)."""
    agent.model.eval()
    batch = _batch(agent, EXAMPLES)
    preds = [
        torch.cat([torch.tensor([agent.START_IDX]), row[row.ne(agent.NULL_IDX)]])
        for row in batch.label_vec
    ]
    agent.record_response_metrics(batch, preds)
    logs = batch.reply_logs
    assert set(logs) == set(FIELDS)  # no recommender loaded: no rec_teacher_top_k
    with torch.no_grad():
        scores = agent.model(*agent._model_input(batch), ys=batch.label_vec)[0].float()
    for b, row in enumerate(batch.label_vec):
        offset = int(row.eq(agent.NULL_IDX).sum()) if agent.is_hf else 0
        target = row[row.ne(agent.NULL_IDX)].tolist()
        steps = scores[b, offset : offset + len(target)]
        item_probs = torch.softmax(steps[:, agent.item_token_ids], -1)
        item_mass = torch.softmax(steps, -1)[:, agent.item_token_ids].sum(-1)
        named = [
            (t, agent.item_index_of_token[tok])
            for t, tok in enumerate(target)
            if tok in agent.item_index_of_token
        ]
        seen, expected = set(), []
        for t, index in named:
            if index not in seen:
                seen.add(index)
                expected.append((index, float(item_probs[t, index])))
        got = logs['items_named'][b]
        assert [r['index'] for r in got] == [i for i, _ in expected]
        for record, (_, prob) in zip(got, expected):
            assert record['score'] == pytest.approx(prob, abs=2e-6)
        step = named[0][0] if named else int(item_mass[1:].argmax()) + 1
        assert logs['model_top_k_step'][b] == step
        assert logs['model_top_k_names_item'][b] == bool(named)
        top = torch.topk(item_probs[step], len(tiny_catalog))
        assert [r['index'] for r in logs['model_top_k'][b]] == top.indices.tolist()
        gold = logs['gold_new_items'][b]
        assert [r['index'] for r in gold] == EXAMPLES[b]['new_items']
        order = top.indices.tolist()
        assert [r['rank'] for r in gold] == [
            order.index(i) + 1 for i in EXAMPLES[b]['new_items']
        ]
        example = {**EXAMPLES[b], 'context_items': EXAMPLES[b]['context_items']}
        text = agent._v2t(preds[b][1:])
        check_act(
            {**{f: logs[f][b] for f in FIELDS}, 'text': text},
            tiny_catalog,
            example,
            k=10,
        )


def test_replies_carry_the_log_in_evaluation_and_not_in_chat(agent, tiny_catalog):
    """``batch_act`` in evaluation (what eval_model runs) puts the fields in each reply, as plain
    data; in a person's chat the reply is as before."""
    agent.model.eval()
    observations = []
    for example in EXAMPLES:
        agent.reset()
        labels = example['labels']
        obs = {k: v for k, v in example.items() if k != 'labels'}
        observations.append(
            agent.observe({'episode_done': True, 'eval_labels': labels, **obs})
        )
    replies = agent.batch_act(observations)
    for reply, example in zip(replies, EXAMPLES):
        check_act(dict(reply), tiny_catalog, example, k=10)
        assert 'rec_teacher_top_k' not in reply
    agent.set_interactive_mode(True, shared=False)
    agent.reset()
    reply = agent.batch_act([agent.observe({'text': 'hi', 'episode_done': False})])[0]
    assert not set(FIELDS) & set(reply) and 'rec_teacher_top_k' not in reply


# ---------------------------------------------------------------------------- CLI
SLICE = ['--redial-max-dialogues', 12]
TRUNC = ['--truncate', 64, '--text-truncate', 64, '--label-truncate', 20]
TINY = ['--n-layers', 1, '--embedding-size', 16, '--ffn-size', 32, '--n-heads', 2]
CLI_EXAMPLES = 6


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A rec teacher, a dialogue teacher and a soft-gate student, tiny, on 12 shared dialogues."""
    redial, meta = shared_redial_or_skip(), shared_meta_or_skip()
    root = tmp_path_factory.mktemp('world-logs')
    env = {
        'CONKD_REDIAL_PATH': str(redial),
        'CONKD_REDIAL_META_PATH': str(meta),
        'OMP_NUM_THREADS': '1',
    }
    common = ['-dp', root / 'data', *SLICE]
    train = ['--num-epochs', 1, '--validation-max-exs', 16, *common]
    run_parlai(
        ['train_model', '-t', 'redial_crs:rec', '-m', 'conkd_rec_teacher']
        + ['-mf', root / 'rec', '-bs', 16, *train],
        env=env,
    )
    generator = ['-bs', 8, '--skip-generation', 'true', *TINY, *TRUNC, *train]
    run_parlai(
        ['train_model', '-t', 'redial_crs', '-m', 'conkd_dialogue_teacher']
        + ['-mf', root / 'dial', *generator],
        env=env,
    )
    run_parlai(
        ['train_model', '-t', 'redial_crs', '-m', 'conkd_student', '--gate', 'soft']
        + ['--dialogue-teacher-file', root / 'dial', '--rec-teacher-file', root / 'rec']
        + ['-mf', root / 'student', *generator],
        env=env,
    )
    return {'root': root, 'env': env, 'common': common}


def eval_with_world_logs(trained, model_file, name, *extra):
    """``parlai eval_model --world-logs`` on the valid fold: (pairs of (example, reply), report)."""
    root = trained['root']
    log, report = root / f'{name}.jsonl', root / f'{name}.report.json'
    run_parlai(
        ['eval_model', '-mf', model_file, '-t', 'redial_crs', '-dt', 'valid']
        + ['-ne', CLI_EXAMPLES, '--skip-generation', 'false', '--inference', 'greedy']
        + ['--world-logs', log, '--report-filename', report, *TRUNC]
        + [*trained['common'], *extra],
        env=trained['env'],
    )
    pairs = [
        tuple(pair)
        for line in log.read_text().splitlines()
        for pair in json.loads(line)['dialog']
    ]
    return pairs, json.loads(report.read_text())['report']


def _catalog(model_file):
    from parlai_conkd.items import ItemCatalog

    return ItemCatalog.load(f'{model_file}.catalog.json')


def _check_run(pairs, report, model_file):
    catalog = _catalog(model_file)
    assert len(pairs) == CLI_EXAMPLES
    for example, act in pairs:
        check_act(act, catalog, example)
    # ParlAI's report is its usual one: the log fields are reply data, not metrics
    assert not (set(FIELDS) | {'rec_teacher_top_k'}) & set(report)
    assert {'rer@1', 'item_ratio', 'ppl'} <= set(report)
    _check_when_and_what(pairs, report)


def _check_when_and_what(pairs, report):
    """The report's "when" and "what" metrics (issue #24) recomputed by hand from the logged
    replies: "names a film" = ``items_named``, gold = ``gold_new_items`` with their ranks.
    """
    tp = fp = fn = 0
    what = []
    for _, act in pairs:
        gold = act.get('gold_new_items')
        if gold is None:
            continue
        named, wanted = bool(act['items_named']), bool(gold)
        tp, fp, fn = (
            tp + (named and wanted),
            fp + (named and not wanted),
            fn + (wanted and not named),
        )
        if named and wanted:
            what.append(sum(r['rank'] <= 10 for r in gold) / len(gold))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    assert report['when_precision'] == pytest.approx(precision, abs=1e-3)
    assert report['when_recall'] == pytest.approx(recall, abs=1e-3)
    assert report['when_f1'] == pytest.approx(f1, abs=1e-3)
    assert report['what_responses'] == len(what)
    if what:
        # ties are counted at their expected rank by ReR@k; the log's rank is 1 + those above
        assert report['what_rer@10'] == pytest.approx(sum(what) / len(what), abs=0.05)


@pytest.mark.cli
def test_dialogue_teacher_logs_each_reply(trained):
    model_file = trained['root'] / 'dial'
    pairs, report = eval_with_world_logs(trained, model_file, 'dial')
    _check_run(pairs, report, model_file)
    assert not any('rec_teacher_top_k' in act for _, act in pairs)


@pytest.mark.cli
def test_student_logs_its_rec_teachers_top_k_when_its_teachers_are_on_disk(trained):
    model_file = trained['root'] / 'student'
    pairs, report = eval_with_world_logs(trained, model_file, 'student')
    _check_run(pairs, report, model_file)
    assert 'kd_loss' in report  # the teachers were loaded: their scores are reused
    assert all('rec_teacher_top_k' in act for _, act in pairs)


@pytest.mark.cli
def test_student_without_its_teachers_logs_no_rec_teacher_top_k(trained):
    model_file = trained['root'] / 'student'
    missing = trained['root'] / 'no-such-rec-teacher'
    pairs, report = eval_with_world_logs(
        trained, model_file, 'student-alone', '--rec-teacher-file', missing
    )
    _check_run(pairs, report, model_file)
    assert 'kd_loss' not in report and not missing.exists()
    assert not any('rec_teacher_top_k' in act for _, act in pairs)


@pytest.mark.cli
def test_pipeline_logs_its_recommenders_ranking(trained):
    """``--fill-items-from``: the recommender fills the slots, so the model's top-k is its ranking
    (context items included, as ReR@k ranks), and rec_teacher_top_k the same without them.
    """
    root = trained['root']
    model_file = root / 'dial'
    pairs, report = eval_with_world_logs(
        trained, model_file, 'pipeline', '--fill-items-from', root / 'rec'
    )
    _check_run(pairs, report, model_file)
    for example, act in pairs:
        context = set(example['context_items'])
        model = [r['index'] for r in act['model_top_k'] if r['index'] not in context]
        teacher = [r['index'] for r in act['rec_teacher_top_k']]
        assert teacher[: len(model)] == model
        if not act['model_top_k_names_item']:
            assert act['model_top_k_step'] is None  # the same ranking at every step
    if report['what_responses']:
        # the recommender chose the items: the model's ranking at the slot is the recommender's
        assert report['what_rec@10'] == pytest.approx(report['what_rer@10'])
