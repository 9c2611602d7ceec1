"""Moved: the Python client is the module :mod:`eventbus_client` (``pip install
'eventbus[client]'``). ``from eventbus.client import EventBusClient`` keeps working, with a
:class:`DeprecationWarning`; the client library is imported only when a name is asked for."""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    warnings.warn("eventbus.client moved to eventbus_client: import EventBusClient from there",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module("eventbus_client"), name)
