"""Settings as declarations: the core and every plugin declare what they read (name,
environment variable, type, default, help), and the core validates all of them together
when the plugins are loaded, so a bad value stops start-up with one line naming its
variable, whichever plugin owns it.

A plugin declares its settings through the ``eventbus_declare_settings`` hook and reads them
as attributes of :class:`~eventbus.config.Config` (``config.log_sink_path``)::

    from eventbus import hookimpl
    from eventbus.settings import Setting, integer

    @hookimpl
    def eventbus_declare_settings():
        return [Setting("deploy_timeout", "DEPLOYS_TIMEOUT", 30, integer(1),
                        "seconds a deploy may take")]

Values come from the environment, then ``eventbus.toml`` (the name in lower case, without
the ``EVENTBUS_`` or ``WEBSOCKET_`` prefix), then the default. ``eventbus settings`` lists
every declared setting; ``docs/settings.md`` is its output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .events import EventBusError

#: ``parse(variable, raw value) -> value``; raises :class:`ConfigError` naming the variable.
Parse = Callable[[str, Any], Any]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(EventBusError):
    code = "config_error"


@dataclass(frozen=True)
class Setting:
    """One setting.

    :param name: the attribute it is read as (``config.<name>``).
    :param env: its environment variable.
    :param default: its value when nothing sets it.
    :param parse: turns the raw text (or a TOML value) into the value; raises
        :class:`ConfigError` with a message that starts with the variable's name.
    :param help: one line for ``eventbus settings`` and the docs.
    :param secret: never shown (its default is shown, a configured value is not).
    """

    name: str
    env: str
    default: Any
    parse: Parse
    help: str
    secret: bool = False

    @property
    def file_key(self) -> str:
        """The key in ``eventbus.toml``."""
        return self.env.removeprefix("EVENTBUS_").removeprefix("WEBSOCKET_").lower()


# -- parsers -------------------------------------------------------------------------------


def text(name: str, value: Any) -> str:
    return str(value)


def optional_text(name: str, value: Any) -> str | None:
    return str(value).strip() or None


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def integer(lo: int, hi: int | None = None) -> Parse:
    def parse(name: str, value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            number = None
        if number is None or number < lo or (hi is not None and number > hi):
            limit = f"{lo}-{hi}" if hi is not None else f">= {lo}"
            raise ConfigError(f"{name}: expected an integer {limit}, got {value!r}")
        return number

    return parse


def number(lo: float) -> Parse:
    def parse(name: str, value: Any) -> float:
        try:
            result = float(str(value).strip())
        except ValueError:
            result = None
        if result is None or result < lo or result != result:  # NaN
            raise ConfigError(f"{name}: expected a number >= {lo}, got {value!r}")
        return result

    return parse


def choice(*choices: str) -> Parse:
    def parse(name: str, value: Any) -> str:
        word = str(value).strip().lower()
        if word not in choices:
            raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
        return word

    return parse


def text_list(name: str, value: Any) -> list[str]:
    """Comma-separated text (or a TOML list)."""
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def describe(setting: Setting, value: Any = None, configured: bool = False) -> dict[str, Any]:
    """One row of ``eventbus settings``: the current value is shown unless it is secret."""
    shown = setting.default if not configured else ("(set)" if setting.secret else value)
    return {"name": setting.name, "env": setting.env, "default": _show(setting.default),
            "value": _show(shown), "configured": configured, "help": setting.help}


def _show(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) if value else ""
    return str(value)
