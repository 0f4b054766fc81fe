"""Fixtures for the human-evaluation tests: small Conversations logs with item tokens, a tiny item
catalog, a study, and a headless Debian chromium driven by Selenium (installed with apt-get
when missing and possible, else the browser tests skip with the reason)."""

import os
import shutil
import subprocess

import pytest

from parlai_conkd.items import ItemCatalog
from tests.support import conversations_log

MOVIES_CSV = 'movieId,movieName,nbMentions\n111,The Matrix (1999),10\n222,Frozen (2013),5\n333,Heat (1995),2\n'


@pytest.fixture
def catalog(tmp_path):
    path = tmp_path / 'movies_with_mentions.csv'
    path.write_text(MOVIES_CSV)
    return ItemCatalog.from_redial(str(path))


@pytest.fixture
def logs(tmp_path):
    return {
        'model_a': str(
            conversations_log(
                tmp_path / 'model_a.jsonl',
                'ConkdStudent',
                lambda c, t: f'[REC] you would like __item_111__ ({c}.{t})',
            )
        ),
        'model_b': str(
            conversations_log(
                tmp_path / 'model_b.jsonl',
                'TransformerGenerator',
                lambda c, t: f'[GEN] i do not know ({c}.{t})',
            )
        ),
    }


@pytest.fixture
def pairs(logs, catalog):
    from parlai_conkd.human_eval.pairings import build_pairings, onboarding_from_gold

    return onboarding_from_gold(logs['model_a'], 1, catalog) + build_pairings(
        logs, catalog
    )


@pytest.fixture
def pairings_file(pairs, tmp_path):
    from parlai_conkd.human_eval.pairings import write_pairings

    path = tmp_path / 'pairings.jsonl'
    write_pairings(pairs, str(path))
    return path


def _find_browser():
    chromium = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver') or (
        '/usr/bin/chromedriver' if os.path.exists('/usr/bin/chromedriver') else None
    )
    return chromium, driver


def _install_chromium():
    """apt-get install Debian's chromium + chromium-driver; returns why it could not, or None."""
    if not shutil.which('apt-get'):
        return 'apt-get is not available'
    if os.geteuid() != 0:
        return 'not root, cannot apt-get install chromium chromium-driver'
    env = dict(os.environ, DEBIAN_FRONTEND='noninteractive')
    cmd = [
        'apt-get',
        'install',
        '-y',
        '--no-install-recommends',
        'chromium',
        'chromium-driver',
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        subprocess.run(['apt-get', 'update'], env=env, capture_output=True, timeout=600)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return f'apt-get install chromium chromium-driver failed: {proc.stderr.strip()[-300:]}'
    return None


@pytest.fixture(scope='session')
def browser():
    """A headless chromium under Selenium; network limited to what the page asks for (127.0.0.1)."""
    webdriver = pytest.importorskip(
        'selenium.webdriver',
        reason='selenium is not installed (pip install -r requirements/human-eval.txt)',
    )
    chromium, driver_path = _find_browser()
    if not (chromium and driver_path):
        reason = _install_chromium()
        chromium, driver_path = _find_browser()
        if not (chromium and driver_path):
            pytest.skip(
                f'no chromium/chromedriver and could not install them: {reason}'
            )
    from selenium.webdriver.chrome.service import Service

    # the driver connection and the page must never go through a proxy
    os.environ['NO_PROXY'] = ','.join(
        filter(None, [os.environ.get('NO_PROXY'), '127.0.0.1', 'localhost'])
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        '--headless=new',
        '--no-sandbox',
        '--disable-dev-shm-usage',
        '--disable-gpu',
        '--no-proxy-server',
        '--window-size=1280,1000',
        '--disable-extensions',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-sync',
        '--disable-component-update',
        '--disable-default-apps',
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(
        service=Service(executable_path=driver_path), options=options
    )
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
