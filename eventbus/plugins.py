"""The plugin manager: one per bus, fed from the ``eventbus`` entry-point group.

``EVENTBUS_LOAD_PLUGINS`` (comma list; empty loads none) narrows what is loaded,
``EVENTBUS_DISABLE_PLUGINS`` removes names. A plugin that fails to import or register is
skipped with a warning naming it, and listed under ``failed`` by ``eventbus plugins``.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import pluggy

from . import hookspecs
from .config import ConfigError
from .settings import Setting

if TYPE_CHECKING:
    from .config import Config

log = logging.getLogger("eventbus.plugins")
ENTRY_POINT_GROUP = "eventbus"


@dataclass
class PluginFailure:
    name: str
    source: str
    error: str


class PluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` that remembers where each plugin came from."""

    def __init__(self) -> None:
        pluggy.PluginManager.__init__(self, hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.sources: dict[str, str] = {}
        self.failures: list[PluginFailure] = []

    def register_plugin(self, plugin: Any, name: str | None = None, source: str = "code") -> str | None:
        """Register ``plugin``; on failure log a warning and record it instead of raising."""
        label = name or getattr(plugin, "__name__", None) or repr(plugin)
        try:
            registered = self.register(plugin, name=name)
        except ConfigError:
            raise  # a plugin's own settings are wrong: stop start-up with its message
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not stop the bus
            self._failed(label, source, exc)
            return None
        if registered is not None:
            self.sources[registered] = source
        return registered

    def _failed(self, name: str, source: str, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {exc}"
        self.failures.append(PluginFailure(name, source, error))
        log.warning("plugin %s (%s) skipped: %s", name, source, error)

    def load_entrypoints(self, load: list[str] | None, disable: Iterable[str]) -> None:
        disabled = set(disable)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in disabled or (load is not None and ep.name not in load):
                continue
            if self.get_plugin(ep.name) is not None:
                continue
            dist = getattr(ep, "dist", None)
            source = f"{dist.name} {dist.version}" if dist is not None else "entry point"
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001
                self._failed(ep.name, source, exc)
                continue
            self.register_plugin(plugin, name=ep.name, source=source)
        if load:
            missing = set(load) - set(self.sources) - {f.name for f in self.failures}
            for name in sorted(missing):
                log.warning("EVENTBUS_LOAD_PLUGINS names %s, but no such plugin is installed", name)

    def describe(self) -> list[dict[str, Any]]:
        """Each plugin: name, where it came from, and the hooks it implements."""
        rows = []
        for name, plugin in self.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(
                impl_name
                for impl_name in dir(plugin)
                if impl_name.startswith("eventbus_") and self.parse_hookimpl_opts(plugin, impl_name)
            )
            module = plugin.__name__ if inspect.ismodule(plugin) else type(plugin).__module__
            rows.append({
                "name": name,
                "source": self.sources.get(name, "code"),
                "module": module,
                "version": getattr(plugin, "__version__", None),
                "hooks": hooks,
            })
        return sorted(rows, key=lambda row: row["name"])


def create_plugin_manager(config: Config, plugins: Iterable[Any] = (), load_entrypoints: bool = True) -> PluginManager:
    """A fresh manager: the given plugin objects first, then the installed entry points."""
    pm = PluginManager()
    for plugin in plugins:
        pm.register_plugin(plugin)
    if load_entrypoints:
        pm.load_entrypoints(config.load_plugins, config.disable_plugins)
    # Every plugin's settings, read and validated now: a bad value stops start-up here.
    for impl in reversed(pm.hook.eventbus_declare_settings.get_hookimpls()):
        answer = cast("Iterable[Setting] | None", impl.function())
        config.declare(answer or (), owner=impl.plugin_name)
    pm.hook.eventbus_configure.call_historic(kwargs={"config": config})
    return pm
