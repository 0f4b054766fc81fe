"""docs/architecture.md's module table is true of the code, and no module imports one that imports
it back (issue #18). Static: the imports are read from the source (AST), nothing is imported, so
lazy imports inside functions count too."""

import ast
import re
import sys
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / 'parlai_conkd'
DOC = ROOT / 'docs' / 'architecture.md'
#: a row: | `parlai_conkd/<path>` [, `...`] | job | may import |
ROW_RE = re.compile(r'^\| (`parlai_conkd/[^|]*`) \|[^|]*\| ([^|]*) \|$')


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def modules() -> Dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob('*.py')}


def internal_imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The parlai_conkd modules ``name`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[: len(package.split('.')) - node.level + 1]
                module = '.'.join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            submodules = {f'{module}.{alias.name}' for alias in node.names} & known
            found.update(submodules or {module})
    return {m for m in found if m.startswith('parlai_conkd.')}


def third_party_imports(path: Path) -> Set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding='utf-8'))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module.split('.')[0])
    return {
        m for m in found if m != 'parlai_conkd' and m not in sys.stdlib_module_names
    }


def doc_rows() -> List[Dict]:
    """Rows in document order: keys (``items``, ``agents/conkd_student``), allowed keys, libraries."""
    rows = []
    for line in DOC.read_text(encoding='utf-8').splitlines():
        match = ROW_RE.match(line.replace('\\|', '/'))  # an escaped | inside a cell
        if match:
            paths = re.findall(r'`parlai_conkd/([^`]+)`', match.group(1))
            keys = [p[:-3] if p.endswith('.py') else p.rstrip('/') for p in paths]
            allowed = set(re.findall(r'`([^`]+)`', match.group(2)))
            libraries = set(
                re.findall(r'[A-Za-z_][\w.]*', re.sub(r'`[^`]+`', '', match.group(2)))
            )
            rows.append(
                {'keys': keys, 'line': line, 'allowed': allowed, 'libraries': libraries}
            )
    return rows


def row_of(name: str, path: Path, rows: List[Dict]):
    """The row whose path is this module's file or its closest enclosing directory."""
    relative = path.relative_to(PACKAGE).with_suffix('').as_posix()
    best = None
    for row in rows:
        for key in row['keys']:
            if relative == key or relative.startswith(key + '/'):
                if best is None or len(key) > len(best[1]):
                    best = (row, key)
    return best


def test_the_table_has_one_row_per_module_and_covers_the_package():
    rows = doc_rows()
    assert len(rows) > 20, 'the module table was not found in docs/architecture.md'
    keys = [key for row in rows for key in row['keys']]
    assert len(keys) == len(
        set(keys)
    ), f'listed twice: {sorted({k for k in keys if keys.count(k) > 1})}'
    for key in keys:
        assert (PACKAGE / f'{key}.py').is_file() or (
            PACKAGE / key
        ).is_dir(), f'{key}: no such module'
    known = modules()
    for name, path in known.items():
        if path.name == '__init__.py' and not internal_imports(name, path, set(known)):
            continue  # a namespace package's docstring
        assert (
            row_of(name, path, rows) is not None
        ), f'{path.relative_to(ROOT)} is in no row of {DOC.name}'


def test_every_import_is_one_the_table_allows_and_points_up_the_table():
    rows = doc_rows()
    order = {key: i for i, row in enumerate(rows) for key in row['keys']}
    known = modules()
    problems = []
    for name, path in sorted(known.items()):
        mine = row_of(name, path, rows)
        if mine is None:
            continue
        row, key = mine
        for imported in sorted(internal_imports(name, path, set(known))):
            if imported == 'parlai_conkd' or imported not in known:
                continue
            target = row_of(imported, known[imported], rows)
            if target is None or target[0] is row:
                continue
            target_key = target[1]
            if target_key not in row['allowed']:
                problems.append(
                    f'{name} imports {imported}: `{target_key}` is not in the row of `{key}`'
                )
            elif order[target_key] >= order[key]:
                problems.append(
                    f'{name} imports {imported}: `{target_key}` is not above `{key}`'
                )
        for library in sorted(third_party_imports(path) - row['libraries']):
            problems.append(f'{name} imports {library}, not in the row of `{key}`')
    assert not problems, '\n'.join(problems)


def test_no_module_imports_one_that_imports_it_back():
    known = modules()
    graph = {
        name: internal_imports(name, path, set(known)) & set(known) - {'parlai_conkd'}
        for name, path in known.items()
    }
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = 'open'
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 'open':
                cycles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, 'import cycles: ' + '; '.join(' -> '.join(c) for c in cycles)


def test_the_checks_find_a_cycle_and_a_forbidden_import(tmp_path, monkeypatch):
    """The scan is not vacuous: relative and ``from pkg import mod`` imports are followed."""
    package = tmp_path / 'parlai_conkd'
    (package / 'sub').mkdir(parents=True)
    (package / '__init__.py').write_text('')
    (package / 'sub' / '__init__.py').write_text('')
    (package / 'a.py').write_text('from parlai_conkd.sub import b\n')
    (package / 'sub' / 'b.py').write_text('def f():\n    from .. import a\n')
    monkeypatch.setattr(sys.modules[__name__], 'ROOT', tmp_path)
    monkeypatch.setattr(sys.modules[__name__], 'PACKAGE', package)
    known = modules()
    assert internal_imports('parlai_conkd.a', package / 'a.py', set(known)) == {
        'parlai_conkd.sub.b'
    }
    assert internal_imports(
        'parlai_conkd.sub.b', package / 'sub' / 'b.py', set(known)
    ) == {'parlai_conkd.a'}
    try:
        test_no_module_imports_one_that_imports_it_back()
    except AssertionError as exc:
        assert 'parlai_conkd.a -> parlai_conkd.sub.b -> parlai_conkd.a' in str(exc)
    else:
        raise AssertionError('the cycle a -> sub.b -> a was not found')
    doc = tmp_path / 'architecture.md'
    doc.write_text(
        '| module | job | may import |\n|---|---|---|\n'
        '| `parlai_conkd/a.py` | a | stdlib |\n'
        '| `parlai_conkd/sub/` | b | `a`, torch |\n'
    )
    monkeypatch.setattr(sys.modules[__name__], 'DOC', doc)
    try:
        test_every_import_is_one_the_table_allows_and_points_up_the_table()
    except AssertionError as exc:
        assert (
            'parlai_conkd.a imports parlai_conkd.sub.b: `sub` is not in the row of `a`'
            in str(exc)
        )
        assert 'sub.b imports' not in str(exc)  # b -> a is allowed (`a` is above `sub`)
    else:
        raise AssertionError('a -> sub.b was allowed by a row that does not list `sub`')
