"""The plugin manager: built-ins and third-party plugins come in through the entry-point
group ``testbed``; loose ``.py`` files come from plugins directories (``--plugins-dir`` or
``TESTBED_PLUGINS_DIR``). A plugin that fails to import or register is skipped with a
warning naming it (an error in strict mode), so one broken plugin never breaks the CLI.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pluggy

from testbed import hookspecs
from testbed.errors import UserError, did_you_mean
from testbed.hookspecs import KINDS
from testbed.types import Component, Record

ENTRY_POINT_GROUP = "testbed"
PLUGINS_DIR_ENV = "TESTBED_PLUGINS_DIR"
STRICT_ENV = "TESTBED_STRICT_PLUGINS"


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to import or register."""


@dataclass
class PluginInfo:
    name: str
    source: str  # "entry point of <dist> <version>" or the file path
    provides: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Registry:
    """Every record of every kind, by name, with the plugin that provided it."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo]
    records: dict[str, dict[str, tuple[Record, str]]]
    failures: list[tuple[str, str]]  # (plugin, error) of plugins that were skipped

    def get(self, kind: str, name: str) -> Record:
        try:
            return self.records[kind][name][0]
        except KeyError:
            listing = {"preset": "testbed presets", "dataset": "testbed datasets"}.get(kind, "testbed plugins")
            raise UserError(
                f"Unknown {kind} {name!r}. {did_you_mean(name, self.names(kind), kind + 's')} "
                f"List them all with `{listing}`."
            ) from None

    def names(self, kind: str) -> list[str]:
        return sorted(self.records[kind])

    @property
    def hook(self):
        """Event hooks, e.g. ``registry.hook.testbed_evaluation(run_dir=..., record=...)``."""
        return self.pm.hook


def _fail(plugin: str, error: str, strict: bool, failures: list) -> None:
    message = f"Plugin {plugin!r} was skipped: {error}"
    if strict:
        raise UserError(message + " (strict plugin mode; unset it to skip broken plugins with a warning)")
    failures.append((plugin, error))
    warnings.warn(message, PluginWarning, stacklevel=3)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _check_hook_names(module: object) -> None:
    """Catch misspelled hooks, which pluggy would otherwise ignore silently."""
    valid = [name for name in vars(hookspecs) if name.startswith("testbed_")]
    for attr in dir(module):
        fn = getattr(module, attr, None)
        if callable(fn) and hasattr(fn, "testbed_impl") and attr not in valid:
            raise ValueError(f"unknown hook {attr!r}. {did_you_mean(attr, valid, 'hooks')}")


def _register(pm, module, name, source, strict, failures, infos) -> None:
    try:
        _check_hook_names(module)
        pm.register(module, name=name)
    except Exception as exc:
        _fail(name, _describe(exc), strict, failures)
        return
    infos.append(PluginInfo(name=name, source=source))


def plugin_dirs_from_env() -> list[Path]:
    value = os.environ.get(PLUGINS_DIR_ENV, "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def load_plugins(plugins_dirs: Iterable[str | Path] = (), strict: bool | None = None) -> Registry:
    """Load entry-point plugins and plugin files, then collect every record."""
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "") not in ("", "0", "false")
    pm = pluggy.PluginManager("testbed")
    pm.add_hookspecs(hookspecs)
    failures: list[tuple[str, str]] = []
    infos: list[PluginInfo] = []

    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist else "unknown distribution"
        try:
            module = ep.load()
        except Exception as exc:
            _fail(ep.name, f"import of {ep.value} failed: {_describe(exc)}", strict, failures)
            continue
        _register(pm, module, ep.name, f"entry point of {dist}", strict, failures, infos)

    for directory in [*map(Path, plugins_dirs), *plugin_dirs_from_env()]:
        if not directory.is_dir():
            raise UserError(f"Plugins directory {str(directory)!r} does not exist. Check --plugins-dir or ${PLUGINS_DIR_ENV}.")
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module_name = f"testbed_plugin_files.{path.stem}"
            try:
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(module_name, None)
                _fail(path.stem, f"import of {path} failed: {_describe(exc)}", strict, failures)
                continue
            _register(pm, module, path.stem, str(path), strict, failures, infos)

    records = _collect(pm, infos, strict, failures)
    return Registry(pm=pm, plugins=infos, records=records, failures=failures)


def _collect(pm, infos: list[PluginInfo], strict: bool, failures: list) -> dict:
    """Call every collection hook plugin by plugin so that errors and duplicates name the plugin."""
    records: dict[str, dict[str, tuple[Record, str]]] = {kind: {} for kind in KINDS}
    by_name = {info.name: info for info in infos}
    for kind, (hook_name, record_type) in KINDS.items():
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            plugin = impl.plugin_name
            try:
                provided = list(impl.function() or ())
                for record in provided:
                    _validate(record, record_type, kind)
            except Exception as exc:
                _fail(plugin, f"{hook_name}() failed: {_describe(exc)}", strict, failures)
                continue
            for record in provided:
                if record.name in records[kind]:
                    other = records[kind][record.name][1]
                    raise UserError(
                        f"Two plugins provide the {kind} {record.name!r}: {other!r} and {plugin!r}. "
                        "Rename one of them or uninstall/remove one plugin."
                    )
                records[kind][record.name] = (record, plugin)
                by_name[plugin].provides.setdefault(kind, []).append(record.name)
    return records


def _validate(record: object, record_type: type, kind: str) -> None:
    if not isinstance(record, record_type):
        raise TypeError(f"returned {record!r}, expected testbed.{record_type.__name__} records")
    if not isinstance(record.name, str) or not record.name or "=" in record.name:
        raise TypeError(f"{kind} name {record.name!r} must be a non-empty string without '='")
    if isinstance(record, Component):
        if not dataclasses.is_dataclass(record.options):
            raise TypeError(f"{kind} {record.name!r}: options must be a dataclass type, got {record.options!r}")
        if not callable(record.factory):
            raise TypeError(f"{kind} {record.name!r}: factory must be callable as factory(options, context), got {record.factory!r}")
