"""Start-up hook: makes ParlAI find this plugin by short name and run on today's stack.

``parlai_conkd_startup.pth`` (installed into site-packages) imports this module in every
Python process, ParlAI's spawned workers included. It must stay cheap and must never raise:
it imports no ParlAI, no torch and none of our heavy modules. It only puts one finder on
``sys.meta_path``. That finder does two things, both only when ParlAI itself is imported:

1. Name resolution. ParlAI looks agents up as ``parlai.agents.<name>...``, tasks as
   ``parlai.tasks.<name>.agents`` and zoo entries as ``parlai.zoo.<name>...``. When such a name
   is not one of ParlAI's own but exists under ``parlai_conkd.agents`` / ``.tasks`` / ``.zoo``,
   the finder answers with *our* module object (an alias, not a second copy), so classes have
   one identity whichever name imported them first.
2. Compatibility. When a ParlAI module named in ``parlai_conkd.compat.PATCHES`` is executed,
   the finder applies that module's patches right after it loads.
"""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys

#: ParlAI namespace -> our package that extends it.
PLUGIN_NAMESPACES = {
    'parlai.agents': 'parlai_conkd.agents',
    'parlai.tasks': 'parlai_conkd.tasks',
    'parlai.zoo': 'parlai_conkd.zoo',
}


class _AliasLoader(importlib.abc.Loader):
    """Loads ``parlai.<ns>.<ours>...`` as the already-importable ``parlai_conkd.<ns>.<ours>...``."""

    def __init__(self, target_name):
        self.target_name = target_name
        self._target_spec = None

    def create_module(self, spec):
        module = importlib.import_module(self.target_name)
        self._target_spec = module.__spec__
        return module

    def exec_module(self, module):
        # importlib stamped the alias spec onto the shared module; its real name is the truth.
        module.__spec__ = self._target_spec


class _PatchingLoader(importlib.abc.Loader):
    """Runs the wrapped loader, then the compatibility patches for that module."""

    def __init__(self, loader, fullname):
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        from parlai_conkd import compat

        compat.apply_patches(self._fullname, module)

    def __getattr__(self, name):
        # get_source, get_filename, is_package, get_resource_reader ... (tracebacks, inspect)
        return getattr(self._loader, name)


class ParlaiPluginFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder for the two jobs in the module docstring."""

    marker = 'parlai_conkd'

    def find_spec(self, fullname, path=None, target=None):
        if not (fullname == 'parlai' or fullname.startswith('parlai.')):
            return None
        alias = self._alias_spec(fullname, path)
        if alias is not None:
            return alias
        return self._patching_spec(fullname, path, target)

    def _alias_spec(self, fullname, path):
        parts = fullname.split('.')
        if len(parts) < 3:
            return None
        ours = PLUGIN_NAMESPACES.get('.'.join(parts[:2]))
        if ours is None:
            return None
        if len(parts) == 3:
            # ParlAI's own names always win: never shadow a stock agent/task/zoo entry.
            for entry in path or ():
                if os.path.isdir(os.path.join(entry, parts[2])) or os.path.isfile(
                    os.path.join(entry, parts[2] + '.py')
                ):
                    return None
        else:
            parent = sys.modules.get(fullname.rpartition('.')[0])
            if parent is None or not getattr(parent, '__name__', '').startswith(
                ours + '.'
            ):
                return None
        target_name = ours + '.' + '.'.join(parts[2:])
        try:
            target_spec = importlib.util.find_spec(target_name)
        except (ImportError, ValueError):
            return None
        if target_spec is None:
            return None
        return importlib.util.spec_from_loader(
            fullname,
            _AliasLoader(target_name),
            is_package=target_spec.submodule_search_locations is not None,
        )

    def _patching_spec(self, fullname, path, target):
        try:
            from parlai_conkd import compat
        except ImportError:
            return None
        compat.prepare_import(fullname)
        if fullname not in compat.PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or getattr(finder, 'marker', None) == self.marker:
                continue
            find_spec = getattr(finder, 'find_spec', None)
            if find_spec is None:
                continue
            spec = find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _PatchingLoader(spec.loader, fullname)
                return spec
        return None


def install():
    """Put the finder first on sys.meta_path, once per interpreter (idempotent)."""
    if any(
        getattr(f, 'marker', None) == ParlaiPluginFinder.marker for f in sys.meta_path
    ):
        return
    sys.meta_path.insert(0, ParlaiPluginFinder())


try:
    install()
except Exception:  # pragma: no cover - a start-up hook must never break the interpreter
    pass
