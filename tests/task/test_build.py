"""build.py: sources (dir, zip, env, download), atomic builds, keyed caches, clear errors."""

import hashlib
import json
import os
import zipfile

import pytest

from parlai_conkd.items import UNKNOWN_ITEM_TOKEN
from parlai_conkd.redial import build as redial_build
from parlai_conkd.redial.preprocess import RedialDataError
from tests.support import (
    QuietHandler,
    default_dialogues,
    dialogue,
    task_opt,
    write_redial,
    zip_redial,
)

pytestmark = pytest.mark.usefixtures('no_redial_env')


def is_built(path):
    return os.path.isfile(os.path.join(path, '.built'))


def leftovers(datapath):
    """Temporary build/download directories left behind (there should be none)."""
    root = os.path.join(datapath, 'redial_crs')
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        found += [
            os.path.join(dirpath, n)
            for n in dirnames + filenames
            if n.startswith('.') and n != '.built'
        ]
    return found


def test_local_directory_builds_folds_catalog_and_stats(tmp_path, tiny_redial):
    opt = task_opt(tmp_path / 'dp', redial_path=str(tiny_redial))
    built = redial_build.build(opt)
    assert is_built(built) and built.startswith(str(tmp_path / 'dp' / 'redial_crs'))
    episodes = {
        fold: redial_build.load_episodes(opt, fold) for fold in redial_build.FOLDS
    }
    assert (
        len(episodes['train']) + len(episodes['valid']) == 6
        and len(episodes['test']) == 2
    )
    assert [i.movie_id for i in redial_build.load_catalog(opt)] == [
        '111',
        '222',
        '333',
        '444',
    ]
    stats = json.load(open(os.path.join(built, 'stats.json')))
    assert stats['files']['train_data.jsonl']['mentions'] == 6 * 5
    assert (
        stats['source_sha256']['test_data.jsonl']
        == hashlib.sha256((tiny_redial / 'test_data.jsonl').read_bytes()).hexdigest()
    )
    assert redial_build.meta_path(opt) is None
    assert leftovers(tmp_path / 'dp') == []


def test_env_var_is_used_when_option_is_absent(tmp_path, tiny_redial, monkeypatch):
    monkeypatch.setenv('CONKD_REDIAL_PATH', str(tiny_redial))
    opt = task_opt(tmp_path / 'dp')
    assert redial_build.source_path(opt) == str(tiny_redial)
    assert len(redial_build.load_episodes(opt, 'test')) == 2


def test_official_zip_is_accepted_as_local_source(tmp_path, tiny_redial):
    archive = zip_redial(tiny_redial, tmp_path / 'redial_dataset.zip')
    opt = task_opt(tmp_path / 'dp', redial_path=str(archive))
    assert len(redial_build.load_episodes(opt, 'test')) == 2
    assert len(redial_build.load_catalog(opt)) == 4


def test_switching_source_never_reuses_the_other_build(tmp_path, tiny_redial):
    other = write_redial(tmp_path / 'other', test=default_dialogues(5))
    dp = tmp_path / 'dp'
    first = redial_build.build(task_opt(dp, redial_path=str(tiny_redial)))
    second = redial_build.build(task_opt(dp, redial_path=str(other)))
    assert first != second
    assert (
        len(redial_build.load_episodes(task_opt(dp, redial_path=str(other)), 'test'))
        == 5
    )
    assert (
        len(
            redial_build.load_episodes(
                task_opt(dp, redial_path=str(tiny_redial)), 'test'
            )
        )
        == 2
    )


def test_edited_source_is_rebuilt_in_place(tmp_path, tiny_redial):
    opt = task_opt(tmp_path / 'dp', redial_path=str(tiny_redial))
    assert len(redial_build.load_episodes(opt, 'test')) == 2
    write_redial(tiny_redial, test=default_dialogues(3) + default_dialogues(1))
    os.utime(tiny_redial / 'test_data.jsonl', (1, 1))  # size and mtime both change
    assert len(redial_build.load_episodes(opt, 'test')) == 4
    assert leftovers(tmp_path / 'dp') == []


def test_max_dialogues_limits_each_fold(tmp_path, tiny_redial):
    opt = task_opt(
        tmp_path / 'dp', redial_path=str(tiny_redial), redial_max_dialogues=1
    )
    assert [len(redial_build.load_episodes(opt, f)) for f in ('train', 'test')] == [
        1,
        1,
    ]


def test_missing_file_names_expected_path_and_both_ways_to_supply(
    tmp_path, tiny_redial
):
    (tiny_redial / 'test_data.jsonl').unlink()
    with pytest.raises(RedialDataError) as info:
        redial_build.build(task_opt(tmp_path / 'dp', redial_path=str(tiny_redial)))
    message = str(info.value)
    assert str(tiny_redial / 'test_data.jsonl') in message
    assert (
        '--redial-path' in message
        and 'CONKD_REDIAL_PATH' in message
        and 'download' in message
    )


def test_missing_path_names_it(tmp_path):
    with pytest.raises(RedialDataError, match='does not exist: .*nowhere'):
        redial_build.build(
            task_opt(tmp_path / 'dp', redial_path=str(tmp_path / 'nowhere'))
        )


def test_zip_without_a_required_member_names_it(tmp_path, tiny_redial):
    archive = tmp_path / 'partial.zip'
    import zipfile

    with zipfile.ZipFile(archive, 'w') as zf:
        zf.write(tiny_redial / 'train_data.jsonl', 'redial/train_data.jsonl')
    with pytest.raises(
        RedialDataError, match=r'partial\.zip has no member test_data\.jsonl'
    ):
        redial_build.build(task_opt(tmp_path / 'dp', redial_path=str(archive)))


def test_malformed_line_fails_the_build_naming_file_and_line_and_marks_nothing(
    tmp_path,
):
    good = json.dumps(default_dialogues(1)[0])
    source = write_redial(
        tmp_path / 'bad', train_text=f'{good}\n{good}\n{{"conversationId": "7",\n'
    )
    dp = tmp_path / 'dp'
    opt = task_opt(dp, redial_path=str(source))
    with pytest.raises(RedialDataError, match=r'train_data\.jsonl:3: malformed JSON'):
        redial_build.build(opt)
    assert not os.path.exists(redial_build.built_dir(opt)) and leftovers(dp) == []


def test_unknown_movie_ids_are_counted_in_stats_not_fatal(tmp_path):
    source = write_redial(
        tmp_path / 'unk', train=[dialogue(1, [(1, 'saw @5555'), (2, 'then @111')])]
    )
    opt = task_opt(tmp_path / 'dp', redial_path=str(source))
    built = redial_build.build(opt)
    stats = json.load(open(os.path.join(built, 'stats.json')))['files'][
        'train_data.jsonl'
    ]
    assert stats['unknown_mentions'] == 1 and stats['unknown_movie_ids'] == {'5555': 1}
    turns = [
        t
        for e in redial_build.load_episodes(opt, 'train')
        + redial_build.load_episodes(opt, 'valid')
        for t in e['turns']
    ]
    assert turns[0]['text'] == f'saw {UNKNOWN_ITEM_TOKEN}'


def test_interrupted_build_is_not_taken_as_done(tmp_path, tiny_redial, monkeypatch):
    dp = tmp_path / 'dp'
    opt = task_opt(dp, redial_path=str(tiny_redial))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(redial_build.ItemCatalog, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        redial_build.build(opt)
    assert not os.path.exists(redial_build.built_dir(opt)) and leftovers(dp) == []
    monkeypatch.undo()
    monkeypatch.delenv('CONKD_REDIAL_PATH', raising=False)
    assert is_built(redial_build.build(opt))


def test_half_written_build_directory_without_marker_is_replaced(tmp_path, tiny_redial):
    opt = task_opt(tmp_path / 'dp', redial_path=str(tiny_redial))
    stale = redial_build.built_dir(opt)
    os.makedirs(stale)
    # what a crash mid-write would leave
    open(os.path.join(stale, 'test.json'), 'w').write('[')
    assert len(redial_build.load_episodes(opt, 'test')) == 2


def test_meta_path_requires_the_redial_meta_layout(tmp_path, tiny_redial, monkeypatch):
    meta = tmp_path / 'meta'
    meta.mkdir()
    (meta / 'id2info.json').write_text(
        '{"111": {"name": "Alien (1979)", "genre": ["Horror"]}}'
    )
    (meta / 'entity2id.json').write_text('{"Alien (1979)": 42}')
    opt = task_opt(
        tmp_path / 'dp', redial_path=str(tiny_redial), redial_meta_path=str(meta)
    )
    with pytest.raises(RedialDataError, match=r"lacks \['kg.json'\]"):
        redial_build.meta_path(opt)
    (meta / 'kg.json').write_text('{}')
    assert redial_build.meta_path(opt) == str(meta)
    catalog = redial_build.load_catalog(opt)
    assert catalog[0].kg_entity == 42 and catalog[0].metadata['genre'] == ['Horror']
    plain = task_opt(tmp_path / 'dp', redial_path=str(tiny_redial))
    assert redial_build.built_dir(plain) != redial_build.built_dir(opt)
    monkeypatch.setenv('CONKD_REDIAL_META_PATH', str(meta))
    assert redial_build.meta_path(plain) == str(meta)


# ---------------------------------------------------------------------------- download route
def test_download_with_matching_checksum_builds_and_caches(
    tmp_path, served_archive, monkeypatch
):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    url, sha256 = served_archive
    dp = tmp_path / 'dp'
    opt = task_opt(dp, redial_url=url, redial_sha256=sha256)
    assert redial_build.source_path(opt) is None
    built = redial_build.build(opt)
    assert is_built(built) and os.path.basename(built).startswith(
        f'{redial_build.VERSION}-download-'
    )
    assert len(redial_build.load_episodes(opt, 'test')) == 2
    cached = os.listdir(dp / 'redial_crs' / 'downloads')
    assert cached == [f'{sha256[:16]}-redial_dataset.zip'] and leftovers(dp) == []


def test_checksum_mismatch_says_so_and_leaves_nothing_built(
    tmp_path, served_archive, monkeypatch
):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    url, sha256 = served_archive
    dp = tmp_path / 'dp'
    wrong = '0' * 64
    opt = task_opt(dp, redial_url=url, redial_sha256=wrong)
    with pytest.raises(RedialDataError) as info:
        redial_build.build(opt)
    message = str(info.value)
    assert 'checksum mismatch' in message and sha256 in message and wrong in message
    assert not os.path.exists(redial_build.built_dir(opt))
    assert os.listdir(dp / 'redial_crs' / 'downloads') == [] and leftovers(dp) == []


def test_official_defaults_are_the_published_archive():
    assert (
        redial_build.OFFICIAL_URL
        == 'https://github.com/ReDialData/website/raw/data/redial_dataset.zip'
    )
    assert (
        redial_build.OFFICIAL_SHA256
        == 'b48756681ec6f84e0af36979c5e9baa21ea8d9e7036b8764ea9b787bb0baf69b'
    )


def test_failed_download_names_the_url_and_the_offline_route(tmp_path, monkeypatch):
    import socket

    monkeypatch.setattr('parlai_conkd.downloads.time.sleep', lambda s: None)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(('127.0.0.1', 0))
        url = f'http://127.0.0.1:{s.getsockname()[1]}/redial_dataset.zip'
    opt = task_opt(tmp_path / 'dp', redial_url=url)
    with pytest.raises(RedialDataError) as info:
        redial_build.build(opt)
    message = str(info.value)
    assert f'could not download {url}' in message
    assert '--redial-path' in message and 'CONKD_REDIAL_PATH' in message
    assert (
        not os.path.exists(redial_build.built_dir(opt))
        and leftovers(tmp_path / 'dp') == []
    )


def _serve(directory):
    import functools
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(QuietHandler, directory=str(directory))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f'http://127.0.0.1:{server.server_address[1]}'


def test_http_404_names_status_url_and_offline_route_and_keeps_nothing(
    tmp_path, monkeypatch
):
    """CRSLab #11 / UniCRS #8: a 404 was reported as a checksum mismatch, and passing the 404
    page's checksum stored that page as the verified archive."""
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    (tmp_path / 'www').mkdir()
    server, base = _serve(tmp_path / 'www')
    try:
        url = f'{base}/redial_dataset.zip'
        # what the server answers: an HTML 404 page
        page = __import__('requests').get(url).content
        for sha256 in (redial_build.OFFICIAL_SHA256, hashlib.sha256(page).hexdigest()):
            opt = task_opt(tmp_path / 'dp', redial_url=url, redial_sha256=sha256)
            with pytest.raises(RedialDataError) as info:
                redial_build.build(opt)
            message = str(info.value)
            assert message.startswith(f'HTTP 404 File not found for {url}. ')
            assert '--redial-path' in message and 'CONKD_REDIAL_PATH' in message
            assert 'checksum mismatch' not in message
            assert os.listdir(tmp_path / 'dp' / 'redial_crs' / 'downloads') == []
            assert (
                not os.path.exists(redial_build.built_dir(opt))
                and leftovers(tmp_path / 'dp') == []
            )
    finally:
        server.shutdown()
        server.server_close()


def test_html_page_served_as_200_is_refused_even_with_its_checksum(
    tmp_path, monkeypatch
):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    (tmp_path / 'www').mkdir()
    page = b'<html><body>Sign in to continue</body></html>'
    (tmp_path / 'www' / 'login.html').write_bytes(page)
    server, base = _serve(tmp_path / 'www')
    try:
        url = f'{base}/login.html'
        opt = task_opt(
            tmp_path / 'dp',
            redial_url=url,
            redial_sha256=hashlib.sha256(page).hexdigest(),
        )
        with pytest.raises(RedialDataError) as info:
            redial_build.build(opt)
        message = str(info.value)
        assert message.startswith(
            f'{url} did not send the expected zip archive: it is not a zip archive '
            f"(Content-Type text/html, {len(page)} bytes starting '<html>"
        )
        assert '--redial-path' in message and 'CONKD_REDIAL_PATH' in message
        assert os.listdir(tmp_path / 'dp' / 'redial_crs' / 'downloads') == []
    finally:
        server.shutdown()
        server.server_close()


def test_zip_without_the_redial_files_is_not_cached(tmp_path, tiny_redial, monkeypatch):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    (tmp_path / 'www').mkdir()
    archive = tmp_path / 'www' / 'redial_dataset.zip'
    with zipfile.ZipFile(archive, 'w') as zf:
        zf.write(tiny_redial / 'train_data.jsonl', 'train_data.jsonl')
    server, base = _serve(tmp_path / 'www')
    try:
        opt = task_opt(
            tmp_path / 'dp',
            redial_url=f'{base}/redial_dataset.zip',
            redial_sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        )
        with pytest.raises(
            RedialDataError,
            match='a zip archive without test_data.jsonl, movies_with_mentions.csv',
        ):
            redial_build.build(opt)
        assert os.listdir(tmp_path / 'dp' / 'redial_crs' / 'downloads') == []
    finally:
        server.shutdown()
        server.server_close()


def test_bad_file_cached_by_an_older_version_is_downloaded_again(
    tmp_path, served_archive, monkeypatch
):
    monkeypatch.setenv('NO_PROXY', '127.0.0.1')
    url, sha256 = served_archive
    cache = tmp_path / 'dp' / 'redial_crs' / 'downloads'
    cache.mkdir(parents=True)
    (cache / f'{sha256[:16]}-redial_dataset.zip').write_bytes(b'<html>404</html>')
    opt = task_opt(tmp_path / 'dp', redial_url=url, redial_sha256=sha256)
    assert is_built(redial_build.build(opt))
    assert (
        hashlib.sha256(
            (cache / f'{sha256[:16]}-redial_dataset.zip').read_bytes()
        ).hexdigest()
        == sha256
    )


def test_concurrent_build_that_finishes_first_is_kept(
    tmp_path, tiny_redial, monkeypatch
):
    # Simulates a second process completing the same build while this one is still writing.
    opt = task_opt(tmp_path / 'dp', redial_path=str(tiny_redial))
    real_build_into = redial_build._build_into
    calls, theirs = [], []

    def racing_build_into(out_dir, *args):
        calls.append(out_dir)
        real_build_into(out_dir, *args)
        if len(calls) == 1:
            # the "other process"
            theirs.append(os.stat(redial_build.build(opt)).st_ino)

    monkeypatch.setattr(redial_build, '_build_into', racing_build_into)
    built = redial_build.build(opt)
    assert len(calls) == 2 and is_built(built)
    # theirs stays in place: readers that already hold its path never see it vanish
    assert os.stat(built).st_ino == theirs[0]
    assert (
        len(redial_build.load_episodes(opt, 'test')) == 2
        and leftovers(tmp_path / 'dp') == []
    )


def test_shared_metadata_gives_most_items_a_kg_entity(
    tmp_path, shared_redial, shared_meta
):
    opt = task_opt(
        tmp_path / 'dp',
        redial_path=str(shared_redial),
        redial_meta_path=str(shared_meta),
    )
    catalog = redial_build.load_catalog(opt)
    assert len(catalog) == 6924
    assert sum(item.kg_entity is not None for item in catalog) == 6583
    assert redial_build.meta_path(opt) == str(shared_meta)


def test_bad_movie_list_row_names_file_and_line_and_marks_nothing(tmp_path):
    source = write_redial(
        tmp_path / 'r',
        movies='movieId,movieName,nbMentions\n111,Alien (1979),5\nabc,Heat,1\n',
    )
    opt = task_opt(tmp_path / 'dp', redial_path=str(source))
    with pytest.raises(
        ValueError, match=r"movies_with_mentions\.csv:3: movieId 'abc' is not a number"
    ):
        redial_build.build(opt)
    assert (
        not os.path.exists(redial_build.built_dir(opt))
        and leftovers(tmp_path / 'dp') == []
    )


def test_path_that_is_neither_directory_nor_zip_is_rejected(tmp_path):
    not_a_zip = tmp_path / 'redial_dataset.zip'
    not_a_zip.write_text('<html>404</html>')
    with pytest.raises(RedialDataError, match='neither a directory nor a zip archive'):
        redial_build.build(task_opt(tmp_path / 'dp', redial_path=str(not_a_zip)))
