"""Methods and tasks from outside the package: the config's ``plugins:`` names Python modules
(a dotted name, or a ``.py`` file) whose ``register()`` adds cards and classes to the registries.

The Snakefile loads them when it validates the config and exports them in ``CGDMAE_PLUGINS``.
Every process below it (a rule's script, a Slurm job, a torchrun rank) inherits the variable
and loads the same modules on its first registry lookup, so no job needs to be told.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ENV = "CGDMAE_PLUGINS"
_loaded: set[str] = set()  # resolved entries, added before the import


class PluginError(ValueError):
    """A plugin entry that cannot be imported or has no ``register()``."""

    def __init__(self, index: int, entry: str, reason: str):
        super().__init__(f"plugin {entry!r}: {reason}")
        self.index, self.entry, self.reason = index, entry, reason


def _resolve(entry: str) -> str:
    """A file entry as an absolute path (jobs may start elsewhere); a module name as given."""
    return str(Path(entry).resolve()) if entry.endswith(".py") else entry


def _import(entry: str) -> ModuleType:
    if not entry.endswith(".py"):
        return importlib.import_module(entry)
    path = Path(entry)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    # as `python file.py` would: its directory on the path, so its own sibling imports work
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"cgdmae_plugin_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_plugins(entries: Sequence[str], export: bool = True) -> None:
    """Import each entry once per process and call its ``register()``; with ``export``, set
    ``CGDMAE_PLUGINS`` so that child processes load them too."""
    resolved = [_resolve(entry) for entry in entries]
    for index, (entry, key) in enumerate(zip(entries, resolved, strict=True)):
        if key in _loaded:
            continue
        # marked first: a registry lookup while the plugin imports or registers (a module it
        # imports may look one up) must not load it a second time
        _loaded.add(key)
        try:
            register = getattr(_import(key), "register", None)
        except Exception as exc:  # any import failure is the plugin's, named as such
            _loaded.discard(key)
            raise PluginError(index, entry, f"cannot import it: {exc}") from exc
        if not callable(register):
            _loaded.discard(key)
            raise PluginError(index, entry, "it has no register() function")
        register()
    if export:
        if resolved:
            os.environ[ENV] = os.pathsep.join(resolved)
        else:
            os.environ.pop(ENV, None)


def load_exported() -> None:
    """Load the plugins a parent process exported (a no-op once they are loaded)."""
    value = os.environ.get(ENV)
    if value:
        load_plugins(value.split(os.pathsep), export=False)
