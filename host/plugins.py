"""Plugin discovery: build a fresh pluggy PluginManager for one app.

Order (documented, tested):

1. names in ``plugins.disable`` are blocked;
2. installed distributions' entry points of group ``plughost`` — skipped when
   ``plugins.entry_points`` is false or ``PLUGHOST_DISABLE_ENTRYPOINTS`` is set;
3. plugin folders from ``plugins.paths`` (default: the ``plugins/`` folder next to the ``host``
   package, i.e. the repository's, wherever the config file is): each
   sub-folder holding a package of its own name (``plugins/x/x/__init__.py``, the layout of a
   pip-installable plugin) or being a package itself (``plugins/x/__init__.py``);
4. ``check_pending()``, so an implementation with a misspelt hook name fails loudly.

There is no global manager: every call returns a new one.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pluggy

from host.contract import hookspecs
from host.contract.config import HostConfig

log = logging.getLogger("plughost.plugins")

PROJECT = "plughost"
ENTRYPOINT_GROUP = "plughost"
DISABLE_ENTRYPOINTS_ENV = "PLUGHOST_DISABLE_ENTRYPOINTS"
#: The repository's plugin folder, next to the ``host`` package.
BUNDLED_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"


class PluginError(Exception):
    """A plugin could not be loaded or breaks the contract; the message names the plugin."""


def make_plugin_manager(config: HostConfig, extra: Sequence[object] = ()) -> pluggy.PluginManager:
    """Discover and register every enabled plugin for ``config``, then the ``extra`` plugin objects."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in config.plugins.disable:
        pm.set_blocked(name)
    if os.environ.get("PLUGHOST_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda msg: log.debug("%s", msg.rstrip()))
        pm.enable_tracing()
    if config.plugins.entry_points and not os.environ.get(DISABLE_ENTRYPOINTS_ENV):
        _load_entry_points(pm)
    for folder in plugin_folders(config):
        _load_folder(pm, folder)
    for plugin in extra:
        _register(pm, plugin, getattr(plugin, "name", None) or f"{type(plugin).__name__}-{id(plugin):x}")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from None
    return pm


def plugin_folders(config: HostConfig) -> list[Path]:
    """The folders to scan: ``plugins.paths`` resolved against the config file's folder, or by default
    the bundled ``plugins/`` folder (none when the host is installed without it)."""
    if config.plugins.paths is not None:
        return [config.resolve_path(folder) for folder in config.plugins.paths]
    return [BUNDLED_PLUGINS] if BUNDLED_PLUGINS.is_dir() else []


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRYPOINT_GROUP):
        if pm.is_blocked(ep.name) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise PluginError(f"plugin {ep.name!r} (entry point {ep.value!r}) failed to import: {exc!r}") from exc
        _register(pm, plugin, ep.name)


def _load_folder(pm: pluggy.PluginManager, folder: Path) -> None:
    if not folder.is_dir():
        raise PluginError(f"plugin folder not found: {folder}")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        name = sub.name
        if (sub / name / "__init__.py").is_file():
            root = sub  # pip-installable layout: plugins/x/pyproject.toml + plugins/x/x/
        elif (sub / "__init__.py").is_file():
            root = folder
        else:
            continue
        if pm.is_blocked(name) or pm.get_plugin(name) is not None:
            continue  # disabled, or already installed through its entry point
        module = _import_from(root, name)
        _register(pm, module, name)


def _import_from(root: Path, name: str) -> ModuleType:
    path = str(root.resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        raise PluginError(f"plugin {name!r} (folder {root / name}) failed to import: {exc!r}") from exc
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    if not origin.is_relative_to(root.resolve()):
        log.warning("plugin %r: imported %s, not the copy in %s", name, origin, root)
    return module


def _register(pm: pluggy.PluginManager, plugin: object, name: str) -> None:
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {name!r} breaks the hook contract: {exc}") from None
    log.info("plugin %s registered", name)
