"""The teachers as ParlAI worlds see them (in-process, tiny data)."""

import pytest

from tests.support import (
    ALIEN,
    GODFATHER,
    HEAT,
    UP,
    default_dialogues,
    dialogue,
    write_redial,
)

pytestmark = pytest.mark.usefixtures('no_redial_env')


def teacher_acts(task, datapath, redial_path, datatype='test', **extra):
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    opt = ParlaiParser(True, True).parse_kwargs(
        task=task,
        datatype=datatype,
        model='fixed_response',
        fixed_response='none',
        datapath=str(datapath),
        redial_path=str(redial_path),
        batchsize=1,
        **extra,
    )
    world = create_task(opt, [])
    teacher = world.get_task_agent()
    acts = []
    for _ in range(teacher.num_examples()):
        world.parley()
        acts.append(dict(world.get_acts()[0]))
    return teacher, acts


@pytest.fixture
def isolated_datapath(tmp_path, monkeypatch):
    # ParlaiParser exports --datapath to PARLAI_DATAPATH; keep that inside the test.
    monkeypatch.setenv('PARLAI_DATAPATH', str(tmp_path / 'dp'))
    return tmp_path / 'dp'


def test_default_teacher_one_example_per_recommender_turn(tmp_path, isolated_datapath):
    source = write_redial(tmp_path / 'r')
    teacher, acts = teacher_acts('redial_crs', isolated_datapath, source)
    assert (teacher.num_episodes(), teacher.num_examples()) == (2, 4)
    first, second = acts[:2]
    assert first['text'] == 'hi, I liked __item_111__'
    assert list(first['eval_labels']) == ['try __item_222__ or __item_333__?']
    assert first['context_items'] == [ALIEN] and first['new_items'] == [HEAT, GODFATHER]
    assert first['is_rec'] is True and first['episode_done'] is False
    assert second['context_items'] == [ALIEN, HEAT, GODFATHER] and second[
        'label_items'
    ] == [UP]
    assert second['episode_done'] is True and second['conversation_id'] == '100'


def test_rec_teacher_one_single_example_episode_per_new_item(
    tmp_path, isolated_datapath
):
    source = write_redial(tmp_path / 'r')
    teacher, acts = teacher_acts('redial_crs:rec', isolated_datapath, source)
    assert (teacher.num_episodes(), teacher.num_examples()) == (6, 6)
    assert [list(a['eval_labels']) for a in acts[:3]] == [
        ['__item_222__'],
        ['__item_333__'],
        ['__item_444__'],
    ]
    assert [a['label_items'] for a in acts[:3]] == [[HEAT], [GODFATHER], [UP]]
    assert all(a['episode_done'] for a in acts)


def test_readable_teacher_shows_titles(tmp_path, isolated_datapath):
    source = write_redial(tmp_path / 'r')
    _, acts = teacher_acts('redial_crs:readable', isolated_datapath, source)
    assert acts[0]['text'] == 'hi, I liked Alien (1979)'
    assert list(acts[0]['eval_labels']) == ['try Heat (1995) or The Godfather?']
    assert acts[0]['new_items'] == [HEAT, GODFATHER]  # ids stay for metrics
    _, rec = teacher_acts('redial_crs:rec_readable', isolated_datapath, source)
    assert list(rec[2]['eval_labels']) == ['Up (2009)']


def test_max_dialogues_option_is_respected_per_fold(tmp_path, isolated_datapath):
    source = write_redial(tmp_path / 'r', test=default_dialogues(5))
    teacher, _ = teacher_acts(
        'redial_crs', isolated_datapath, source, redial_max_dialogues=3
    )
    assert teacher.num_episodes() == 3
    teacher, _ = teacher_acts(
        'redial_crs',
        isolated_datapath,
        source,
        datatype='train:ordered',
        redial_max_dialogues=1,
    )
    assert teacher.num_episodes() == 1


def test_dialogue_opened_by_recommender_starts_with_silence(
    tmp_path, isolated_datapath
):
    source = write_redial(
        tmp_path / 'r', test=[dialogue(5, [(2, 'hi! seen @111?'), (1, 'yes')])]
    )
    _, acts = teacher_acts('redial_crs', isolated_datapath, source)
    assert acts[0]['text'] == '__SILENCE__' and acts[0]['new_items'] == [ALIEN]


def test_stream_counts_are_per_teacher_and_never_written_to_cwd(
    tmp_path, isolated_datapath, monkeypatch
):
    # ParlAI's stream mode caches counts in '<datafile>.lengths'; with one shared name the second
    # teacher reported the first one's counts (and wrote 'test.lengths' into the working dir).
    monkeypatch.chdir(tmp_path)
    source = write_redial(tmp_path / 'r')
    response, _ = teacher_acts(
        'redial_crs', isolated_datapath, source, datatype='test:stream'
    )
    rec, _ = teacher_acts(
        'redial_crs:rec', isolated_datapath, source, datatype='test:stream'
    )
    sliced, _ = teacher_acts(
        'redial_crs:rec',
        isolated_datapath,
        source,
        datatype='test:stream',
        redial_max_dialogues=1,
    )
    assert (response.num_episodes(), response.num_examples()) == (2, 4)
    assert (rec.num_episodes(), rec.num_examples()) == (6, 6)
    assert (sliced.num_episodes(), sliced.num_examples()) == (3, 3)
    assert list(tmp_path.glob('*.lengths')) == []


def test_rec_all_teacher_keeps_items_mentioned_before(tmp_path, isolated_datapath):
    # the recommender names Alien again (mentioned by the seeker) next to a new item, then repeats
    # Heat (its own earlier recommendation): "all" has one example per named item, "new" only Heat/Up
    test = [
        dialogue(
            7,
            [
                (1, 'I liked @111'),
                (2, 'like @111? try @222 @222'),
                (1, 'ok'),
                (2, 'again @222, or @444'),
            ],
        )
    ]
    source = write_redial(tmp_path / 'r', test=test)
    teacher, acts = teacher_acts('redial_crs:rec_all', isolated_datapath, source)
    assert (teacher.num_episodes(), teacher.num_examples()) == (4, 4)
    assert [a['label_items'] for a in acts] == [[ALIEN], [HEAT], [HEAT], [UP]]
    # a repeat of an earlier mention has no new item; a double mention inside one turn counts once
    assert [a['new_items'] for a in acts] == [[], [HEAT], [], [UP]]
    assert [list(a['eval_labels']) for a in acts] == [
        ['__item_111__'],
        ['__item_222__'],
        ['__item_222__'],
        ['__item_444__'],
    ]
    assert acts[0]['text'] == acts[1]['text'] == 'I liked __item_111__'
    assert (
        acts[2]['text']
        == 'I liked __item_111__\nlike __item_111__? try __item_222__ __item_222__\nok'
    )
    assert all(a['episode_done'] and a['context_items'] for a in acts)
    # the "new" teacher holds exactly the new-item examples of the "all" teacher
    _, new = teacher_acts('redial_crs:rec', isolated_datapath, source)
    with_new = [a for a in acts if a['new_items']]
    assert [(a['text'], a['label_items'], a['context_items']) for a in new] == [
        (a['text'], a['label_items'], a['context_items']) for a in with_new
    ]
    _, readable = teacher_acts('redial_crs:rec_all_readable', isolated_datapath, source)
    assert list(readable[0]['eval_labels']) == ['Alien (1979)']


def test_response_teacher_counts_unknown_items_in_gold_replies(
    tmp_path, isolated_datapath
):
    from parlai.core.agents import create_agent
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    test = [
        dialogue(
            8, [(1, 'hi'), (2, 'try @999 or @998, or @222'), (1, 'ok'), (2, 'bye')]
        )
    ]
    source = write_redial(tmp_path / 'r', test=test)
    for task, expected in (('redial_crs', 2), ('redial_crs:rec_all', None)):
        opt = ParlaiParser(True, True).parse_kwargs(
            task=task,
            datatype='test',
            model='fixed_response',
            fixed_response='none',
            datapath=str(isolated_datapath),
            redial_path=str(source),
            batchsize=1,
        )
        world = create_task(opt, create_agent(opt))
        for _ in range(world.num_examples()):
            world.parley()
        report = world.report()
        if expected is None:
            assert 'item_unk_targets' not in report
        else:
            assert report['item_unk_targets'] == expected
