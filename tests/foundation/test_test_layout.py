"""The tests' helpers live in one module, tests/support.py (ParlAI's ``parlai/utils/testing.py``
pattern; issue #23): no module under tests/ imports from a test module (``test_*.py``) or from a
``conftest.py``, and a ``conftest.py`` defines fixtures (its helpers go to tests/support.py).
Static: the imports are read from the source (AST), so lazy imports inside functions count too.
"""

import ast
import fnmatch
import re
from pathlib import Path
from typing import Iterator, List, Tuple

TESTS = Path(__file__).resolve().parents[1]


def imported_modules(path: Path, tests: Path) -> Iterator[Tuple[int, str]]:
    """(line, dotted name) of what ``path`` imports, relative imports resolved against its
    package; ``from X import a`` gives ``X`` and ``X.a`` (``a`` may be a module)."""
    package = list(path.relative_to(tests.parent).with_suffix('').parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = '.'.join(base + (node.module.split('.') if node.module else []))
            yield node.lineno, module
            for alias in node.names:
                yield node.lineno, f'{module}.{alias.name}'


def imports_of_test_modules(tests: Path) -> List[str]:
    """Every import, under ``tests``, of a test module or a conftest: ``file:line: module``."""
    found = []
    for path in sorted(tests.rglob('*.py')):
        for line, module in imported_modules(path, tests):
            parts = module.split('.')
            if parts[0] == tests.name and (
                parts[-1].startswith('test_') or parts[-1] == 'conftest'
            ):
                found.append(f'{path.relative_to(tests.parent)}:{line}: {module}')
    return sorted(set(found))


def _is_fixture(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Attribute) and target.attr == 'fixture'


def conftest_helpers(tests: Path) -> List[str]:
    """Public functions and classes of the conftest.py files that are neither fixtures nor
    pytest hooks (``pytest_*``): they belong in tests/support.py."""
    found = []
    for path in sorted(tests.rglob('conftest.py')):
        for node in ast.parse(path.read_text(encoding='utf-8')).body:
            if (
                isinstance(node, (ast.FunctionDef, ast.ClassDef))
                and not node.name.startswith(('_', 'pytest_'))
                and not any(_is_fixture(d) for d in node.decorator_list)
            ):
                found.append(
                    f'{path.relative_to(tests.parent)}:{node.lineno}: {node.name}'
                )
    return found


def test_no_test_module_imports_another_test_module_or_a_conftest():
    found = imports_of_test_modules(TESTS)
    assert not found, (
        'import helpers from tests.support, not from a test module or a conftest.py '
        '(move a helper two test files share to tests/support.py):\n' + '\n'.join(found)
    )


def test_conftest_files_define_fixtures_only():
    found = conftest_helpers(TESTS)
    assert not found, (
        'a helper in a conftest.py: move it to tests/support.py (or make it a fixture):\n'
        + '\n'.join(found)
    )


def test_the_check_finds_every_form_of_the_import(tmp_path):
    tests = tmp_path / 'tests'
    (tests / 'a').mkdir(parents=True)
    (tests / 'a' / 'test_y.py').write_text('def f():\n    pass\n')
    (tests / 'a' / 'test_x.py').write_text(
        'from .test_y import f\n'
        'from . import conftest\n'
        'import tests.a.test_y\n'
        'from tests.a import test_y\n'
        'from tests.support import helper\n'
        'from parlai.core import test_utils\n'
        'def g():\n'
        '    from ..conftest import h\n'
    )
    (tests / 'conftest.py').write_text(
        'import pytest\n\n'
        '@pytest.fixture\ndef fixture_a():\n    pass\n\n'
        '@pytest.fixture(scope="session")\ndef fixture_b():\n    pass\n\n'
        'def _private():\n    pass\n\n'
        'def pytest_configure(config):\n    pass\n\n'
        'def helper():\n    pass\n'
    )
    assert imports_of_test_modules(tests) == [
        'tests/a/test_x.py:1: tests.a.test_y',
        'tests/a/test_x.py:2: tests.a.conftest',
        'tests/a/test_x.py:3: tests.a.test_y',
        'tests/a/test_x.py:4: tests.a.test_y',
        'tests/a/test_x.py:8: tests.conftest',
    ]
    assert conftest_helpers(tests) == ['tests/conftest.py:17: helper']


def layout_table(contributing: Path) -> dict:
    """CONTRIBUTING.md's "Where a test goes" table: ``{tests folder: [module patterns]}``."""
    text = contributing.read_text(encoding='utf-8')
    section = text.split('### Where a test goes', 1)[1].split('\n## ', 1)[0]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 2 and cells[0].startswith('`'):
            table[cells[0].strip('`')] = re.findall(r'`([^`]+)`', cells[1])
    return table


def covered(module: str, patterns: List[str]) -> bool:
    """``module`` (``agents/conkd_student/interactive``) matches a pattern (``agents/x/*``)."""
    return any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns)


def test_every_module_has_a_test_folder_in_contributing():
    table = layout_table(TESTS.parent / 'CONTRIBUTING.md')
    assert {'dialogue', 'student', 'rec', 'foundation'} <= set(table), table
    missing_folders = [name for name in table if not (TESTS / name).is_dir()]
    assert (
        not missing_folders
    ), f'CONTRIBUTING.md names no such tests/ folder: {missing_folders}'
    package = TESTS.parent / 'parlai_conkd'
    modules = sorted(
        str(path.relative_to(package).with_suffix(''))
        for path in package.rglob('*.py')
        if path.name != '__init__.py'
    )
    patterns = [pattern for patterns in table.values() for pattern in patterns]
    homeless = [m for m in modules if not covered(m, patterns)]
    assert not homeless, (
        'modules with no tests/ folder in CONTRIBUTING.md ("Where a test goes"): add each to '
        'the row of the area whose tests cover it:\n' + '\n'.join(homeless)
    )
    twice = [m for m in modules if sum(covered(m, p) for p in table.values()) > 1]
    assert not twice, f'modules filed under two tests/ folders: {twice}'


def test_layout_table_reader_on_a_hand_written_table(tmp_path):
    page = tmp_path / 'CONTRIBUTING.md'
    page.write_text(
        '# x\n### Where a test goes\n\n| tests/ folder | code |\n| --- | --- |\n'
        '| `rec` | `rgcn`, `agents/conkd_rec_teacher/*` |\n\n## Next\n| `zoo` | `zoo/*` |\n',
        encoding='utf-8',
    )
    table = layout_table(page)
    assert table == {'rec': ['rgcn', 'agents/conkd_rec_teacher/*']}
    assert covered('agents/conkd_rec_teacher/conkd_rec_teacher', table['rec'])
    assert not covered('zoo/conkd/build', table['rec'])
