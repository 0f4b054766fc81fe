"""Find or download ReDial, preprocess it once, and cache the result under the datapath.

Where the raw data comes from (first that applies):
1. ``--redial-path`` (a directory in the official layout, or the official zip);
2. the environment variable ``CONKD_REDIAL_PATH`` (same);
3. the official archive, downloaded from ``--redial-url`` and checked against ``--redial-sha256``
   (defaults: the ReDial authors' URL and checksum; change both only to use a mirror).

The built directory is ``<datapath>/redial_crs/<VERSION>-<local|download>-<key>``: the key hashes
the source (path or URL + checksum) and the metadata directory, so switching sources never reuses
a stale build. A build happens in a temporary sibling directory that is marked done and then renamed into
place, so an interrupted or failed build (e.g. a checksum mismatch) is never taken as done.

Public API used by other agents (keep the names): ``add_redial_args``, ``build``, ``catalog_path``,
``load_catalog``, ``meta_path``, ``fold_path``, ``load_episodes``.
"""

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from typing import Dict, Optional

import parlai.core.build_data as build_data
from parlai.utils import logging

from parlai_conkd.downloads import ZIP, DownloadError, archive_problem, fetch_archive
from parlai_conkd.fileio import sha256_file, sha256_stream, umask
from parlai_conkd.items import ItemCatalog

from .preprocess import (
    VALID_PERCENT,
    VALID_SALT,
    PreprocessStats,
    RedialDataError,
    process_file,
    split_train_valid,
    stats_warnings,
)

#: Bump whenever preprocessing output changes: built data is cached under it.
VERSION = 'v1'
TASK_DIR = 'redial_crs'

OFFICIAL_URL = 'https://github.com/ReDialData/website/raw/data/redial_dataset.zip'
OFFICIAL_SHA256 = 'b48756681ec6f84e0af36979c5e9baa21ea8d9e7036b8764ea9b787bb0baf69b'
ARCHIVE_NAME = 'redial_dataset.zip'

ENV_PATH = 'CONKD_REDIAL_PATH'
ENV_META_PATH = 'CONKD_REDIAL_META_PATH'

TRAIN_FILE = 'train_data.jsonl'
TEST_FILE = 'test_data.jsonl'
MOVIES_FILE = 'movies_with_mentions.csv'
REQUIRED_FILES = (TRAIN_FILE, TEST_FILE, MOVIES_FILE)
META_FILES = ('id2info.json', 'entity2id.json', 'kg.json')

FOLDS = ('train', 'valid', 'test')
CATALOG_FILE = 'catalog.json'
STATS_FILE = 'stats.json'

HOW_TO_SUPPLY = (
    f'Supply ReDial in one of two ways: pass --redial-path (or set {ENV_PATH}) to a directory '
    f'holding {", ".join(REQUIRED_FILES)} or to the official {ARCHIVE_NAME}; or leave both unset '
    f'to download the official archive ({OFFICIAL_URL}).'
)


def add_redial_args(parser) -> None:
    """Task options shared by every redial_crs teacher (and by agents that read the data)."""
    group = parser.add_argument_group('ReDial (redial_crs) data')
    group.add_argument(
        '--redial-path',
        type=str,
        default=None,
        help=f'ReDial directory in the official layout ({", ".join(REQUIRED_FILES)}) or the '
        f'official {ARCHIVE_NAME}. Default: ${ENV_PATH}, else download the official archive.',
    )
    group.add_argument(
        '--redial-meta-path',
        type=str,
        default=None,
        help='Movie metadata / knowledge-graph directory (redial-meta layout: id2info.json, '
        f'entity2id.json, kg.json, ...). Default: ${ENV_META_PATH}, else none.',
    )
    group.add_argument(
        '--redial-url',
        type=str,
        default=OFFICIAL_URL,
        help='Where to download the official archive from (a mirror); used only when neither '
        f'--redial-path nor ${ENV_PATH} is given.',
    )
    group.add_argument(
        '--redial-sha256',
        type=str,
        default=OFFICIAL_SHA256,
        help='Expected sha256 of the downloaded archive; a mismatch stops the build.',
    )
    group.add_argument(
        '--redial-max-dialogues',
        type=int,
        default=0,
        help='Use only the first N dialogues of each fold (0: all); for quick tests and benchmarks.',
    )
    group.add_argument(
        '--redial-readable',
        type='bool',
        default=False,
        help='Show movie titles instead of item tokens (for display_data; not for training).',
    )


# ---------------------------------------------------------------------------- sources
def _opt_or_env(opt, key: str, env: str) -> Optional[str]:
    value = opt.get(key) or os.environ.get(env) or None
    return os.path.abspath(os.path.expanduser(value)) if value else None


def source_path(opt) -> Optional[str]:
    """The local ReDial directory or zip in use, or None when the official archive is downloaded."""
    path = _opt_or_env(opt, 'redial_path', ENV_PATH)
    if path is not None and not os.path.exists(path):
        raise RedialDataError(f'ReDial path does not exist: {path}. {HOW_TO_SUPPLY}')
    return path


def meta_path(opt) -> Optional[str]:
    """The movie metadata / KG directory in use (``--redial-meta-path`` or env), or None."""
    path = _opt_or_env(opt, 'redial_meta_path', ENV_META_PATH)
    if path is None:
        return None
    missing = [f for f in META_FILES if not os.path.isfile(os.path.join(path, f))]
    if missing:
        raise RedialDataError(
            f'movie metadata directory {path} lacks {missing} (expected the redial-meta layout); '
            f'fix --redial-meta-path or ${ENV_META_PATH}'
        )
    return path


def _download_spec(opt):
    url = opt.get('redial_url') or OFFICIAL_URL
    sha256 = (opt.get('redial_sha256') or OFFICIAL_SHA256).lower()
    return url, sha256


def _source_key(opt) -> str:
    local = source_path(opt)
    source = (
        f'local:{os.path.realpath(local)}'
        if local
        else 'url:%s#%s' % _download_spec(opt)
    )
    meta = meta_path(opt)
    key = f'{source}|meta:{os.path.realpath(meta) if meta else ""}'
    kind = 'local' if local else 'download'
    return f'{VERSION}-{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}'


def built_dir(opt) -> str:
    """Where the processed data for this source lives (whether or not it is built yet)."""
    return os.path.join(opt['datapath'], TASK_DIR, _source_key(opt))


def _signature(path: str) -> str:
    """Changes when the source files change, so an edited copy is rebuilt in place."""
    if os.path.isdir(path):
        stats = [
            os.stat(os.path.join(path, f))
            for f in REQUIRED_FILES
            if os.path.isfile(os.path.join(path, f))
        ]
    else:
        stats = [os.stat(path)]
    return ','.join(f'{s.st_size}:{s.st_mtime_ns}' for s in stats)


def _version_string(opt) -> str:
    local = source_path(opt)
    signature = _signature(local) if local else _download_spec(opt)[1]
    meta = meta_path(opt)
    if meta:
        signature += '|' + ','.join(
            str(os.stat(os.path.join(meta, f)).st_size) for f in META_FILES
        )
    return f'{VERSION}|{signature}'


class _RawSource:
    """The three official files, read from a directory or from a zip (members found by name)."""

    def __init__(self, path: str):
        self.path = path
        self._zip = None
        self._members: Dict[str, str] = {}
        if os.path.isdir(path):
            missing = [
                f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(path, f))
            ]
            if missing:
                raise RedialDataError(
                    f'ReDial file not found: {os.path.join(path, missing[0])}'
                    f'{" (also missing: " + ", ".join(missing[1:]) + ")" if missing[1:] else ""}. '
                    f'{HOW_TO_SUPPLY}'
                )
        elif zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            for name in self._zip.namelist():
                base = name.rsplit('/', 1)[-1]
                if base in REQUIRED_FILES and not name.startswith('__MACOSX'):
                    self._members.setdefault(base, name)
            missing = [f for f in REQUIRED_FILES if f not in self._members]
            if missing:
                raise RedialDataError(
                    f'ReDial file not found: {path} has no member {missing[0]} '
                    f'(expected {", ".join(REQUIRED_FILES)}). {HOW_TO_SUPPLY}'
                )
        else:
            raise RedialDataError(
                f'{path} is neither a directory nor a zip archive. {HOW_TO_SUPPLY}'
            )

    def name(self, fname: str) -> str:
        if self._zip is None:
            return os.path.join(self.path, fname)
        return f'{self.path}!{self._members[fname]}'

    def lines(self, fname: str):
        if self._zip is None:
            return open(os.path.join(self.path, fname), encoding='utf-8')
        return io.TextIOWrapper(self._zip.open(self._members[fname]), encoding='utf-8')

    def sha256(self, fname: str) -> str:
        opener = (
            self._zip.open(self._members[fname])
            if self._zip is not None
            else open(os.path.join(self.path, fname), 'rb')
        )
        with opener as f:
            return sha256_stream(f)

    def copy_movies(self, dest: str) -> None:
        if self._zip is None:
            shutil.copyfile(os.path.join(self.path, MOVIES_FILE), dest)
        else:
            with (
                self._zip.open(self._members[MOVIES_FILE]) as src,
                open(dest, 'wb') as out,
            ):
                shutil.copyfileobj(src, out)

    def close(self):
        if self._zip is not None:
            self._zip.close()


def _download_official(opt) -> str:
    """Download (once) and verify the archive; returns the cached zip path.

    Only a zip archive holding the three ReDial files and matching ``--redial-sha256`` is ever
    cached (``parlai_conkd.downloads``); an HTTP error, an HTML page or a cut download is
    refused whatever checksum was given, naming the status/URL and the offline route.
    """
    url, sha256 = _download_spec(opt)
    cache_dir = os.path.join(opt['datapath'], TASK_DIR, 'downloads')
    cached = os.path.join(cache_dir, f'{sha256[:16]}-{ARCHIVE_NAME}')
    if os.path.isfile(cached):
        problem = archive_problem(cached, ZIP) or _missing_members(cached)
        if problem is None:
            return cached
        # stored by an older version that did not check the archive: never reuse it
        logging.warning(
            f'{cached} is {problem}; removing it and downloading {url} again'
        )
        os.unlink(cached)
    offline = (
        f'Without access to it, pass --redial-path (or set {ENV_PATH}) to a local copy: a '
        f'directory holding {", ".join(REQUIRED_FILES)} or the official {ARCHIVE_NAME}; or '
        '--redial-url with its --redial-sha256 for a mirror.'
    )
    logging.info(f'downloading {url}')
    try:
        fetch_archive(url, cached, sha256, ZIP, offline, check=_missing_members)
    except DownloadError as exc:
        raise RedialDataError(str(exc)) from None
    return cached


def _missing_members(path: str) -> Optional[str]:
    with zipfile.ZipFile(path) as archive:
        names = {
            name.rsplit('/', 1)[-1]
            for name in archive.namelist()
            if not name.startswith('__MACOSX')
        }
    missing = [f for f in REQUIRED_FILES if f not in names]
    return f'a zip archive without {", ".join(missing)}' if missing else None


# ---------------------------------------------------------------------------- building
def build(opt) -> str:
    """Build (if needed) and return the directory with the processed folds and the catalog."""
    dpath = built_dir(opt)
    version = _version_string(opt)
    if build_data.built(dpath, version_string=version):
        return dpath
    started = time.time()
    local = source_path(opt)
    raw_path = local if local else _download_official(opt)
    logging.info(f'building redial_crs from {raw_path} into {dpath}')
    parent = os.path.dirname(dpath)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.building-{os.path.basename(dpath)}-', dir=parent)
    try:
        _build_into(tmp, raw_path, meta_path(opt), opt)
        _make_readable(tmp)
        build_data.mark_done(tmp, version_string=version)
        _install(tmp, dpath, version)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logging.info(f'built redial_crs in {time.time() - started:.1f} s')
    return dpath


def _install(tmp: str, dpath: str, version: str) -> None:
    """Move a finished build into place; the old build (if any) is removed only afterwards."""
    if build_data.built(dpath, version_string=version):
        return  # another process finished the same build while we worked; keep theirs
    stale = None
    if os.path.exists(dpath):
        stale = tempfile.mkdtemp(prefix='.stale-', dir=os.path.dirname(dpath))
        os.rename(dpath, os.path.join(stale, 'old'))
    try:
        os.rename(tmp, dpath)
    except OSError:
        # Another process installed the same build first; theirs is as good as ours.
        if not build_data.built(dpath, version_string=version):
            raise
    finally:
        if stale:
            shutil.rmtree(stale, ignore_errors=True)


def _build_into(out_dir: str, raw_path: str, meta_dir: Optional[str], opt) -> None:
    raw = _RawSource(raw_path)
    try:
        movies = os.path.join(out_dir, MOVIES_FILE)
        raw.copy_movies(movies)
        # errors name the user's file, not the copy in the temporary build directory
        catalog = ItemCatalog.from_redial(
            movies, meta_dir, name=raw.name(MOVIES_FILE), fix=_data_fix(raw)
        )
        # Recorded so a result can be traced to the exact raw files it came from.
        source_sha256 = {fname: raw.sha256(fname) for fname in REQUIRED_FILES}
        if os.path.isfile(raw_path):
            source_sha256[os.path.basename(raw_path)] = sha256_file(raw_path)
        stats = {}
        folds = {}
        for fname, fold in ((TRAIN_FILE, 'train'), (TEST_FILE, 'test')):
            fold_stats = PreprocessStats()
            try:
                with raw.lines(fname) as lines:
                    episodes, _ = process_file(
                        lines, raw.name(fname), catalog, fold_stats
                    )
            except UnicodeDecodeError as exc:
                raise RedialDataError(
                    f'{raw.name(fname)}: not UTF-8 text ({exc.reason}); {_data_fix(raw)}'
                ) from None
            except RedialDataError as exc:
                raise RedialDataError(f'{exc}; {_data_fix(raw)}') from None
            if fold == 'train' and not episodes:
                # an official layout may have an empty test fold, never an empty train file
                raise RedialDataError(
                    f'{raw.name(fname)}: holds no dialogue (the train and valid folds would be '
                    f'empty); {_data_fix(raw)}'
                )
            for warning in stats_warnings(fold_stats, raw.name(fname)):
                logging.warning(warning)
            stats[fname] = fold_stats.as_dict()
            if fold == 'train':
                folds['train'], folds['valid'] = split_train_valid(episodes)
            else:
                folds['test'] = episodes
    finally:
        raw.close()
    for fold, episodes in folds.items():
        _write_json(os.path.join(out_dir, f'{fold}.json'), episodes)
    catalog.save(os.path.join(out_dir, CATALOG_FILE))
    _write_json(
        os.path.join(out_dir, STATS_FILE),
        {
            'version': VERSION,
            'source': raw_path,
            'source_sha256': source_sha256,
            'meta_path': meta_dir,
            'valid_split': {'salt': VALID_SALT, 'percent': VALID_PERCENT},
            'episodes': {fold: len(eps) for fold, eps in folds.items()},
            'items': len(catalog),
            'items_with_kg_entity': sum(item.kg_entity is not None for item in catalog),
            'files': stats,
        },
    )


def _data_fix(raw: _RawSource) -> str:
    """What to do about a damaged ReDial file: replace it (or the archive holding it)."""
    what = 'the archive' if raw._zip is not None else 'the file'
    return (
        f'{what} is damaged or cut short: replace it with an intact copy of ReDial (the '
        f'official {ARCHIVE_NAME}: {OFFICIAL_URL})'
    )


def _make_readable(directory: str) -> None:
    """mkdtemp/mkstemp create owner-only entries; a shared datapath needs the usual umask modes."""
    mask = umask()
    os.chmod(directory, 0o777 & ~mask)
    for name in os.listdir(directory):
        os.chmod(os.path.join(directory, name), 0o666 & ~mask)


def _write_json(path: str, payload) -> None:
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(payload, f)


# ---------------------------------------------------------------------------- readers
def fold_path(opt, fold: str) -> str:
    if fold not in FOLDS:
        raise ValueError(f'unknown fold {fold!r}; expected one of {FOLDS}')
    return os.path.join(build(opt), f'{fold}.json')


def catalog_path(opt) -> str:
    return os.path.join(build(opt), CATALOG_FILE)


def load_catalog(opt) -> ItemCatalog:
    path = catalog_path(opt)
    return ItemCatalog.load(path, fix=_rebuild_fix(path))


def load_episodes(opt, fold: str):
    """Processed episodes of one fold (the first ``--redial-max-dialogues`` when that is set)."""
    return read_episodes(fold_path(opt, fold), opt.get('redial_max_dialogues') or 0)


def read_episodes(path: str, limit: int = 0):
    try:
        with open(path, encoding='utf-8') as f:
            episodes = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RedialDataError(
            f'{path}: the processed fold is damaged ({exc}); {_rebuild_fix(path)}'
        ) from None
    if not isinstance(episodes, list):
        raise RedialDataError(
            f'{path}: the processed fold holds a {type(episodes).__name__}, not a list of '
            f'episodes; {_rebuild_fix(path)}'
        )
    return episodes[:limit] if limit > 0 else episodes


def _rebuild_fix(path: str) -> str:
    """What to do about a damaged file of a built directory: delete the build, it is remade."""
    return (
        f'delete {os.path.dirname(os.path.abspath(path))}: the next run builds it again from '
        'the ReDial files'
    )
