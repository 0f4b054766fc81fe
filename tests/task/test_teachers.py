"""The teachers as ParlAI worlds see them (in-process, tiny data)."""
import pytest

from tests.task.conftest import ALIEN, GODFATHER, HEAT, UP, default_dialogues, dialogue, write_redial

pytestmark = pytest.mark.usefixtures('no_redial_env')


def teacher_acts(task, datapath, redial_path, datatype='test', **extra):
    from parlai.core.params import ParlaiParser
    from parlai.core.worlds import create_task

    opt = ParlaiParser(True, True).parse_kwargs(
        task=task, datatype=datatype, model='fixed_response', fixed_response='none',
        datapath=str(datapath), redial_path=str(redial_path), batchsize=1, **extra,
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
    assert second['context_items'] == [ALIEN, HEAT, GODFATHER] and second['label_items'] == [UP]
    assert second['episode_done'] is True and second['conversation_id'] == '100'


def test_rec_teacher_one_single_example_episode_per_new_item(tmp_path, isolated_datapath):
    source = write_redial(tmp_path / 'r')
    teacher, acts = teacher_acts('redial_crs:rec', isolated_datapath, source)
    assert (teacher.num_episodes(), teacher.num_examples()) == (6, 6)
    assert [list(a['eval_labels']) for a in acts[:3]] == [['__item_222__'], ['__item_333__'], ['__item_444__']]
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
    teacher, _ = teacher_acts('redial_crs', isolated_datapath, source, redial_max_dialogues=3)
    assert teacher.num_episodes() == 3
    teacher, _ = teacher_acts('redial_crs', isolated_datapath, source, datatype='train:ordered',
                              redial_max_dialogues=1)
    assert teacher.num_episodes() == 1


def test_dialogue_opened_by_recommender_starts_with_silence(tmp_path, isolated_datapath):
    source = write_redial(tmp_path / 'r', test=[dialogue(5, [(2, 'hi! seen @111?'), (1, 'yes')])])
    _, acts = teacher_acts('redial_crs', isolated_datapath, source)
    assert acts[0]['text'] == '__SILENCE__' and acts[0]['new_items'] == [ALIEN]


def test_stream_counts_are_per_teacher_and_never_written_to_cwd(tmp_path, isolated_datapath, monkeypatch):
    # ParlAI's stream mode caches counts in '<datafile>.lengths'; with one shared name the second
    # teacher reported the first one's counts (and wrote 'test.lengths' into the working dir).
    monkeypatch.chdir(tmp_path)
    source = write_redial(tmp_path / 'r')
    response, _ = teacher_acts('redial_crs', isolated_datapath, source, datatype='test:stream')
    rec, _ = teacher_acts('redial_crs:rec', isolated_datapath, source, datatype='test:stream')
    sliced, _ = teacher_acts('redial_crs:rec', isolated_datapath, source, datatype='test:stream',
                             redial_max_dialogues=1)
    assert (response.num_episodes(), response.num_examples()) == (2, 4)
    assert (rec.num_episodes(), rec.num_examples()) == (6, 6)
    assert (sliced.num_episodes(), sliced.num_examples()) == (3, 3)
    assert list(tmp_path.glob('*.lengths')) == []
